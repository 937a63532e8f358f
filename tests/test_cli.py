"""The installed `screening` console script, run as a user would."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import screening

BIN = Path(sys.executable).parent / "screening"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300)


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and screening.__version__ in result.stdout


def test_synth_writes_cohort_and_says_what_it_wrote(tmp_path):
    out = tmp_path / "cohort"
    result = _run("synth", "--out", str(out), "--n", "3", "--seed", "5", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 synthetic CT scans" in result.stdout and "manifest.csv" in result.stdout
    with (out / "manifest.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3


def test_synth_error_is_clear_and_nonzero(tmp_path):
    out = tmp_path / "cohort"
    assert _run("synth", "--out", str(out), "--n", "1", "--quiet").returncode == 0
    result = _run("synth", "--out", str(out), "--n", "1", "--quiet")
    assert result.returncode == 2
    assert "not empty" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
