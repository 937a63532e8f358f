"""Synthetic CT phantoms and cohorts with known truth (tests, demo, benchmarks)."""

from screening.synthetic.phantom import FOV_KINDS, Phantom, PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.tissues import Tissue

__all__ = ["FOV_KINDS", "Phantom", "PhantomSpec", "ScanGeometry", "Tissue", "make_phantom"]
