"""`screening run` on real CT with no --model: the shipped real-CT liver model, end to end.

The TotalSegmentator example (non-contrast, 3 mm) is ingested through a manifest with its
reference masks, then run twice through the CLI on a real local cluster: with the default
model (liver Dice against the reference on the stored grid, spleen withheld with a reason) and
with the synthetic-only demo model (every row flagged, the summary warns).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from screening.cli import main

pytestmark = pytest.mark.real_data


def _rows(results: Path) -> list[dict]:
    from screening.schemas import load_table_schema
    from screening.tables import read_dataset

    return read_dataset(results / "measurements", load_table_schema("measurements")).to_pylist()


@pytest.fixture(scope="module")
def ts_store(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ts = real_data / "totalsegmentator-example"
    root = tmp_path_factory.mktemp("real")
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "liver_mask", "spleen_mask", "case_id"])
        w.writerow([ts / "example_ct.nii.gz", ts / "example_seg/liver.nii.gz",
                    ts / "example_seg/spleen.nii.gz", "A"])  # fmt: skip
    store = root / "store"
    assert main(["ingest", "--store", str(store), "--manifest", str(manifest),
                 "--workers", "1", "--quiet"]) == 0  # fmt: skip
    return store


def test_default_run_segments_real_ct_with_the_real_model(
    ts_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from screening.store.scan import open_scan_store

    results = tmp_path / "results"
    argv = ["run", str(ts_store), "--out", str(results), "--workers", "1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 of 1 scan(s) finished (1 ok)" in out and "WARNING" not in out
    (row,) = _rows(results)
    assert (results / row["overlay_file"]).is_file()  # drawn without a spleen
    (path,) = (ts_store / "scans").glob("*.zarr")
    scan = open_scan_store(path)
    seg, ref = scan.read("seg"), scan.read("seg_reference")
    attrs = scan.derived_attrs("seg")
    assert attrs is not None and attrs["backend"] == "liver3mm" and attrs["organs"] == ["liver"]
    assert row["model_id"] == attrs["model_id"]
    liver, ref_liver = seg == 1, ref == 1
    dice = 2 * float((liver & ref_liver).sum()) / float(liver.sum() + ref_liver.sum())
    assert dice >= 0.92, dice
    assert not np.any(seg == 2)
    # No spleen class: spleen values and L/S withheld with a reason, never guessed.
    assert row["spleen_volume_ml"] is None and row["liver_spleen_ratio"] is None
    assert "SPLEEN_NOT_SEGMENTED" in row["qc_flags"] and "NO_SPLEEN" not in row["qc_flags"]
    assert "MODEL_SYNTHETIC_ONLY" not in row["qc_flags"]
    # README: eroded median 47 HU, not steatotic
    assert row["status"] == "ok" and row["steatosis_3d"] is False
    assert row["liver_hu_3d"] == pytest.approx(47, abs=8)


def test_the_synthetic_demo_model_on_real_ct_is_flagged_and_warned(
    ts_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    argv = ["run", str(ts_store), "--out", str(results), "--workers", "1", "--quiet"]
    assert main([*argv, "--model", "demo", "--no-overlays"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: 1 scan(s) not made by `screening synth`" in out
    (row,) = _rows(results)
    assert "MODEL_SYNTHETIC_ONLY" in row["qc_flags"]
    assert main(["report", str(results), "--out", str(tmp_path / "report.html")]) == 0
    assert "MODEL_SYNTHETIC_ONLY" in (tmp_path / "report.html").read_text()
