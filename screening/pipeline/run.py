"""The cohort run: every scan of a store through preprocess → segment → measure on Dask,
streamed into ``RESULTS/measurements`` and ``RESULTS/failures``, resumable.

The loop keeps at most ``max_in_flight`` scans submitted (Dask does not throttle
resource-restricted tasks itself, dask/distributed#9164) and commits rows as scans finish.
Re-running the same command skips every scan with a committed row for this ``pipeline_id``;
a scan that failed before is tried again and its ``attempt`` counts up.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from screening._version import __version__
from screening.errors import (
    ClusterError,
    ConfigError,
    DiskFullError,
    StoreError,
    failure_reason,
    is_disk_full,
)
from screening.location import Location, Where
from screening.measure.config import MeasureConfig
from screening.measure.store import measure_pipeline_id
from screening.model.backends import DEFAULT_MODEL
from screening.model.inference import InferenceConfig
from screening.model.nnunet import NnUNetConfig
from screening.pipeline.state import (
    Lost,
    RunProgress,
    RunState,
    RunSummary,
    ScanResult,
    Step,
    Stop,
    result_from_record,
)
from screening.pipeline.tasks import (
    MODEL_PLUGIN,
    ModelPlugin,
    ScanRef,
    SegmentFn,
    StageSettings,
    measure_task,
    preprocess_task,
    scan_task,
    segment_task,
)
from screening.reasons import ReasonCode, Segmenter, Stage, Status
from screening.runtime.cluster import gpu_worker_count, worker_count
from screening.store.catalog import read_catalog
from screening.store.results import (
    FAILURES_DIR,
    MEASUREMENTS_DIR,
    ResultSink,
    committed_scans,
    compact_results,
    failure_counts,
    results_lock,
    write_pipeline_record,
)
from screening.store.scan import is_complete, scan_store_path

__all__ = [
    "RunConfig",
    "RunProgress",
    "RunSummary",
    "plan_run",
    "record_pipeline",
    "run_cohort",
]

log = logging.getLogger(__name__)

RUN_LOCK = ".run.lock"
QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What a run computes and how it streams (stage configs are passed on to the tasks).

    Parameters
    ----------
    segmenter
        ``unet`` (the model), ``reference`` (masks given at ingest) or ``custom``
        (``segment_fn``, a picklable ``(ct_hu, spacing_mm) -> labels`` function).
    model
        ``"liver3mm"`` (the shipped real-CT liver model, the default), ``"demo"`` (the
        U-Net trained on synthetic phantoms), a model directory, a MONAI bundle or an
        nnU-Net v2 result folder.
    nnunet
        How an nnU-Net folder is run (folds, orientation, mirroring); unused otherwise.
    inference, measure
        Stage configurations; with ``inference.cascade`` and a model without a coarse
        sub-model, the cascade is switched off (recorded in the pipeline id).
    max_in_flight
        Scans submitted at once; ``None`` means four per worker (a few queued per worker hide
        the round trip to the client; measured in bench/bench_run.py).
    flush_rows, flush_seconds
        Commit buffered rows after this many rows or seconds (what a hard kill can cost).
    retry_failed
        Re-run scans whose earlier attempts failed (their ``attempt`` counts up).
    gpu_wait_s
        When segment tasks are restricted to GPU workers and none has been connected for this
        long (e.g. every GPU job of a batch system ended), the run commits what finished and
        stops with a ClusterError instead of waiting for ever; re-run to resume.
    worker_lost_retries
        Resubmissions, within the run, of a scan whose worker died (after Dask's own
        ``allowed-failures``). A worker killed by one poison scan also fails the tasks queued
        beside it; they deserve another try, each recorded as an attempt in ``failures``.
    """

    segmenter: Segmenter = Segmenter.UNET
    model: str = DEFAULT_MODEL
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    nnunet: NnUNetConfig = field(default_factory=NnUNetConfig)
    overlays: bool = True
    device: str = "auto"
    max_in_flight: int | None = None
    flush_rows: int = 64
    flush_seconds: float = 5.0
    retry_failed: bool = True
    worker_lost_retries: int = 1
    gpu_wait_s: float = 600.0
    segment_fn: SegmentFn | None = None
    segment_fn_name: str | None = None

    def __post_init__(self) -> None:
        if (self.segment_fn is None) != (self.segmenter is not Segmenter.CUSTOM):
            raise ConfigError("segment_fn is given exactly when segmenter is 'custom'")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")


@dataclass(frozen=True)
class RunPlan:
    """Which scans a run will do, and what it skips."""

    todo: list[ScanRef]
    n_done_before: int
    n_failed_before: int
    prior_failures: dict[str, int]
    n_missing_store: int


def _model_info(cfg: RunConfig) -> Any:
    """Load (and verify) the model once on the client: its id and producer name the
    pipeline. The workers load their own copy through the plugin."""
    from screening.model.backends import load_backend

    backend = load_backend(cfg.model, device="cpu", inference=cfg.inference, nnunet=cfg.nnunet)
    if getattr(backend, "inference", cfg.inference) != cfg.inference:
        log.info("model %s has no coarse sub-model: running without the cascade", cfg.model)
    return backend


def stage_settings(cfg: RunConfig, results: Location) -> StageSettings:
    """The frozen settings every task gets, with the run's ``pipeline_id``."""
    results_dir = results.url if cfg.overlays else None
    if cfg.segmenter is Segmenter.UNET:
        backend = _model_info(cfg)
        producer = backend.producer()
        pid = measure_pipeline_id(backend.model_id, cfg.segmenter, cfg.measure, producer)
        inference = getattr(backend, "inference", None)
        cascade = int(bool(inference and inference.cascade))
        return StageSettings(
            segmenter=cfg.segmenter,
            measure=cfg.measure,
            pipeline_id=pid,
            results_dir=results_dir,
            preprocess=backend.preprocess_cfg,
            inference=inference,
            device=cfg.device,
            # One plugin per model: a later run with the same weights finds them loaded.
            model_plugin=f"{MODEL_PLUGIN}-{backend.model_id[:16]}-{cascade}",
        )
    if cfg.segmenter is Segmenter.CUSTOM:
        name = cfg.segment_fn_name or _qualname(cfg.segment_fn)
        pid = measure_pipeline_id(None, cfg.segmenter, cfg.measure, {"segment_fn": name})
        return StageSettings(
            segmenter=cfg.segmenter,
            measure=cfg.measure,
            pipeline_id=pid,
            results_dir=results_dir,
            segment_fn=cfg.segment_fn,
            segment_fn_name=name,
        )
    pid = measure_pipeline_id(None, cfg.segmenter, cfg.measure)
    return StageSettings(
        segmenter=cfg.segmenter, measure=cfg.measure, pipeline_id=pid, results_dir=results_dir
    )


def record_pipeline(results: Where, store_root: Where, settings: StageSettings) -> Location:
    """Write the record of what ``settings.pipeline_id`` stands for (model, stage
    configurations) and which scan store it ran on (:func:`write_pipeline_record`)."""
    record = {
        "pipeline_id": settings.pipeline_id,
        "store": Location.of(store_root).url,
        "segmenter": settings.segmenter.value,
        "segment_fn": settings.segment_fn_name,
        "preprocess": settings.preprocess.to_dict() if settings.preprocess else None,
        "inference": settings.inference.to_dict() if settings.inference else None,
        "measure": settings.measure.to_dict(),
        "engine_version": __version__,
        "last_run_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return write_pipeline_record(results, record)


def _qualname(fn: Any) -> str:
    """``module:name`` of a function, or of a callable object's class (stable across runs)."""
    owner = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{owner.__module__}:{owner.__qualname__}"


def plan_run(store_root: Where, results: Where, pid: str, *, retry_failed: bool) -> RunPlan:
    """Scans of the store's catalog (status ok, store complete) minus those already committed."""
    store_root = Location.of(store_root)
    if not (store_root / "scans").is_dir():
        raise StoreError(
            f"{store_root} is not a scan store (no scans/ folder): run `screening ingest` first",
            path=store_root,
        )
    catalog = read_catalog(store_root)
    cohorts: dict[str, str] = {}
    for scan_id, cohort, status in zip(
        catalog["scan_id"].to_pylist(),
        catalog["cohort"].to_pylist(),
        catalog["status"].to_pylist(),
        strict=True,
    ):
        if status == Status.OK.value:
            cohorts[scan_id] = cohort
    done, failed = committed_scans(results, pid)
    prior = failure_counts(results, pid)
    todo, missing = [], 0
    for scan_id in sorted(cohorts):
        if scan_id in done or (scan_id in failed and not retry_failed):
            continue
        path = scan_store_path(store_root, scan_id)
        if not is_complete(path):
            missing += 1
            log.warning("scan %s is in the catalog but its store is incomplete", scan_id[:16])
            continue
        todo.append(ScanRef(scan_id, cohorts[scan_id], path.url))
    n_done = sum(1 for s in cohorts if s in done)
    return RunPlan(todo, n_done, len(failed & set(cohorts)), prior, missing)


def _lost_stage(futures: list[Any]) -> tuple[Stage, BaseException | None]:
    """The first stage whose future erred (a dead worker fails its dependants too); a fused
    task (one future) is stage ``scan``."""
    stages = (
        (Stage.PREPROCESS, Stage.SEGMENT, Stage.MEASURE) if len(futures) == 3 else (Stage.SCAN,)
    )
    for stage, fut in zip(stages, futures, strict=True):
        if fut.status == "error":
            return stage, fut.exception()
    return stages[-1], None


def _describe_lost(
    error: BaseException | None, status: str = "lost"
) -> tuple[ReasonCode, str, str | None]:
    """(reason, message, worker) for a task that raised on the client side (worker death),
    or whose future ended without a result or an error (``status``)."""
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        last = getattr(error, "last_worker", None)
        worker = getattr(last, "address", None) or (str(last) if last else None)
        return (
            ReasonCode.WORKER_LOST,
            "the worker process died on every attempt (Dask allowed-failures reached): "
            "the scan may exhaust memory or crash a native library",
            worker,
        )
    if error is None:
        # A worker that dies after finishing a task takes the result with it: the client's
        # gather fails and the future ends without a result. The scan is retried like any
        # other loss (seen in a fault test: another scan's kill took this one's result).
        return (
            ReasonCode.WORKER_LOST,
            f"the task's result was lost before it was collected (future {status}): its "
            "worker died or left",
            None,
        )
    reason, message = failure_reason(error)
    return reason, message, None


def run_cohort(
    store_root: Where,
    results: str | os.PathLike[str],
    cfg: RunConfig,
    client: Any,
    *,
    progress: Callable[[RunProgress], None] | None = None,
) -> RunSummary:
    """Run every not-yet-committed scan of ``store_root`` on ``client``'s cluster.

    Rows stream into ``results`` as scans finish. Ctrl-C (KeyboardInterrupt) commits what has
    finished, cancels the rest and returns a summary marked ``interrupted``.
    """
    t0 = time.perf_counter()
    root, out = Location.of(store_root), Location.of(results)
    out.check_reachable()
    out.makedirs()
    with results_lock(out, RUN_LOCK, "screening run"):
        from screening.tables import quarantine_corrupt_parts

        for name in (MEASUREMENTS_DIR, FAILURES_DIR):
            quarantine_corrupt_parts(out / name, out / QUARANTINE_DIR / name)
        settings = stage_settings(cfg, out)
        record_pipeline(out, root, settings)
        plan = plan_run(root, out, settings.pipeline_id, retry_failed=cfg.retry_failed)
        summary = RunSummary(settings.pipeline_id, out, n_todo=len(plan.todo))
        summary.n_skipped = plan.n_done_before + (0 if cfg.retry_failed else plan.n_failed_before)
        summary.n_missing_store = plan.n_missing_store
        summary.workers = worker_count(client)
        use_gpu = settings.segmenter is Segmenter.UNET and settings.segment_fn is None
        summary.gpu_workers = gpu_worker_count(client) if use_gpu else 0
        log.info(
            "run %s: %d scan(s) to do, %d already done, %d worker(s) (%d GPU)",
            settings.pipeline_id[:12],
            len(plan.todo),
            summary.n_skipped,
            summary.workers,
            summary.gpu_workers,
        )
        if plan.todo and use_gpu:
            client.register_plugin(
                ModelPlugin(cfg.model, inference=cfg.inference, nnunet=cfg.nnunet),
                name=settings.model_plugin,
            )
        limit = cfg.max_in_flight or 4 * summary.workers
        sink = ResultSink(out, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds)
        try:
            _stream(client, plan, settings, sink, summary, limit, progress, cfg)
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise _disk_full(out, summary) from e
        finally:
            try:
                sink.flush()
            except OSError as e:
                if not is_disk_full(e):
                    raise
                raise _disk_full(out, summary) from e
        if summary.by_status and not summary.interrupted and plan.n_failed_before:
            # Scans that failed before and were retried now have two rows: keep the latest.
            summary.compacted = compact_results(out)
    summary.seconds = time.perf_counter() - t0
    return summary


def _stream(
    client: Any,
    plan: RunPlan,
    settings: StageSettings,
    sink: ResultSink,
    summary: RunSummary,
    limit: int,
    progress: Callable[[RunProgress], None] | None,
    cfg: RunConfig,
) -> None:
    """The I/O loop around :class:`RunState`: submit what it says, turn finished futures into
    typed results, commit the rows it returns, cancel what it cancels."""
    from distributed import as_completed

    state = RunState(
        plan.todo,
        pipeline_id=settings.pipeline_id,
        segmenter=settings.segmenter,
        limit=limit,
        summary=summary,
        prior_attempts=plan.prior_failures,
        lost_retries=cfg.worker_lost_retries,
    )
    gpu = {"resources": {"GPU": 1}} if summary.gpu_workers else {}
    chained = bool(summary.gpu_workers)  # else one fused task per scan (tasks.scan_task)
    futures: dict[str, list[Any]] = {}  # scan_id -> its futures (the last one is awaited)
    scan_of: dict[str, str] = {}  # future key -> scan_id
    ac = as_completed()

    def submit(scan: ScanRef) -> None:
        # Keys name the pseudonymous scan_id only (never a patient identifier).
        token = f"{scan.scan_id[:16]}-{uuid.uuid4().hex[:8]}"
        if chained:
            prep = client.submit(
                preprocess_task, scan, settings, key=f"preprocess-{token}", pure=False
            )
            seg = client.submit(
                segment_task, scan, prep, settings, key=f"segment-{token}", pure=False, **gpu
            )
            meas = client.submit(
                measure_task, scan, seg, settings, key=f"measure-{token}", pure=False, priority=1
            )
            futures[scan.scan_id] = [prep, seg, meas]
        else:
            futures[scan.scan_id] = [
                client.submit(scan_task, scan, settings, key=f"scan-{token}", pure=False)
            ]
        last = futures[scan.scan_id][-1]
        scan_of[last.key] = scan.scan_id
        ac.add(last)

    def apply(step: Step) -> None:
        for table, row in step.commit:
            sink.add(table, row)
        cancelled = [f for scan_id in step.cancel for f in futures.pop(scan_id, [])]
        if cancelled:
            client.cancel(cancelled)
        for scan in step.submit:
            submit(scan)

    apply(state.start())
    watchdog = _GpuWatchdog(client, cfg.gpu_wait_s, futures) if chained else None
    try:
        for fut in ac:
            if watchdog is not None and watchdog.fired.is_set():
                apply(state.gpu_gone())  # the rest were cancelled: not failures, not done
                break
            scan_id = scan_of.pop(fut.key)
            scan_futures = futures.pop(scan_id, [])
            result = _result(fut, scan_futures)
            for f in scan_futures:
                f.release()
            apply(state.on_result(scan_id, result))
            if state.stopped is not None:
                break
            if progress is not None:
                progress(state.progress)
    except KeyboardInterrupt:
        apply(state.cancel())
    finally:
        if watchdog is not None:
            watchdog.stop()
    if state.stopped is Stop.DISK_FULL:
        raise OSError(errno.ENOSPC, "no space left on device (reported by a task)")
    if state.stopped is Stop.GPU_GONE:
        raise ClusterError(
            f"no GPU worker has been connected for {cfg.gpu_wait_s:.0f} s while segment tasks "
            "waited for one; finished scans are committed. Bring GPU workers back (or run "
            "without them) and re-run the same command to resume"
        )


def _result(fut: Any, futures: list[Any]) -> ScanResult:
    """The typed result of a scan whose last future is done."""
    if fut.status == "finished":
        return result_from_record(fut.result())
    stage, error = _lost_stage(futures)
    return Lost(stage, *_describe_lost(error, str(fut.status)))


def _disk_full(out: Location, summary: RunSummary) -> DiskFullError:
    summary.interrupted = True
    return DiskFullError(
        f"no space left on the device while writing the run ({out} or the scan store): the "
        f"run stopped after {summary.n_finished} scan(s); every row committed before the disk "
        "filled is kept. Free space and re-run the same command to resume",
        reason=ReasonCode.DISK_FULL,
        path=out,
    )


class _GpuWatchdog:
    """Cancels the run's futures when no GPU worker has been seen for ``wait_s`` seconds.

    Resource-restricted tasks wait for ever for a worker with the resource; a batch system
    ending every GPU job would otherwise hang the run silently.
    """

    def __init__(self, client: Any, wait_s: float, futures: dict[str, list[Any]]) -> None:
        self.client, self.wait_s, self.futures = client, wait_s, futures
        self.fired, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gpu-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        last_seen = time.monotonic()
        while not self._stop.wait(min(5.0, self.wait_s / 4)):
            try:
                if gpu_worker_count(self.client) > 0:
                    last_seen = time.monotonic()
                    continue
            except Exception:  # the client is closing: nothing to watch
                return
            if time.monotonic() - last_seen >= self.wait_s:
                log.error("no GPU worker for %.0f s: stopping the run", self.wait_s)
                self.fired.set()
                futures = [f for fs in list(self.futures.values()) for f in fs]
                self.client.cancel(futures)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
