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


def test_keygen_then_ingest_a_synthetic_cohort(tmp_path):
    cohort = tmp_path / "cohort"
    assert _run("synth", "--out", str(cohort), "--n", "2", "--seed", "4", "--quiet").returncode == 0
    key = tmp_path / "secret.key"
    made = _run("keygen", str(key))
    assert made.returncode == 0 and key.stat().st_mode & 0o077 == 0
    again = _run("keygen", str(key))
    assert again.returncode == 2 and "already exists" in again.stderr
    store = tmp_path / "store"
    no_key = _run("ingest", "--store", str(store), "--manifest", str(cohort / "manifest.csv"))
    assert no_key.returncode == 2 and "screening keygen" in no_key.stderr
    assert "Traceback" not in no_key.stderr
    args = ["ingest", "--store", str(store), "--manifest", str(cohort / "manifest.csv")]
    result = _run(*args, "--key-file", str(key), "--workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "ok 2" in result.stdout and "catalog" in result.stdout
    rerun = _run(*args, "--key-file", str(key), "--workers", "1", "--quiet")
    assert rerun.returncode == 0 and "2 already complete" in rerun.stdout
    secret = key.read_text().strip()
    assert secret not in result.stdout + result.stderr + rerun.stderr
    # No patient identifier in any log line, even at debug level, or in any output file name.
    import pydicom

    first = next(p for p in sorted((cohort / "images").rglob("*.dcm")))
    ds = pydicom.dcmread(first)
    identifiers = [str(ds.PatientName), ds.PatientID, ds.AccessionNumber, ds.InstitutionName]
    verbose = _run("-v", *args, "--key-file", str(key), "--workers", "1", "--quiet")
    assert verbose.returncode == 0 and "DEBUG" in verbose.stderr
    logs = result.stdout + result.stderr + verbose.stdout + verbose.stderr
    names = " ".join(str(p) for p in store.rglob("*"))
    for value in identifiers:
        assert value and value not in logs and value not in names, value


def test_train_from_a_manifest_then_segment_with_the_result(tmp_path):
    cohort = tmp_path / "cohort"
    assert _run("synth", "--out", str(cohort), "--n", "3", "--seed", "8", "--quiet").returncode == 0
    model = tmp_path / "model"
    tiny = ["--channels", "4,8,16", "--strides", "2,2", "--res-units", "1", "--patch", "8,32,32"]
    result = _run(
        "train", "--data", str(cohort / "manifest.csv"), "--out", str(model), "--epochs", "1",
        "--iters-per-epoch", "2", "--spacing-mm", "10,6,6", "--device", "cpu", "--quiet", *tiny,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "validation Dice" in result.stdout
    card = (model / "model_card.json").read_text()
    assert "screening train --data" in card and "--spacing-mm 10,6,6" in card
    store = model / "data-store"
    seg = _run("segment", str(store), "--model", str(model), "--device", "cpu", "--quiet")
    assert seg.returncode == 0, seg.stderr
    assert "segmented 3 scan(s), 0 already done" in seg.stdout
    again = _run("segment", str(store), "--model", str(model), "--device", "cpu", "--quiet")
    assert "segmented 0 scan(s), 3 already done" in again.stdout


def test_segment_with_a_tampered_model_fails_clearly(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_card.json").write_text('{"format": "something-else"}')
    result = _run("segment", str(tmp_path), "--model", str(model), "--quiet")
    assert result.returncode == 2 and "not a screening model card" in result.stderr
    assert "Traceback" not in result.stderr
