"""`screening stats` end to end: a real run (U-Net demo weights on a local cluster), reads with
designed reader bias, every table written and read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from screening.cli import main
from screening.measure.classify import pdff_from_hu, steatosis_grade
from screening.pipeline import RunConfig, run_cohort
from screening.runtime import ClusterConfig, open_client
from screening.stats.compute import StatsConfig, compute_stats
from screening.synthetic.stores import write_phantom_stores

N = 8
BIAS_B_HU = 6.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("stats-run")
    store, results = root / "store", root / "results"
    ids = write_phantom_stores(store, N, seed=40, liver_hu_range=(22.0, 62.0))
    with open_client(ClusterConfig(workers=1, dashboard=False)) as client:
        run_cohort(store, results, RunConfig(model="demo", overlays=False), client)
    rng = np.random.default_rng(0)
    reads = root / "reads.csv"
    with reads.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scan_id", "reader", "roi_hu", "grade", "pdff_pct"])
        for i, scan_id in enumerate(ids):
            true = 22.0 + 40.0 * i / (N - 1)
            pdff = round(pdff_from_hu(true), 2)  # an external reference standard (MRI-PDFF)
            grade = steatosis_grade(pdff).value  # and a graded one
            w.writerow([scan_id, "A", round(true + rng.normal(0, 1.0), 1), grade, pdff])
            w.writerow([scan_id, "B", round(true + BIAS_B_HU + rng.normal(0, 1.0), 1), grade, pdff])
    return store, results, reads


def test_stats_writes_every_table_and_recovers_the_reader_bias(
    run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    store, results, reads = run
    summary = compute_stats(results, tmp_path, reference=reads, cfg=StatsConfig(n_boot=200, seed=1))
    for name in ("prevalence", "paired", "agreement", "classification", "roc", "segmentation"):
        assert (tmp_path / f"{name}.parquet").is_file(), summary.describe()
    meta = json.loads((tmp_path / "summary.json").read_text())
    assert meta["store"] == str(store.resolve()) and meta["counts"]["eligible"] >= N - 1
    assert "repeatability" in meta["not_computed"]  # one scan per patient here

    agreement = {
        (r["method"], r["reader"]): r
        for r in pq.read_table(tmp_path / "agreement.parquet").to_pylist()
    }
    a, b = agreement[("ai_roi", "A")], agreement[("ai_roi", "B")]
    # AI minus reader: B reads BIAS_B_HU higher than A on the same scans.
    assert b["mean_diff"] - a["mean_diff"] == pytest.approx(-BIAS_B_HU, abs=1.5)
    assert agreement[("reader:A", "B")]["mean_diff"] == pytest.approx(-BIAS_B_HU, abs=1.5)
    assert a["icc"] > 0.9

    cls = pq.read_table(tmp_path / "classification.parquet").to_pylist()
    assert {r["reader"] for r in cls} == {"A", "B", "readers_mean", "pdff_pct"}
    mri = [r for r in cls if r["reader"] == "pdff_pct"]
    # MRI-PDFF >= 5 % is the truth: livers up to ~57 HU are positive under -0.58 HU + 38.2.
    expected_pos = sum(pdff_from_hu(22.0 + 40.0 * i / (N - 1)) >= 5.0 for i in range(N))
    assert all(r["n_pos"] == expected_pos for r in mri)
    assert {r["method"] for r in cls} == {"ai_3d", "ai_2d", "ai_roi"}
    for r in cls:
        assert r["n"] == r["tp"] + r["fp"] + r["tn"] + r["fn"]
        if r["n_pos"] and r["n_neg"]:
            assert r["auc_lo"] <= r["auc"] <= r["auc_hi"]

    grades = pq.read_table(tmp_path / "classification_grades.parquet").to_pylist()
    assert grades and {r["method"] for r in grades} == {"ai_3d", "ai_2d", "ai_roi"}

    seg = pq.read_table(tmp_path / "segmentation.parquet").to_pylist()
    livers = [r for r in seg if r["organ"] == "liver" and r["dice"] is not None]
    assert len(livers) == N and min(r["dice"] for r in livers) > 0.8
    assert {r["group"] for r in seg} <= {"normal", "steatosis", "unknown"}
    prev = pq.read_table(tmp_path / "prevalence.parquet").to_pylist()
    overall = [r for r in prev if r["dimension"] == "site" and r["group"] == "all"]
    assert {r["method"] for r in overall} == {"ai_roi", "ai_3d", "ai_2d"}


def test_stats_cli_without_reads_says_what_was_not_computed(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, results, _ = run
    assert main(["stats", str(results), "--out", str(tmp_path), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "prevalence.parquet" in out and "classification: not computed (no reference reads" in out
    assert not (tmp_path / "classification.parquet").exists()
    assert set(pq.read_table(tmp_path / "prevalence.parquet")["unit"].to_pylist()) == {"scan"}
    per_patient = tmp_path / "per-patient"
    args = ["stats", str(results), "--out", str(per_patient), "--n-boot", "200", "--unit"]
    assert main([*args, "patient", "--no-segmentation"]) == 0
    assert set(pq.read_table(per_patient / "prevalence.parquet")["unit"].to_pylist()) == {"patient"}


def test_stats_cli_spreads_segmentation_metrics_over_a_local_cluster(
    run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, results, _ = run
    args = ["stats", str(results), "--n-boot", "200"]
    assert main([*args, "--out", str(tmp_path / "seq")]) == 0
    assert main([*args, "--out", str(tmp_path / "dask"), "--workers", "1"]) == 0
    seq = pq.read_table(tmp_path / "seq" / "segmentation.parquet").sort_by("scan_id")
    par = pq.read_table(tmp_path / "dask" / "segmentation.parquet").sort_by("scan_id")
    assert par.num_rows == 2 * N and par.equals(seq)
    assert main([*args, "--out", str(tmp_path / "none"), "--no-segmentation"]) == 0
    assert not (tmp_path / "none" / "segmentation.parquet").exists()


def test_report_cli_computes_the_statistics_when_not_given(
    run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, results, reads = run
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--reference", str(reads), "--out", str(out)]) == 0
    text = out.read_text()
    assert "AI versus expert readers" in text and "data:image/png;base64," in text
    assert "not computed: agreement" not in text
