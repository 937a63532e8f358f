"""The distributed run on a real local Dask cluster: results, resume, faults, GPU routing.

No mocks: worker processes are really SIGKILLed, the client really dies in a subprocess,
Parquet is read back by DuckDB/pyarrow, and the U-Net test runs the shipped demo weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from distributed import Client

from screening.measure import MeasureConfig, measure_stores
from screening.pipeline import RunConfig, run_cohort
from screening.reasons import Segmenter
from screening.runtime import ClusterConfig, open_client
from screening.schemas import load_table_schema
from screening.store import compact_results
from screening.store.scan import open_scan_store
from screening.tables import read_dataset
from tests.pipeline import segmenters
from tests.pipeline.conftest import fresh_cluster, write_phantom_store

MEASUREMENTS = load_table_schema("measurements")
FAILURES = load_table_schema("failures")
REPO = Path(__file__).resolve().parents[2]


def custom(fn: object) -> RunConfig:
    return RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=fn, overlays=False)  # type: ignore[arg-type]


def rows(results: Path) -> list[dict]:
    return read_dataset(results / "measurements", MEASUREMENTS).to_pylist()


def test_unet_run_streams_rows_resumes_and_matches_measure(tmp_path: Path, scheduler: str) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 4, seed=1)
    results = tmp_path / "results"
    with Client(scheduler) as client:
        first = run_cohort(store, results, RunConfig(model="demo"), client)
        again = run_cohort(store, results, RunConfig(model="demo"), client)
    assert first.n_todo == 4 and first.by_status == {"ok": 4}, first.describe()
    assert again.n_todo == 0 and again.n_skipped == 4  # resume: nothing redone
    con = duckdb.connect()
    got = con.sql(
        f"select scan_id, pipeline_id, model_id, segmenter, device, preprocess_s, segment_s "
        f"from read_parquet('{results}/measurements/*/*.parquet')"
    ).fetchall()
    assert sorted(r[0] for r in got) == ids  # exactly one row per scan
    assert {r[1] for r in got} == {first.pipeline_id}
    assert all(r[2] and r[3] == "unet" and r[4] == "cpu" and r[5] is None and r[6] > 0 for r in got)
    # Without GPU workers the stages run as one task: no `prep` round trip through the store.
    seg_attrs = open_scan_store(store / "scans" / f"{ids[0]}.zarr").derived_attrs("seg")
    assert seg_attrs is not None and seg_attrs["used_prep"] is False
    # `screening measure` names the same pipeline from the stored attributes: all skipped.
    summary = measure_stores(store, results, MeasureConfig(), segmenter=Segmenter.UNET)
    assert summary.n_skipped == 4 and not summary.by_status
    # Overlays are on disk where the rows say.
    overlay = rows(results)[0]["overlay_file"]
    assert (results / overlay).is_file()
    # The demo model is synthetic-only, but these scans are synthetic: no domain flag.
    assert seg_attrs["training_domain"] == "synthetic"
    assert not any("MODEL_SYNTHETIC_ONLY" in r["qc_flags"] for r in rows(results))


def test_reference_run_equals_in_process_measure(tmp_path: Path, scheduler: str) -> None:
    store = tmp_path / "store"
    write_phantom_store(store, 3, seed=2)
    with Client(scheduler) as client:
        run_cohort(store, tmp_path / "run", RunConfig(segmenter=Segmenter.REFERENCE), client)
    measure_stores(store, tmp_path / "local", MeasureConfig(), segmenter=Segmenter.REFERENCE)
    key = "scan_id"
    a = {r[key]: r for r in rows(tmp_path / "run")}
    b = {r[key]: r for r in rows(tmp_path / "local")}
    assert a.keys() == b.keys() and len(a) == 3
    for scan_id, row in a.items():
        assert row["pipeline_id"] == b[scan_id]["pipeline_id"]
        assert row["liver_hu_3d"] == pytest.approx(b[scan_id]["liver_hu_3d"], abs=1e-9)
        assert row["liver_hu_roi"] == pytest.approx(b[scan_id]["liver_hu_roi"], abs=1e-9)


def test_poison_scan_fails_with_reason_and_the_rest_finish(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 5, seed=3, poison=2)
    results = tmp_path / "results"
    with fresh_cluster() as address, Client(address) as client:
        summary = run_cohort(store, results, custom(segmenters.poison), client)
    by_scan = {r["scan_id"]: r for r in rows(results)}
    assert sorted(by_scan) == ids
    assert by_scan[ids[2]]["status"] == "failed"
    assert by_scan[ids[2]]["reason"] == "WORKER_LOST"
    assert all(by_scan[s]["status"] == "ok" for s in ids if s != ids[2])
    failures = read_dataset(results / "failures", FAILURES).to_pylist()
    # The poison scan: its first loss is retried once in the run, the second is final.
    poison = sorted((f for f in failures if f["scan_id"] == ids[2]), key=lambda f: f["attempt"])
    assert [(f["stage"], f["reason"], f["attempt"]) for f in poison] == [
        ("scan", "WORKER_LOST", 1),  # one fused task per scan without GPU workers
        ("scan", "WORKER_LOST", 2),
    ]
    assert all(f["worker"] and f["worker"].startswith("tcp://") for f in poison)
    # Scans queued on a worker the poison killed may lose an attempt too, then succeed.
    assert all(f["reason"] == "WORKER_LOST" for f in failures), [
        (f["scan_id"], f["stage"], f["reason"], f["attempt"], f["message"]) for f in failures
    ]
    assert summary.failed_stages == {"scan": 1}
    # A re-run tries the failed scan again (attempts 3 and 4); compaction keeps one row.
    with fresh_cluster() as address, Client(address) as client:
        retry = run_cohort(store, results, custom(segmenters.poison), client)
    assert retry.n_todo == 1 and retry.n_skipped == 4
    failures = read_dataset(results / "failures", FAILURES).to_pylist()
    attempts = sorted(f["attempt"] for f in failures if f["scan_id"] == ids[2])
    assert attempts == [1, 2, 3, 4]
    assert Counter(r["scan_id"] for r in rows(results))[ids[2]] == 1  # compacted after retry


def test_sigkill_of_a_worker_mid_run_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 8, seed=4)
    calls = tmp_path / "calls"
    calls.mkdir()
    results = tmp_path / "results"
    with fresh_cluster() as address, Client(address) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]

        def kill_when_busy() -> None:
            while len(list(calls.iterdir())) < 2:
                time.sleep(0.05)
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        summary = run_cohort(
            store, results, custom(segmenters.CountingSegmenter(str(calls), 0.5)), client
        )
        killer.join(timeout=30)
        assert not killer.is_alive()
        assert victim not in client.run(os.getpid).values()  # it really died
    assert summary.by_status == {"ok": 8}, summary.describe()
    assert sorted(r["scan_id"] for r in rows(results)) == ids


def test_killed_client_resumes_without_duplicates_or_recomputation(
    tmp_path: Path, scheduler: str
) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 10, seed=5)
    calls = tmp_path / "calls"
    calls.mkdir()
    results = tmp_path / "results"
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(f"""
        import cloudpickle
        from distributed import Client
        from screening.pipeline import RunConfig, run_cohort
        from screening.reasons import Segmenter
        from tests.pipeline import segmenters
        cloudpickle.register_pickle_by_value(segmenters)
        if __name__ == "__main__":
            seg = segmenters.CountingSegmenter({str(calls)!r}, 0.6)
            cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=seg, overlays=False,
                            flush_rows=1, max_in_flight=2)
            with Client({scheduler!r}) as client:
                run_cohort({str(store)!r}, {str(results)!r}, cfg, client)
        """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        deadline = time.monotonic() + 120
        while len(rows(results)) < 3:  # some rows committed, the run not finished
            assert proc.poll() is None, "the client finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = {r["scan_id"] for r in rows(results)}
    assert 3 <= len(committed) < 10
    digests = {
        s: segmenters.ct_digest(open_scan_store(store / "scans" / f"{s}.zarr").read("ct"))
        for s in ids
    }
    calls_before = Counter(p.name.split("-")[0] for p in calls.iterdir())
    with Client(scheduler) as client:
        seg = segmenters.CountingSegmenter(str(calls), 0.0)
        summary = run_cohort(store, results, custom(seg), client)
    calls_after = Counter(p.name.split("-")[0] for p in calls.iterdir())
    assert summary.n_skipped == len(committed)
    assert summary.n_todo == 10 - len(committed)
    for s in committed:  # committed scans were not recomputed
        assert calls_after[digests[s]] == calls_before[digests[s]] == 1
    got = Counter(r["scan_id"] for r in rows(results))
    assert sorted(got) == ids and set(got.values()) == {1}  # no duplicate, no lost row


def test_truncated_part_is_never_read_and_its_scans_are_redone(
    tmp_path: Path, scheduler: str
) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 3, seed=6)
    results = tmp_path / "results"
    with Client(scheduler) as client:
        run_cohort(store, results, custom(segmenters.box_liver), client)
    (part,) = (results / "measurements").glob("*/*.parquet")
    # A crash on a filesystem without atomic rename: a visible part with half its bytes,
    # and a hidden temporary file as our own writer would leave it.
    data = part.read_bytes()
    bad = part.with_name("part-crashed.parquet")
    bad.write_bytes(data[: len(data) // 2])
    part.rename(part.with_name(".part-x.parquet.tmp"))
    assert read_dataset(results / "measurements", MEASUREMENTS).num_rows == 0
    with Client(scheduler) as client:
        summary = run_cohort(store, results, custom(segmenters.box_liver), client)
    assert summary.n_todo == 3
    assert sorted(r["scan_id"] for r in rows(results)) == ids
    assert not bad.exists()
    assert (results / "quarantine" / "measurements" / bad.parent.name / bad.name).is_file()
    # DuckDB reading the dataset folder sees only the real rows.
    n = duckdb.sql(
        f"select count(*) from read_parquet('{results}/measurements/*/*.parquet')"
    ).fetchall()
    assert n == [(3,)]


def test_compact_merges_parts_and_keeps_every_scan(tmp_path: Path, scheduler: str) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 4, seed=7)
    results = tmp_path / "results"
    cfg = RunConfig(
        segmenter=Segmenter.CUSTOM,
        segment_fn=segmenters.box_liver,
        overlays=False,
        flush_rows=1,
    )
    with Client(scheduler) as client:
        run_cohort(store, results, cfg, client)
    parts = list((results / "measurements").glob("*/*.parquet"))
    assert len(parts) == 4
    before = read_dataset(results / "measurements", MEASUREMENTS).sort_by("scan_id")
    dropped = compact_results(results)
    after = read_dataset(results / "measurements", MEASUREMENTS).sort_by("scan_id")
    assert dropped["measurements"] == 0
    assert len(list((results / "measurements").glob("*/*.parquet"))) == 1
    assert after.to_pylist() == before.to_pylist()
    assert (
        sorted(
            pq.read_table(next((results / "measurements").glob("*/*.parquet")))[
                "scan_id"
            ].to_pylist()
        )
        == ids
    )


def test_segment_tasks_go_to_gpu_workers_only(tmp_path: Path) -> None:
    """An embedded cluster with one worker tagged GPU=1 (a CPU process standing in): every
    segment task runs there, the others anywhere; with no tagged worker nothing waits."""
    store = tmp_path / "store"
    write_phantom_store(store, 4, seed=8)
    cfg = ClusterConfig(workers=1, gpu_workers=1, dashboard=False)
    with open_client(cfg) as client:
        info = client.scheduler_info(n_workers=-1)["workers"]
        gpu = [a for a, w in info.items() if w.get("resources", {}).get("GPU")]
        assert len(info) == 2 and len(gpu) == 1
        from distributed import get_task_stream

        with get_task_stream(client) as ts:
            summary = run_cohort(
                store, tmp_path / "results", RunConfig(model="demo", overlays=False), client
            )
    assert summary.gpu_workers == 1 and summary.by_status == {"ok": 4}
    where = {t["key"]: t["worker"] for t in ts.data}
    seg_workers = {w for k, w in where.items() if str(k).startswith("segment-")}
    assert seg_workers == set(gpu)
    got = rows(tmp_path / "results")
    assert np.all([r["device"] == "cpu" for r in got])
    # Chained stages: the CPU task wrote `prep`, the GPU task used it.
    assert all(r["preprocess_s"] > 0 for r in got)
    seg = open_scan_store(store / "scans" / f"{got[0]['scan_id']}.zarr").derived_attrs("seg")
    assert seg is not None and seg["used_prep"] is True


def test_a_result_lost_with_its_worker_is_worker_lost() -> None:
    """A future that ends with neither a result nor an error (a worker died holding the
    finished result; the client's gather failed) is a lost attempt, retried, not a bug."""
    from screening.pipeline.run import _describe_lost
    from screening.reasons import ReasonCode

    reason, message, _ = _describe_lost(None, "lost")
    assert reason is ReasonCode.WORKER_LOST and "lost before it was collected" in message


def test_the_real_model_prepares_on_cpu_workers_and_segments_on_the_gpu_worker(
    tmp_path: Path,
) -> None:
    """With GPU workers the shipped real-CT model's own preprocessing (3 mm image, median
    filter) runs in the CPU task and lands in ``prep``, so the GPU worker only runs the network
    and post-processing; the mask is the one the in-memory path gives."""
    from screening.model.liver3mm.inference import Liver3mmConfig, segment_liver_3mm
    from screening.model.liver3mm.model import load_liver3mm

    store = tmp_path / "store"
    write_phantom_store(store, 1, seed=8)
    cfg = ClusterConfig(workers=1, gpu_workers=1, dashboard=False)
    with open_client(cfg) as client:
        summary = run_cohort(
            store, tmp_path / "results", RunConfig(model="liver3mm", overlays=False), client
        )
    assert summary.gpu_workers == 1 and summary.by_status == {"ok": 1}
    (row,) = rows(tmp_path / "results")
    assert row["preprocess_s"] > 0
    scan = open_scan_store(store / "scans" / f"{row['scan_id']}.zarr")
    prep, seg = scan.derived_attrs("prep"), scan.derived_attrs("seg")
    assert prep is not None and prep["spacing_mm"] == [3.0, 3.0, 3.0]
    assert seg is not None and seg["used_prep"] is True
    ct = scan.read("ct")
    alone = segment_liver_3mm(load_liver3mm().network, ct, scan.spacing_mm, Liver3mmConfig())
    assert alone.liver.any() and np.array_equal(scan.read("seg") == 1, alone.liver)


def test_run_stops_with_a_clear_error_when_every_gpu_worker_is_gone(tmp_path: Path) -> None:
    """Segment tasks wait for a GPU worker; when the only one leaves for good, the run
    commits what finished and raises ClusterError instead of hanging; a re-run resumes."""
    from screening.errors import ClusterError

    store, results = tmp_path / "store", tmp_path / "results"
    ids = write_phantom_store(store, 6, seed=9)
    cfg = RunConfig(model="demo", overlays=False, gpu_wait_s=1.0, max_in_flight=2)
    with open_client(ClusterConfig(workers=1, gpu_workers=1, dashboard=False)) as client:
        gpu = [
            a
            for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            if w.get("resources", {}).get("GPU")
        ]

        def retire_gpu_after_first_seg() -> None:
            while not any(store.glob("scans/*.zarr/seg")):
                time.sleep(0.05)
            client.retire_workers(workers=gpu, close_workers=True)

        threading.Thread(target=retire_gpu_after_first_seg, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="no GPU worker"):
            run_cohort(store, results, cfg, client)
        assert time.monotonic() - t0 < 60
    done = [r["scan_id"] for r in rows(results)]
    assert len(done) < 6 and len(set(done)) == len(done)
    with open_client(ClusterConfig(workers=1, gpu_workers=0, dashboard=False)) as client:
        again = run_cohort(store, results, RunConfig(model="demo", overlays=False), client)
    assert again.n_skipped == len(done)
    assert sorted(r["scan_id"] for r in rows(results)) == ids


def test_catalog_scans_without_a_complete_store_are_reported_not_dropped(
    tmp_path: Path, scheduler: str
) -> None:
    from screening.store.scan import COMPLETION_MARKER

    store = tmp_path / "store"
    ids = write_phantom_store(store, 3, seed=10)
    (store / "scans" / f"{ids[1]}.zarr" / COMPLETION_MARKER).unlink()  # a crashed write
    with Client(scheduler) as client:
        summary = run_cohort(
            store, tmp_path / "results", RunConfig(segmenter=Segmenter.REFERENCE), client
        )
    assert summary.n_todo == 2 and summary.n_missing_store == 1
    assert "1 scan(s) of the catalog have no complete store" in summary.describe()
