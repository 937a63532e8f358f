"""Thin wrappers: measure one scan store, or every scan store of a folder into Parquet.

:func:`measure_store` is the per-scan task of the distributed run: path and frozen config in,
one small ``measurements`` row out (the overlay PNG goes to disk). :func:`measure_stores` is
the minimal path to run it over a store without the full run engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from screening._version import __version__
from screening.config import pipeline_id
from screening.errors import ScreeningError, StoreError, failure_reason
from screening.location import Location, Where
from screening.measure.config import MeasureConfig
from screening.measure.overlay import render_overlay, write_overlay
from screening.measure.volume import measure_volume, to_model_grid
from screening.reasons import ReasonCode, Segmenter, Status
from screening.store.scan import is_complete, open_scan_store

__all__ = [
    "SEGMENTATION_ARRAYS",
    "MeasureSummary",
    "failed_row",
    "measure_pipeline_id",
    "measure_store",
    "measure_stores",
]

log = logging.getLogger(__name__)

#: The scan-store array each segmenter's masks live in.
SEGMENTATION_ARRAYS = {
    Segmenter.UNET: "seg",
    Segmenter.CUSTOM: "seg",
    Segmenter.REFERENCE: "seg_reference",
}


def measure_pipeline_id(
    model_id: str | None,
    segmenter: Segmenter,
    cfg: MeasureConfig,
    producer: dict[str, Any] | None = None,
) -> str:
    """``pipeline_id`` of rows measured from ``segmenter``'s masks with ``cfg``.

    ``producer`` is what made the masks, as recorded in their attributes
    (:func:`screening.model.segmentation_producer` for the U-Net: weights, model grid,
    inference settings); reference masks have none. The run computes the same id up front.
    """
    extra = None
    if producer:
        text = json.dumps(producer, sort_keys=True, separators=(",", ":"))
        extra = {"producer": hashlib.sha256(text.encode()).hexdigest()}
    return pipeline_id(
        segmenter=segmenter.value,
        model_id=model_id,
        configs={"measure": cfg},
        engine_version=__version__,
        extra=extra,
    )


def _identity(
    store: Any,
    segmenter: Segmenter,
    cfg: MeasureConfig,
    seg_attrs: dict[str, Any] | None = None,
) -> tuple[str, str | None, str]:
    """(scan_id, model_id, pipeline_id) from attributes only, before any array is read.
    ``seg_attrs``: the segmentation array's attributes when the caller has read them."""
    scan = store.attrs.get("scan", {})
    if seg_attrs is None:
        seg_attrs = store.derived_attrs(SEGMENTATION_ARRAYS[segmenter]) or {}
    model_id = seg_attrs.get("model_id") if segmenter is Segmenter.UNET else None
    producer = None if segmenter is Segmenter.REFERENCE else seg_attrs.get("producer")
    scan_id = str(scan.get("scan_id") or store.path.stem)
    return scan_id, model_id, measure_pipeline_id(model_id, segmenter, cfg, producer)


def outside_training_domain(seg_attrs: dict[str, Any], source: dict[str, Any]) -> bool:
    """A model trained on synthetic phantoms only measured a scan ``screening synth`` did not
    make: its numbers mean nothing for real CT (flagged, summarised, bannered in the report)."""
    return seg_attrs.get("training_domain") == "synthetic" and not source.get("synthetic")


def overlay_relpath(scan_id: str, pid: str) -> str:
    """Where a scan's overlay lives under RESULTS (one folder per pipeline)."""
    return f"overlays/{pid[:16]}/{scan_id}.png"


def measure_store(
    store_path: str | os.PathLike[str],
    cfg: MeasureConfig,
    *,
    segmenter: Segmenter = Segmenter.UNET,
    results_dir: Where | None = None,
) -> dict[str, Any]:
    """Measure one scan store; return its ``measurements`` row.

    With ``results_dir`` the QC overlay is written to ``results_dir/overlays/...`` and named in
    ``overlay_file``. Raises :class:`StoreError` (reason NO_SEGMENTATION) when the store has no
    masks from ``segmenter``.
    """
    t0 = time.perf_counter()
    store = open_scan_store(store_path)
    scan = store.attrs.get("scan", {})
    array = SEGMENTATION_ARRAYS[segmenter]
    if not store.has(array):
        hint = (
            "run `screening segment` first"
            if segmenter is Segmenter.UNET
            else "give liver_mask / spleen_mask columns in the ingest manifest"
        )
        raise StoreError(
            f"scan store has no `{array}` to measure with segmenter {segmenter.value}: {hint}",
            reason=ReasonCode.NO_SEGMENTATION,
            path=store.path,
        )
    seg_attrs = store.derived_attrs(array) or {}
    scan_id, model_id, pid = _identity(store, segmenter, cfg, seg_attrs)
    ct = store.read("ct")
    labels = store.read(array)
    spacing = store.spacing_mm
    if cfg.grid == "model":
        ct, labels = to_model_grid(ct, labels, spacing, cfg.model_spacing_mm)
        spacing = cfg.model_spacing_mm
    organs = seg_attrs.get("organs")  # absent: reference masks and older segs (liver + spleen)
    m = measure_volume(
        ct,
        labels,
        spacing,
        cfg,
        contrast_header=bool(scan.get("contrast_header")),
        spleen_segmented=organs is None or "spleen" in organs,
    )
    row: dict[str, Any] = {
        "scan_id": scan_id,
        "pipeline_id": pid,
        "model_id": model_id,
        "segmenter": segmenter.value,
        "cohort": scan.get("cohort", "default"),
        **m.row(),
        "device": seg_attrs.get("device"),
        "engine_version": __version__,
    }
    if outside_training_domain(seg_attrs, store.attrs.get("source", {})):
        row["qc_flags"] = [*row["qc_flags"], ReasonCode.MODEL_SYNTHETIC_ONLY.value]
    if results_dir is not None:
        rel = overlay_relpath(scan_id, pid)
        backend = seg_attrs.get("backend") if segmenter is not Segmenter.REFERENCE else None
        model = f" ({backend})" if backend else ""
        head = f"scan {scan_id[:12]}  |  segmenter {segmenter.value}{model}"
        png = render_overlay(ct, m, head=head, threshold_hu=cfg.steatosis_threshold_hu)
        write_overlay(Location.of(results_dir) / rel, png)
        row["overlay_file"] = rel
    row["measure_s"] = time.perf_counter() - t0
    row["measured_at"] = datetime.now(UTC)
    return row


def failure_row(
    store_path: str | os.PathLike[str],
    segmenter: Segmenter,
    cfg: MeasureConfig,
    error: BaseException,
) -> dict[str, Any]:
    """A ``measurements`` row for a scan that could not be measured (never silently dropped).

    Its ``pipeline_id`` is the one a successful measurement would have had, so a later
    success supersedes it (compaction keeps the latest row per key).
    """
    path = Location.of(store_path)
    reason, message = failure_reason(error)
    scan_id, cohort = path.stem, "default"
    pid = measure_pipeline_id(None, segmenter, cfg)
    try:
        store = open_scan_store(path)
        scan_id, _, pid = _identity(store, segmenter, cfg)
        cohort = store.attrs.get("scan", {}).get("cohort", cohort)
    except ScreeningError:
        pass
    return failed_row(scan_id, pid, segmenter, cohort, reason, message)


def failed_row(
    scan_id: str,
    pid: str,
    segmenter: Segmenter,
    cohort: str,
    reason: ReasonCode,
    message: str,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The ``measurements`` row of a scan that could not be measured (status failed)."""
    return {
        "scan_id": scan_id,
        "pipeline_id": pid,
        "segmenter": segmenter.value,
        "cohort": cohort,
        "status": Status.FAILED.value,
        "reason": reason.value,
        "message": message,
        "engine_version": __version__,
        "measured_at": at or datetime.now(UTC),
    }


@dataclass
class MeasureSummary:
    """Counts of one :func:`measure_stores` call."""

    by_status: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    n_skipped: int = 0
    seconds: float = 0.0
    files: list[Location] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.by_status[row["status"]] = self.by_status.get(row["status"], 0) + 1
        if row.get("reason"):
            self.by_reason[row["reason"]] = self.by_reason.get(row["reason"], 0) + 1

    def describe(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items())) or "nothing"
        text = f"measured: {counts}; {self.n_skipped} already done; {self.seconds:.1f} s"
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.by_reason.items()))
        return text + (f"\n  reasons: {reasons}" if reasons else "")


def _done_keys(results: Location) -> set[tuple[str, str]]:
    from screening.schemas import load_table_schema
    from screening.tables import read_dataset

    table = read_dataset(results / "measurements", load_table_schema("measurements"))
    ok = [s != Status.FAILED.value for s in table["status"].to_pylist()]
    keys = zip(table["scan_id"].to_pylist(), table["pipeline_id"].to_pylist(), strict=True)
    return {k for k, good in zip(keys, ok, strict=True) if good}


def measure_stores(
    store_root: str | os.PathLike[str],
    results_dir: Where,
    cfg: MeasureConfig,
    *,
    segmenter: Segmenter = Segmenter.UNET,
    overlays: bool = True,
    progress: bool = False,
) -> MeasureSummary:
    """Measure every complete scan store under ``STORE/scans`` into ``RESULTS/measurements``.

    Runs in this process, one scan after another (the distributed run does the same per-scan
    task on a cluster). A scan already measured by the same pipeline is skipped; a scan that
    cannot be measured becomes a ``failed`` row with its reason.
    """
    from screening.schemas import load_table_schema
    from screening.tables import write_part

    t0 = time.perf_counter()
    results = Location.of(results_dir)
    paths = [p for p in (Location.of(store_root) / "scans").glob("*.zarr") if is_complete(p)]
    done = _done_keys(results)
    summary = MeasureSummary()
    items: Iterable[Location] = paths
    if progress:
        from tqdm import tqdm

        items = tqdm(paths, desc="measure", unit="scan")
    rows = []
    for p in items:
        try:
            if _identity(open_scan_store(p), segmenter, cfg)[::2] in done:
                summary.n_skipped += 1
                continue
            row = measure_store(
                p, cfg, segmenter=segmenter, results_dir=results if overlays else None
            )
        except ScreeningError as e:  # expected per-scan problems; bugs still raise
            row = failure_row(p, segmenter, cfg, e)
            log.warning("%s: %s", p.name, e)
        summary.add(row)
        rows.append(row)
    summary.files = write_part(results / "measurements", load_table_schema("measurements"), rows)
    summary.seconds = time.perf_counter() - t0
    return summary
