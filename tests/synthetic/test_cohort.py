"""Cohorts: files, contracts, determinism from the seed, truth consistency."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pydicom
import pytest

from screening.errors import ConfigError
from screening.measure.classify import pdff_from_hu, steatosis_grade
from screening.schemas import load_table_schema
from screening.synthetic.cohort import DEFAULT_SITES, generate_cohort


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _typed(path: Path, table: str) -> pa.Table:
    schema = load_table_schema(table)
    types = {c.name: c.arrow_type for c in schema.columns}
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "c"
    summary = generate_cohort(out, n=8, seed=3, prevalence=0.5, repeat_fraction=0.3)
    return out, summary


def test_layout_and_manifest(cohort):
    out, summary = cohort
    assert summary.n_cases == 8
    for name in ("manifest.csv", "truth.csv", "reads.csv", "cohort.json"):
        assert (out / name).is_file()
    rows = _read_csv(out / "manifest.csv")
    assert list(rows[0]) == ["image", "liver_mask", "spleen_mask", "cohort", "site", "case_id"]
    assert {r["site"] for r in rows} == {s.name for s in DEFAULT_SITES}
    for r in rows:
        image = out / r["image"]
        assert image.exists()
        if image.is_dir():
            files = sorted(image.glob("*.dcm"))
            assert len(files) >= 30
            pydicom.dcmread(files[0])
        mask = nib.load(out / r["liver_mask"])
        assert np.asanyarray(mask.dataobj).max() == 1


def test_truth_and_reads_match_their_schemas(cohort):
    out, _ = cohort
    truth = _typed(out / "truth.csv", "synthetic_truth")
    load_table_schema("synthetic_truth").validate(truth)
    reads = _typed(out / "reads.csv", "reference_reads")
    load_table_schema("reference_reads").validate(reads)
    assert set(reads.column("case_id").to_pylist()) <= set(truth.column("case_id").to_pylist())
    assert set(reads.column("reader").to_pylist()) >= {"R1", "R2"}


def test_truth_is_internally_consistent(cohort):
    out, _ = cohort
    for row in _read_csv(out / "truth.csv"):
        hu = float(row["liver_hu_true"])
        assert (row["steatosis"] == "True") == (hu <= 40.0)
        assert float(row["pdff_true_pct"]) == pytest.approx(pdff_from_hu(hu), abs=1e-3)
        assert row["steatosis_grade"] == steatosis_grade(float(row["pdff_true_pct"])).value
        if row["liver_truncated"] == "False":
            assert float(row["liver_volume_ml"]) == pytest.approx(
                float(row["liver_volume_full_ml"]), rel=0.06
            )


def test_repeat_scans_share_subject_and_study(cohort):
    out, _ = cohort
    truth = _read_csv(out / "truth.csv")
    subjects = [r["subject_id"] for r in truth]
    repeated = {s for s in subjects if subjects.count(s) == 2}
    assert repeated, "repeat_fraction=0.3 over 8 cases should give a repeat with this seed"
    pair = [r for r in truth if r["subject_id"] in repeated][:2]
    assert pair[0]["liver_hu_true"] == pair[1]["liver_hu_true"]
    assert pair[0]["case_id"] != pair[1]["case_id"]


def test_same_seed_same_files_other_seed_differs(tmp_path, cohort):
    out, _ = cohort
    again = tmp_path / "again"
    generate_cohort(again, n=8, seed=3, prevalence=0.5, repeat_fraction=0.3)
    assert _digest_tree(again) == _digest_tree(out)
    other = tmp_path / "other"
    generate_cohort(other, n=8, seed=4, prevalence=0.5, repeat_fraction=0.3)
    assert _digest_tree(other) != _digest_tree(out)


@pytest.mark.parametrize(("prevalence", "expected"), [(0.0, 0), (1.0, 4)])
def test_prevalence_extremes(tmp_path, prevalence, expected):
    summary = generate_cohort(tmp_path / "p", n=4, seed=1, prevalence=prevalence)
    assert summary.n_steatosis == expected


def test_refuses_to_overwrite_without_flag(tmp_path):
    out = tmp_path / "c"
    generate_cohort(out, n=1, seed=0)
    with pytest.raises(ConfigError, match="overwrite"):
        generate_cohort(out, n=1, seed=0)
    generate_cohort(out, n=2, seed=0, overwrite=True)
    assert len(_read_csv(out / "manifest.csv")) == 2
    assert not list(tmp_path.glob(".c.tmp-*"))


def test_grades():
    assert steatosis_grade(pdff_from_hu(60.0)).value == "none"
    assert steatosis_grade(pdff_from_hu(45.0)).value == "mild"
    assert steatosis_grade(pdff_from_hu(30.0)).value == "moderate"
    assert steatosis_grade(pdff_from_hu(0.0)).value == "severe"
    assert pdff_from_hu(100.0) == 0.0 and pdff_from_hu(-200.0) == 100.0


def test_fake_identifiers_stay_inside_the_dicom_files(cohort):
    """The DICOM carries fake identifiers for privacy tests; no cohort output repeats them."""
    out, _ = cohort
    identifiers = set()
    for folder in (p for p in (out / "images").iterdir() if p.is_dir()):
        ds = pydicom.dcmread(next(folder.glob("*.dcm")))
        identifiers |= {
            str(ds.PatientName),
            ds.PatientID,
            ds.PatientBirthDate,
            ds.AccessionNumber,
            ds.InstitutionName,
        }
    assert identifiers
    texts = [
        (out / n).read_text() for n in ("manifest.csv", "truth.csv", "reads.csv", "cohort.json")
    ]
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    for ident in identifiers:
        assert all(ident not in t for t in texts), f"{ident!r} leaked into a cohort table"
        assert all(ident not in n for n in names), f"{ident!r} leaked into a file name"
