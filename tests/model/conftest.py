"""Small labelled scan stores built from phantoms (truth masks as seg_reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from screening.store.scan import StoreConfig, write_scan_store
from screening.store.volume import ScanVolume
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.phantom import Phantom

EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def phantom_volume(ph: Phantom) -> ScanVolume:
    return ScanVolume(
        ph.hu, ph.spacing_mm, ph.origin_mm, EYE, {"format": "synthetic", "synthetic": True}
    )


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with three small phantoms (one steatotic) and their truth labels."""
    root = tmp_path_factory.mktemp("labelled-store")
    for i, liver_hu in enumerate((58.0, 20.0, 62.0)):
        ph = make_phantom(PhantomSpec(liver_hu=liver_hu), ScanGeometry.preset("small"), seed=50 + i)
        write_scan_store(root, f"scan{i}", phantom_volume(ph), {}, StoreConfig(), ph.labels)
    return root
