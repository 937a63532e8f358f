"""`screening run`, `screening screen` and `screening compact` from the command line (in process,
each with its own embedded LocalCluster)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from screening.cli import main
from screening.synthetic.cohort import generate_cohort
from tests.engine.conftest import write_phantom_store


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
