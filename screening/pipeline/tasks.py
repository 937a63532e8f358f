"""The per-scan tasks of a run: preprocess (CPU) → segment (GPU when there is one) → measure.

Each task takes a :class:`ScanRef` (scan_id and store path) plus frozen settings and returns a
small record; arrays go through the scan store (docs/architecture.md). Expected problems and
bugs alike end as a *failed* record naming the stage, the reason code and the worker, so one
scan never stops a run and the client can write a ``failures`` row. Only the death of the worker
process itself escapes (Dask retries the task, then raises ``KilledWorker`` on the client).

Every write is idempotent: a task that runs twice finds its own earlier ``prep``/``seg``
(same configuration, same producer) and keeps it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin
from numpy.typing import NDArray

from screening.errors import ScreeningError, failure_reason, is_disk_full
from screening.measure.config import MeasureConfig
from screening.model.inference import InferenceConfig
from screening.model.nnunet import NnUNetConfig
from screening.preprocess import PrepSpec
from screening.reasons import ReasonCode, Segmenter, Stage
from screening.store.scan import open_scan_store, write_derived_array

__all__ = [
    "MODEL_PLUGIN",
    "ModelPlugin",
    "ScanRef",
    "StageSettings",
    "measure_task",
    "preprocess_task",
    "scan_task",
    "segment_task",
]

log = logging.getLogger(__name__)

#: Name the model plugin is registered under on every worker.
MODEL_PLUGIN = "screening-model"

#: ``(ct_hu (z, y, x) int16, spacing_mm (z, y, x)) -> labels uint8`` (0 / 1 liver / 2 spleen).
SegmentFn = Callable[[NDArray[np.int16], tuple[float, float, float]], NDArray[np.uint8]]


@dataclass(frozen=True)
class ScanRef:
    """What travels to a worker for one scan: no arrays, no patient identifiers."""

    scan_id: str
    cohort: str
    store_path: str


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    """Everything the three tasks need besides the scan (frozen, picklable).

    ``segment_fn`` replaces the U-Net with a picklable function (segmenter ``custom``);
    ``segment_fn_name`` identifies it in the pipeline id.
    """

    segmenter: Segmenter
    measure: MeasureConfig
    pipeline_id: str
    results_dir: str | None
    preprocess: PrepSpec | None = None
    inference: InferenceConfig | None = None
    segment_fn: SegmentFn | None = None
    segment_fn_name: str | None = None
    device: str = "auto"
    model_plugin: str = MODEL_PLUGIN

    @property
    def needs_segmentation(self) -> bool:
        return self.segmenter is not Segmenter.REFERENCE


def _worker() -> Any:
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:  # called outside a worker (tests, in-process use)
        return None


def _worker_name() -> str | None:
    w = _worker()
    return None if w is None else str(w.address)


def _worker_threads() -> int | None:
    w = _worker()
    return None if w is None else int(w.state.nthreads)


def _worker_has_gpu() -> bool:
    w = _worker()
    return w is not None and w.state.total_resources.get("GPU", 0) >= 1


def _ok(stage: Stage, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"ok": True, "stage": stage.value, "seconds": {f"{stage.value}_s": seconds}, **extra}


def failed_record(stage: Stage, error: BaseException, worker: str | None) -> dict[str, Any]:
    """A failed stage as a small record (:func:`screening.errors.failure_reason`)."""
    reason, message = failure_reason(error)
    return {
        "ok": False,
        "stage": stage.value,
        "reason": reason.value,
        "message": message,
        "worker": worker,
    }


def _guard(stage: Stage, scan: ScanRef, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one stage; any exception becomes a failed record (bugs are logged with traceback)."""
    try:
        return fn()
    except ScreeningError as e:
        log.warning("%s %s: %s", stage.value, scan.scan_id[:16], e)
        return failed_record(stage, e, _worker_name())
    except Exception as e:  # a bug: keep the run going, keep the traceback in the worker log
        if is_disk_full(e):  # not a bug: the run stops on it (engine.run)
            log.error("%s %s: no space left on device", stage.value, scan.scan_id[:16])
        else:
            log.exception("%s %s: unexpected error", stage.value, scan.scan_id[:16])
        return failed_record(stage, e, _worker_name())


class ModelPlugin(WorkerPlugin):
    """Loads the segmentation model once per worker, on first use (a Dask ``WorkerPlugin``).

    Registered on every worker, it holds only the model reference until a segment task asks;
    then it loads (and verifies) the backend (:mod:`screening.model.backends`) on that worker's
    device and keeps it. Workers that never segment (CPU workers beside GPU ones) never load
    anything.
    """

    name = MODEL_PLUGIN
    idempotent = True  # registering the same model again (the next run) keeps the loaded one

    def __init__(
        self,
        model_ref: str,
        *,
        inference: InferenceConfig | None = None,
        nnunet: NnUNetConfig | None = None,
    ) -> None:
        self.model_ref = model_ref
        self.inference = inference
        self.nnunet = nnunet
        self._models: dict[str, Any] = {}

    def setup(self, worker: Any) -> None:
        self._models = {}

    def teardown(self, worker: Any) -> None:
        self._models.clear()

    def model(self, device: str) -> Any:
        if device not in self._models:
            from screening.model.backends import load_backend

            t0 = time.perf_counter()
            self._models[device] = load_backend(
                self.model_ref, device=device, inference=self.inference, nnunet=self.nnunet
            )
            log.info("loaded model on %s in %.1f s", device, time.perf_counter() - t0)
        return self._models[device]


def _model_here(settings: StageSettings, device: str) -> Any:
    w = _worker()
    plugin = None if w is None else w.plugins.get(settings.model_plugin)
    if plugin is None:
        raise RuntimeError(
            f"the {settings.model_plugin!r} worker plugin is not registered on this worker; "
            "run scans through screening.pipeline.run_cohort"
        )
    return plugin.model(device)


def _device(settings: StageSettings) -> str:
    from screening.model.inference import resolve_device

    if settings.device != "auto":
        return resolve_device(settings.device)
    # A CPU worker beside GPU workers stays on the CPU even if it could see a GPU.
    return resolve_device("auto") if _worker_has_gpu() or _worker() is None else "cpu"


def preprocess_task(scan: ScanRef, settings: StageSettings) -> dict[str, Any]:
    """CPU: write ``prep`` (the model grid) so the GPU task only runs the network."""

    def run() -> dict[str, Any]:
        from screening.preprocess import write_prep

        t0 = time.perf_counter()
        if settings.preprocess is None:  # reference masks or a custom function: nothing to do
            return _ok(Stage.PREPROCESS, 0.0, skipped=True)
        rec = write_prep(scan.store_path, settings.preprocess, threads=_worker_threads())
        return _ok(Stage.PREPROCESS, time.perf_counter() - t0, reused=rec["reused"])

    return _guard(Stage.PREPROCESS, scan, run)


def _segment_custom(scan: ScanRef, settings: StageSettings) -> dict[str, Any]:
    assert settings.segment_fn is not None
    producer = {"segment_fn": settings.segment_fn_name}
    store = open_scan_store(scan.store_path)
    existing = store.derived_attrs("seg")
    if existing and existing.get("producer") == producer:
        return {"reused": True, "device": existing.get("device")}
    labels = np.asarray(settings.segment_fn(store.read("ct"), store.spacing_mm), dtype=np.uint8)
    attrs = {"producer": producer, "device": "cpu", "model_id": None}
    write_derived_array(store.path, "seg", labels, attrs)
    return {"reused": False, "device": "cpu"}


def segment_task(
    scan: ScanRef, upstream: dict[str, Any], settings: StageSettings
) -> dict[str, Any]:
    """GPU (or CPU): run the U-Net (model from the worker plugin) and write ``seg``."""
    if not upstream["ok"]:
        return upstream

    def run() -> dict[str, Any]:
        from screening.model.segment import segment_store

        t0 = time.perf_counter()
        if not settings.needs_segmentation:
            rec: dict[str, Any] = {"reused": True, "device": None}
        elif settings.segment_fn is not None:
            rec = _segment_custom(scan, settings)
        else:
            device = _device(settings)
            backend = _model_here(settings, device)
            rec = segment_store(scan.store_path, backend, device=device, threads=_worker_threads())
        out = _ok(Stage.SEGMENT, time.perf_counter() - t0, reused=rec["reused"])
        out["seconds"] = {**upstream["seconds"], **out["seconds"]}
        out["device"] = rec.get("device")
        return out

    return _guard(Stage.SEGMENT, scan, run)


def measure_task(
    scan: ScanRef, upstream: dict[str, Any], settings: StageSettings
) -> dict[str, Any]:
    """CPU: measure from the masks; the record carries the ``measurements`` row."""
    if not upstream["ok"]:
        return upstream

    def run() -> dict[str, Any]:
        from screening.measure.store import measure_store

        row = measure_store(
            scan.store_path,
            settings.measure,
            segmenter=settings.segmenter,
            results_dir=settings.results_dir,
        )
        if row["pipeline_id"] != settings.pipeline_id:
            # The masks were made by something other than this run's pipeline (e.g. a seg
            # replaced concurrently): refuse rather than file the row under another pipeline.
            raise ScreeningError(
                "the scan's masks do not belong to this run's pipeline "
                f"({row['pipeline_id'][:12]} != {settings.pipeline_id[:12]}); re-run to redo it",
                reason=ReasonCode.INTERNAL_ERROR,
                path=scan.store_path,
            )
        seconds = upstream["seconds"]
        row["preprocess_s"] = seconds.get("preprocess_s")
        row["segment_s"] = seconds.get("segment_s")
        row["device"] = row.get("device") or upstream.get("device")
        return {"ok": True, "stage": Stage.MEASURE.value, "row": row}

    return _guard(Stage.MEASURE, scan, run)


def scan_task(scan: ScanRef, settings: StageSettings) -> dict[str, Any]:
    """All stages in one task, for clusters without GPU workers: there is no hand-off between
    kinds of worker to make, so one task per scan saves two task round trips (the dominant
    per-scan overhead, bench/bench_run.py) and the ``prep`` write and read (the segment step
    preprocesses in memory, only inside the cascade's box). A failure is reported against
    the stage that raised; a worker death against stage ``scan``."""
    upstream: dict[str, Any] = {"ok": True, "stage": Stage.PREPROCESS.value, "seconds": {}}
    return measure_task(scan, segment_task(scan, upstream, settings), settings)
