"""The run state machine without Dask: attempts, retries of lost workers, stops, resume."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from screening.pipeline.state import (
    Failed,
    Lost,
    Measured,
    RunState,
    RunSummary,
    Step,
    Stop,
    result_from_record,
)
from screening.pipeline.tasks import ScanRef
from screening.reasons import ReasonCode, Segmenter, Stage, Status
from screening.store.results import FAILURES_DIR, MEASUREMENTS_DIR

PID = "p" * 64
AT = datetime(2026, 12, 5, tzinfo=UTC)


def _scans(n: int) -> list[ScanRef]:
    return [ScanRef(f"scan{i:02d}", "c1", f"/stores/scan{i:02d}.zarr") for i in range(n)]


def _state(n: int, limit: int = 2, **kwargs: Any) -> RunState:
    return RunState(
        _scans(n),
        pipeline_id=PID,
        segmenter=Segmenter.UNET,
        limit=limit,
        summary=RunSummary(PID, Path("/results")),
        clock=lambda: AT,
        **kwargs,
    )


def _ok(scan_id: str) -> Measured:
    return Measured({"scan_id": scan_id, "pipeline_id": PID, "status": Status.OK.value})


LOST = Lost(Stage.SEGMENT, ReasonCode.WORKER_LOST, "the worker process died", "tcp://w1")


def _ids(step: Step) -> list[str]:
    return [s.scan_id for s in step.submit]


def _rows(step: Step, table: str) -> list[dict[str, Any]]:
    return [row for t, row in step.commit if t == table]


def test_start_submits_up_to_the_limit_and_refills_as_scans_finish() -> None:
    state = _state(5, limit=2)
    assert _ids(state.start()) == ["scan00", "scan01"]
    step = state.on_result("scan00", _ok("scan00"))
    assert _ids(step) == ["scan02"]
    assert _rows(step, MEASUREMENTS_DIR) == [_ok("scan00").row]
    assert state.progress.done == 1 and state.progress.in_flight == 2
    for scan_id in ("scan01", "scan02", "scan03", "scan04"):
        state.on_result(scan_id, _ok(scan_id))
    assert state.finished and state.stopped is None
    assert state.summary.by_status == {"ok": 5} and not state.summary.interrupted


def test_worker_lost_once_then_success() -> None:
    state = _state(1)
    state.start()
    step = state.on_result("scan00", LOST)
    assert _ids(step) == ["scan00"], "a lost scan is resubmitted"
    (failure,) = _rows(step, FAILURES_DIR)
    assert failure["attempt"] == 1 and failure["reason"] == "WORKER_LOST"
    assert failure["stage"] == "segment" and failure["worker"] == "tcp://w1"
    assert _rows(step, MEASUREMENTS_DIR) == [], "not final: no failed measurements row"
    step = state.on_result("scan00", _ok("scan00"))
    assert _rows(step, MEASUREMENTS_DIR) == [_ok("scan00").row]
    assert state.finished and state.summary.by_status == {"ok": 1}
    assert state.progress.failed == 0


def test_worker_lost_twice_is_a_final_worker_lost() -> None:
    state = _state(1, lost_retries=1)
    state.start()
    state.on_result("scan00", LOST)
    step = state.on_result("scan00", LOST)
    assert _ids(step) == []
    (failure,) = _rows(step, FAILURES_DIR)
    assert failure["attempt"] == 2
    (row,) = _rows(step, MEASUREMENTS_DIR)
    assert row["status"] == Status.FAILED.value and row["reason"] == "WORKER_LOST"
    assert row["message"].startswith("segment: ") and row["measured_at"] == AT
    assert state.finished
    assert state.summary.by_reason == {"WORKER_LOST": 1}
    assert state.summary.failed_stages == {"segment": 1}


def test_a_failed_stage_is_final_at_once() -> None:
    state = _state(1)
    state.start()
    failed = Failed(Stage.PREPROCESS, ReasonCode.INTERNAL_ERROR, "ValueError: x", "tcp://w2")
    step = state.on_result("scan00", failed)
    assert _ids(step) == [], "only lost workers are retried within the run"
    assert [r["attempt"] for r in _rows(step, FAILURES_DIR)] == [1]
    assert len(_rows(step, MEASUREMENTS_DIR)) == 1 and state.progress.failed == 1


def test_resume_counts_attempts_on_from_earlier_runs() -> None:
    state = _state(2, prior_attempts={"scan01": 2})
    state.start()
    step = state.on_result("scan01", LOST)
    assert _rows(step, FAILURES_DIR)[0]["attempt"] == 3
    step = state.on_result("scan01", LOST)
    assert _rows(step, FAILURES_DIR)[0]["attempt"] == 4
    assert _rows(step, MEASUREMENTS_DIR)[0]["reason"] == "WORKER_LOST"


def test_cancel_mid_run_cancels_in_flight_and_ignores_late_results() -> None:
    state = _state(6, limit=3)
    state.start()
    state.on_result("scan00", _ok("scan00"))
    step = state.cancel()
    assert sorted(step.cancel) == ["scan01", "scan02", "scan03"]
    assert step.submit == [] and step.commit == []
    assert state.stopped is Stop.CANCELLED and state.finished and state.summary.interrupted
    late = state.on_result("scan01", _ok("scan01"))
    assert late == Step(), "a cancelled scan commits nothing"
    assert state.summary.by_status == {"ok": 1}


def test_gpu_workers_gone_stops_and_cancels_everything_in_flight() -> None:
    state = _state(4, limit=2)
    state.start()
    step = state.gpu_gone()
    assert sorted(step.cancel) == ["scan00", "scan01"]
    assert state.stopped is Stop.GPU_GONE and state.summary.interrupted
    assert state.summary.n_finished == 0


def test_disk_full_stops_without_blaming_the_scan() -> None:
    state = _state(3, limit=2)
    state.start()
    full = Failed(Stage.SEGMENT, ReasonCode.DISK_FULL, "no space left", None)
    step = state.on_result("scan00", full)
    assert step.commit == [], "the scan is not failed: it is redone on the re-run"
    assert sorted(step.cancel) == ["scan00", "scan01"]
    assert state.stopped is Stop.DISK_FULL and state.summary.n_finished == 0


def test_task_records_become_typed_results() -> None:
    ok = result_from_record({"ok": True, "stage": "measure", "row": {"scan_id": "a"}})
    assert ok == Measured({"scan_id": "a"})
    failed = result_from_record(
        {"ok": False, "stage": "segment", "reason": "NO_LIVER", "message": "m"}
    )
    assert failed == Failed(Stage.SEGMENT, ReasonCode.NO_LIVER, "m", None)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        _state(1, limit=0)
