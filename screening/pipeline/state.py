"""The run's state machine: which scans to submit, which rows to commit, when to stop.

Pure (no Dask, no files), in the manner of distributed's ``WorkerState``: the I/O loop in
:mod:`screening.pipeline.run` feeds it events (a scan's typed result, cancel, GPU workers gone)
and carries out the :class:`Step` each one returns (commit rows, submit scans, cancel scans).
Everything about attempts, retries of lost workers and stopping lives here, so it is tested
without a cluster (tests/pipeline/test_state.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from screening.location import Location
from screening.measure.store import failed_row
from screening.reasons import ReasonCode, Segmenter, Stage
from screening.store.results import FAILURES_DIR, MEASUREMENTS_DIR

if TYPE_CHECKING:
    from screening.pipeline.tasks import ScanRef

__all__ = [
    "Failed",
    "Lost",
    "Measured",
    "RunProgress",
    "RunState",
    "RunSummary",
    "ScanResult",
    "Step",
    "Stop",
    "result_from_record",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class Measured:
    """The scan went through every stage: its ``measurements`` row."""

    row: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """A stage ended the scan with a reason code (bad input, or a bug caught in the task)."""

    stage: Stage
    reason: ReasonCode
    message: str
    worker: str | None = None


@dataclass(frozen=True)
class Lost:
    """The task never returned: its worker process died (Dask gave up on it), or the client
    saw an error. Worth another try within the run (``worker_lost_retries``)."""

    stage: Stage
    reason: ReasonCode
    message: str
    worker: str | None = None


ScanResult = Measured | Failed | Lost


def result_from_record(record: Mapping[str, Any]) -> Measured | Failed:
    """A task's small record (:mod:`screening.pipeline.tasks`) as a typed result."""
    if record["ok"]:
        return Measured(dict(record["row"]))
    return Failed(
        Stage(record["stage"]),
        ReasonCode(record["reason"]),
        str(record["message"]),
        record.get("worker"),
    )


# ----------------------------------------------------------------------------- outputs


class Stop(StrEnum):
    """Why a run stopped before every scan finished (each is resumable by re-running)."""

    CANCELLED = "cancelled"  # Ctrl-C
    GPU_GONE = "gpu_gone"  # no GPU worker for gpu_wait_s while segment tasks waited
    DISK_FULL = "disk_full"  # a task reported ENOSPC: not the scan's fault


@dataclass
class Step:
    """What the I/O loop does after one event, in this order: commit, cancel, submit."""

    commit: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (table, row)
    cancel: list[str] = field(default_factory=list)  # scan ids
    submit: list[ScanRef] = field(default_factory=list)


@dataclass
class RunProgress:
    total: int
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)

    def scans_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60.0 * (self.done + self.failed) / elapsed if elapsed > 0 else 0.0


@dataclass
class RunSummary:
    """What a run did: counts by status, reason and failed stage, and where to look."""

    pipeline_id: str
    results: Location
    n_todo: int = 0
    n_skipped: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    failed_stages: dict[str, int] = field(default_factory=dict)
    qc_flags: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    gpu_workers: int = 0
    interrupted: bool = False
    compacted: dict[str, int] = field(default_factory=dict)
    n_missing_store: int = 0

    def add(self, row: dict[str, Any], stage: str | None = None) -> None:
        self.by_status[row["status"]] = self.by_status.get(row["status"], 0) + 1
        reason = row.get("reason")
        if reason:
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if stage:
            self.failed_stages[stage] = self.failed_stages.get(stage, 0) + 1
        for flag in row.get("qc_flags") or []:
            self.qc_flags[flag] = self.qc_flags.get(flag, 0) + 1

    @property
    def n_finished(self) -> int:
        return sum(self.by_status.values())

    def describe(self) -> str:
        rate = 3600.0 * self.n_finished / self.seconds if self.seconds > 0 else 0.0
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.by_status.items())) or "none"
        lines = [
            f"run {self.pipeline_id[:12]}: {self.n_finished} of {self.n_todo} scan(s) finished "
            f"({counts}); {self.n_skipped} already done; {self.seconds:.1f} s "
            f"({rate:.0f} scans/hour) on {self.workers} worker(s), {self.gpu_workers} with GPU",
        ]
        if self.n_missing_store:
            lines.append(
                f"  {self.n_missing_store} scan(s) of the catalog have no complete store "
                "(re-run `screening ingest` on their sources); not run"
            )
        if self.by_reason:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.by_reason.items()))
            lines.append(f"  reasons: {reasons}")
        if self.qc_flags:
            flags = ", ".join(f"{r} {n}" for r, n in sorted(self.qc_flags.items()))
            lines.append(f"  QC flags: {flags} (see the overlays)")
        n_off_domain = self.qc_flags.get(ReasonCode.MODEL_SYNTHETIC_ONLY.value, 0)
        if n_off_domain:
            lines.append(
                f"  WARNING: {n_off_domain} scan(s) not made by `screening synth` were segmented "
                "by a model trained on synthetic phantoms only; their numbers say nothing about "
                "real livers. Use the default real-CT model (--model liver3mm)."
            )
        if self.failed_stages:
            stages = ", ".join(f"{s} {n}" for s, n in sorted(self.failed_stages.items()))
            lines.append(f"  failed at stage: {stages} (details: {self.results}/failures)")
        if self.interrupted:
            lines.append("  INTERRUPTED: re-run the same command to resume (committed rows stay)")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- the state


class RunState:
    """The run of ``todo``: at most ``limit`` scans in flight, results in, steps out.

    Parameters
    ----------
    todo
        Scans to run, in order.
    pipeline_id, segmenter
        What the committed rows are filed under.
    limit
        Scans in flight at once.
    prior_attempts
        Failed attempts committed by earlier runs, per scan id (attempts count on from them).
    lost_retries
        Resubmissions of a scan whose task was :class:`Lost`, within this run.
    summary
        Counts of the committed rows (updated as rows are committed).
    clock
        The time stamped on failure rows.
    """

    def __init__(
        self,
        todo: Sequence[ScanRef],
        *,
        pipeline_id: str,
        segmenter: Segmenter,
        limit: int,
        summary: RunSummary,
        prior_attempts: Mapping[str, int] | None = None,
        lost_retries: int = 1,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.pipeline_id, self.segmenter = pipeline_id, segmenter
        self.limit, self.lost_retries = limit, lost_retries
        self.prior = dict(prior_attempts or {})
        self.summary, self.clock = summary, clock
        self.pending: deque[ScanRef] = deque(todo)
        self.in_flight: dict[str, ScanRef] = {}
        self.lost: dict[str, int] = {}  # scan_id -> lost attempts in this run
        self.progress = RunProgress(total=len(todo))
        self.stopped: Stop | None = None

    @property
    def finished(self) -> bool:
        return self.stopped is not None or (not self.pending and not self.in_flight)

    def start(self) -> Step:
        """The first submissions."""
        step = Step()
        self._fill(step)
        return step

    def on_result(self, scan_id: str, result: ScanResult) -> Step:
        """One scan's final task ended (its futures are done with)."""
        step = Step()
        if self.stopped is not None or scan_id not in self.in_flight:
            return step  # cancelled by a stop, or not ours: nothing to commit
        scan = self.in_flight.pop(scan_id)
        if isinstance(result, Measured):
            self._commit(step, MEASUREMENTS_DIR, result.row)
            self.summary.add(result.row)
            self.progress.done += 1
        elif isinstance(result, Failed) and result.reason is ReasonCode.DISK_FULL:
            # Not the scan's fault: stop cleanly; the scan is redone on the re-run.
            self.in_flight[scan_id] = scan
            return self._stop(step, Stop.DISK_FULL)
        else:
            lost_before = self.lost.get(scan_id, 0)
            retry = isinstance(result, Lost) and lost_before < self.lost_retries
            attempt = self.prior.get(scan_id, 0) + lost_before + 1
            self._fail(step, scan, result, attempt, final=not retry)
            if retry:
                self.lost[scan_id] = lost_before + 1
                self.pending.appendleft(scan)
        self._fill(step)
        return step

    def cancel(self) -> Step:
        """Ctrl-C: cancel what is in flight; committed rows stay."""
        log.warning("interrupted: committing finished scans and cancelling %d", len(self.in_flight))
        return self._stop(Step(), Stop.CANCELLED)

    def gpu_gone(self) -> Step:
        """No GPU worker for too long while segment tasks waited: stop, resumable."""
        return self._stop(Step(), Stop.GPU_GONE)

    # ------------------------------------------------------------------------- internals

    def _stop(self, step: Step, why: Stop) -> Step:
        self.stopped = why
        self.summary.interrupted = True
        step.cancel.extend(self.in_flight)
        self.progress.in_flight = 0
        return step

    def _fill(self, step: Step) -> None:
        while self.pending and len(self.in_flight) < self.limit:
            scan = self.pending.popleft()
            self.in_flight[scan.scan_id] = scan
            step.submit.append(scan)
        self.progress.in_flight = len(self.in_flight)

    def _commit(self, step: Step, table: str, row: dict[str, Any]) -> None:
        step.commit.append((table, row))

    def _fail(
        self, step: Step, scan: ScanRef, result: Failed | Lost, attempt: int, *, final: bool
    ) -> None:
        """A ``failures`` row for every failed attempt; the ``failed`` measurements row only
        for the final one."""
        now = self.clock()
        log.warning(
            "scan %s failed at %s (attempt %d%s): %s %s",
            scan.scan_id[:16],
            result.stage.value,
            attempt,
            "" if final else ", retrying",
            result.reason.value,
            result.message,
        )
        failure = {
            "scan_id": scan.scan_id,
            "pipeline_id": self.pipeline_id,
            "cohort": scan.cohort,
            "stage": result.stage.value,
            "reason": result.reason.value,
            "message": result.message,
            "attempt": attempt,
            "worker": result.worker,
            "at": now,
        }
        self._commit(step, FAILURES_DIR, failure)
        if not final:
            return
        row = failed_row(
            scan.scan_id,
            self.pipeline_id,
            self.segmenter,
            scan.cohort,
            result.reason,
            f"{result.stage.value}: {result.message}",
            at=now,
        )
        self._commit(step, MEASUREMENTS_DIR, row)
        self.summary.add(row, result.stage.value)
        self.progress.failed += 1
