"""`screening run`, `screening screen` and `screening compact` from the command line (in process,
each with its own embedded LocalCluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from screening.cli import main
from screening.synthetic.cohort import generate_cohort
from tests.pipeline.conftest import write_phantom_store

REPO = Path(__file__).resolve().parents[2]


def test_run_cli_summary_log_prevalence_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, results = tmp_path / "store", tmp_path / "results"
    write_phantom_store(store, 4, seed=11)
    argv = ["run", str(store), "--out", str(results), "--workers", "1", "--quiet"]
    assert main([*argv, "--segmenter", "reference"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 scan(s) finished (4 ok)" in out
    assert "prevalence of steatosis by site" in out and "site-0" in out and "all" in out
    (log_file,) = (results / "logs").glob("run-*.log")
    assert "4 scan(s) to do" in log_file.read_text()
    assert main([*argv, "--segmenter", "reference"]) == 0
    assert "4 already done" in capsys.readouterr().out
    assert main(["compact", str(results)]) == 0
    assert "superseded" in capsys.readouterr().out
    n = duckdb.sql(
        f"select count(*) from read_parquet('{results}/measurements/*/*.parquet')"
    ).fetchall()
    assert n == [(4,)]


def test_run_cli_missing_store_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--workers", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not a scan store" in err and "screening ingest" in err


def test_screen_one_shot_ingests_runs_and_accounts_for_every_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, n=4, seed=3, n_corrupt=1)
    key = tmp_path / "k"
    assert main(["keygen", str(key)]) == 0
    out = tmp_path / "out"
    argv = ["screen", "--manifest", str(cohort / "manifest.csv"), "--key-file", str(key)]
    argv += ["--reference", str(cohort / "reads.csv"), "--model", "demo"]
    assert main([*argv, "--out", str(out), "--workers", "1", "--quiet", "--no-overlays"]) == 0
    text = capsys.readouterr().out
    assert "rejected 1" in text and "3 of 3 scan(s) finished" in text
    con = duckdb.connect()
    rejected = con.sql(
        f"select reason, message from read_parquet('{out}/store/catalog/*/*.parquet', "
        "hive_partitioning=true) where status = 'rejected'"
    ).fetchall()
    # The corrupt series is rejected at ingest with a reason that names the damaged file.
    assert len(rejected) == 1 and rejected[0][0] and ".dcm" in rejected[0][1]
    # The prevalence table's last line accounts for all four series.
    last = [line for line in text.splitlines() if line.startswith("all ")][-1].split()
    assert last[1] == "4" and last[-2] == "1"  # scans, rejected at ingest
    # ... then statistics against the cohort's reads (keyed by case_id) and the report.
    assert (out / "stats" / "agreement.parquet").is_file()
    assert "AI versus expert readers" in (out / "report.html").read_text()


def test_ctrl_c_commits_finished_scans_and_the_same_command_resumes(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal's Ctrl-C: exit code 130, the rows of
    finished scans are committed, and re-running the command finishes the rest exactly once.
    The segmenter lets 16 scans through (a second each) and holds the rest at a gate, opened
    only after the interrupted run has exited: the run cannot finish before the interrupt."""
    from tests.pipeline.segmenters import GATE_ENV, GATE_FREE_CALLS

    store, results, gate = tmp_path / "store", tmp_path / "results", tmp_path / "gate"
    gate.mkdir()
    ids = write_phantom_store(store, 24, seed=12)
    # As a terminal starts it: with Python's Ctrl-C handler, even when this test itself runs
    # as a background job (non-interactive shells start those with SIGINT ignored, and the
    # child would inherit that).
    interactive = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('screening.cli', run_name='__main__', alter_sys=True)"
    )
    cmd = [
        sys.executable, "-c", interactive, "run", str(store), "--out", str(results),
        "--workers", "2", "--quiet", "--no-overlays",
        "--segment-fn", "tests.pipeline.segmenters:gated_box",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), GATE_ENV: str(gate)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # rows of the free scans commit within 5 s
        while not any((results / "measurements").glob("*/*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, "finished too soon"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        (gate / "open").touch()
    assert proc.returncode == 130, out
    assert "INTERRUPTED" in out or "interrupted" in out
    committed = [r["scan_id"] for r in _rows(results)]
    assert 1 <= len(committed) <= GATE_FREE_CALLS and len(set(committed)) == len(committed)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(committed)} already done" in again.stdout
    assert sorted(r["scan_id"] for r in _rows(results)) == ids


def _rows(results: Path) -> list[dict]:
    from screening.schemas import load_table_schema
    from screening.tables import read_dataset

    return read_dataset(results / "measurements", load_table_schema("measurements")).to_pylist()


def test_run_cli_on_the_shipped_local_cluster_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--cluster cluster/local.yaml` (the file a data engineer starts from) runs the job."""
    store, results = tmp_path / "store", tmp_path / "results"
    ids = write_phantom_store(store, 3, seed=13)
    cluster = str(REPO / "cluster" / "local.yaml")
    argv = ["run", str(store), "--out", str(results), "--cluster", cluster, "--quiet"]
    assert main([*argv, "--segmenter", "reference"]) == 0
    assert "3 of 3 scan(s) finished (3 ok)" in capsys.readouterr().out
    n = duckdb.sql(
        f"select count(distinct scan_id) from read_parquet('{results}/measurements/*/*.parquet')"
    ).fetchall()
    assert n == [(len(ids),)]
