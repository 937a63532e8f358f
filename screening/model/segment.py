"""Thin wrappers: segment a scan store (writes ``seg``), or every scan store of a folder."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from screening.constants import LABEL_NAMES
from screening.errors import ScreeningError
from screening.location import Location
from screening.model.backends import Backend, UNetBackend
from screening.model.checkpoint import LoadedModel
from screening.model.inference import InferenceConfig
from screening.preprocess import read_prep
from screening.store.scan import is_complete, open_scan_store, write_derived_array

__all__ = ["SegmentSummary", "segment_store", "segment_stores"]

log = logging.getLogger(__name__)


def _backend(model: Any, cfg: InferenceConfig | None) -> Backend:
    if isinstance(model, LoadedModel):
        return UNetBackend(model, cfg or InferenceConfig())
    return model


def segment_store(
    store_path: str | os.PathLike[str],
    model: Backend | LoadedModel,
    cfg: InferenceConfig | None = None,
    *,
    device: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Segment the store's ``ct`` with a backend (or a U-Net and ``cfg``) and write ``seg``
    (atomically); return a small record.

    A ``prep`` written for this model's grid (by the run's preprocess task) is used instead of
    preprocessing again. A ``seg`` already written by the same producer is kept. The ``seg``
    attributes name the producer, the organs the model labels (a model without a spleen class
    leaves spleen unmeasured, with a reason) and the domain it was trained on.
    """
    from screening.model.inference import resolve_device

    backend = _backend(model, cfg)
    store = open_scan_store(store_path)
    producer = backend.producer()
    existing = store.derived_attrs("seg")
    if existing and existing.get("producer") == producer:
        return {
            "scan": store.path.name,
            "reused": True,
            "seconds": existing.get("seconds", {}),
            "device": existing.get("device"),
        }
    t0 = time.perf_counter()
    spec = backend.preprocess_cfg
    prep = read_prep(store, spec)
    # A model whose prep carries all it needs of the CT (liver3mm) does not read the CT here:
    # on a GPU worker that read (and its hash check) was the largest CPU cost left.
    ct = None if prep is not None and spec is not None and spec.replaces_ct else store.read("ct")
    read_s = time.perf_counter() - t0
    result = backend.segment(
        ct, store.spacing_mm, device=resolve_device(device), threads=threads, prep=prep
    )
    seconds = {"read_s": read_s, **result.seconds}
    attrs = {
        "model_id": backend.model_id,
        "backend": backend.kind,
        "producer": producer,
        "organs": list(backend.organs),
        "training_domain": backend.training_domain,
        "used_prep": prep is not None,
        "device": result.device,
        "seconds": seconds,
        "labels": {str(v): name for v, name in LABEL_NAMES.items()},
    }
    t1 = time.perf_counter()
    write_derived_array(store.path, "seg", result.labels, attrs)
    seconds["write_s"] = time.perf_counter() - t1
    return {"scan": store.path.name, "reused": False, "seconds": seconds, "device": result.device}


@dataclass
class SegmentSummary:
    n_done: int = 0
    n_reused: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        text = (
            f"segmented {self.n_done} scan(s), {self.n_reused} already done, "
            f"{len(self.failures)} failed, in {self.seconds:.1f} s"
        )
        return "\n".join([text, *(f"  failed: {f}" for f in self.failures)])


def segment_stores(
    store_root: str | os.PathLike[str],
    model: Backend | LoadedModel,
    cfg: InferenceConfig | None = None,
    *,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> SegmentSummary:
    """Segment every complete scan store under ``STORE/scans`` in turn."""
    t0 = time.perf_counter()
    paths = [p for p in (Location.of(store_root) / "scans").glob("*.zarr") if is_complete(p)]
    summary = SegmentSummary()
    items: Any = paths
    if progress:
        from tqdm import tqdm

        items = tqdm(paths, desc="segment", unit="scan")
    for p in items:
        try:
            rec = segment_store(p, model, cfg, device=device, threads=threads)
        except ScreeningError as e:  # expected per-scan problems; bugs still raise
            summary.failures.append(f"{p.name}: {e}")
            continue
        if rec["reused"]:
            summary.n_reused += 1
        else:
            summary.n_done += 1
    summary.seconds = time.perf_counter() - t0
    return summary
