"""Prevalence with Wilson CIs: the interval against scipy, the table against its inputs."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from screening._version import __version__
from screening.errors import ConfigError
from screening.measure import MeasureConfig, measure_stores
from screening.reasons import Segmenter
from screening.stats import format_prevalence, prevalence_table, wilson_interval
from screening.store.catalog import CatalogWriter
from tests.pipeline.conftest import write_phantom_store


@given(n=st.integers(1, 2000), frac=st.floats(0, 1), conf=st.sampled_from([0.9, 0.95, 0.99]))
def test_wilson_matches_scipy(n: int, frac: float, conf: float) -> None:
    k = round(frac * n)
    lo, hi = wilson_interval(k, n, conf)
    ref = binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    assert float(lo) == pytest.approx(ref.low, abs=1e-9)
    assert float(hi) == pytest.approx(ref.high, abs=1e-9)


def test_wilson_is_vectorised_and_undefined_for_empty_groups() -> None:
    lo, hi = wilson_interval([0, 5, 0], [10, 10, 0])
    assert lo.shape == (3,) and np.isnan(lo[2]) and np.isnan(hi[2])
    assert lo[0] == 0.0 and 0 < hi[0] < 0.3 and lo[1] < 0.5 < hi[1]


def test_prevalence_table_accounts_for_every_scan(tmp_path: Path) -> None:
    store, results = tmp_path / "store", tmp_path / "results"
    # Livers at 20, 35, 50, 65 HU on sites 0/1/0/1: one steatotic scan per site.
    write_phantom_store(store, 4, seed=21)
    writer = CatalogWriter(store)
    writer.add(
        {
            "scan_id": "rejected-one",
            "cohort": "test",
            "site": "site-0",
            "status": "rejected",
            "reason": "TOO_FEW_SLICES",
            "engine_version": __version__,
            "ingested_at": datetime.now(UTC),
        }
    )
    writer.flush()
    measure_stores(store, results, MeasureConfig(), segmenter=Segmenter.REFERENCE, overlays=False)
    table = prevalence_table(results, store, by="site", method="ai_roi")
    rows = {r["group"]: r for r in table.to_pylist()}
    assert list(rows) == ["site-0", "site-1", "all"]
    parts = (
        "n_ingest_rejected",
        "n_not_run",
        "n_failed",
        "n_contrast_excluded",
        "n_undecided",
        "n_decided",
    )
    for r in rows.values():  # every scan lands in exactly one column
        assert sum(r[c] for c in parts) == r["n_scans"]
    assert (rows["site-0"]["n_scans"], rows["site-0"]["n_ingest_rejected"]) == (3, 1)
    assert (rows["all"]["n_decided"], rows["all"]["n_steatosis"]) == (4, 2)
    assert rows["all"]["prevalence_pct"] == pytest.approx(50.0)
    lo, hi = wilson_interval(2, 4)
    assert rows["all"]["ci_lo_pct"] == pytest.approx(100 * float(lo))
    assert rows["all"]["ci_hi_pct"] == pytest.approx(100 * float(hi))
    text = format_prevalence(table, "site", "ai_roi")
    assert "50.0%" in text and "site-1" in text


def test_prevalence_per_patient_counts_each_patient_once(tmp_path: Path) -> None:
    """Two scans of one patient and a rejected scan of another: per scan they count twice,
    per patient once, by the earliest decided scan (by study year)."""
    from screening.store.catalog import read_catalog

    store, results = tmp_path / "store", tmp_path / "results"
    write_phantom_store(store, 4, seed=21)  # livers at 20, 35, 50, 65 HU
    measure_stores(store, results, MeasureConfig(), segmenter=Segmenter.REFERENCE, overlays=False)
    measured = duckdb.sql(
        f"select scan_id from read_parquet('{results}/measurements/*/*.parquet') "
        "order by liver_hu_roi"
    ).fetchall()
    hu20, hu35, hu50, hu65 = (r[0] for r in measured)
    patient_year = {  # P1: 20 HU in 2002 and 50 HU in 2001 -> by 2001, not steatotic
        hu20: ("P1", 2002),
        hu50: ("P1", 2001),
        hu35: ("P2", 2000),  # P2 also has a rejected scan, earlier: the decided one counts
        hu65: ("P3", 2000),
    }
    later = datetime.now(UTC)
    writer = CatalogWriter(store)
    for row in read_catalog(store).to_pylist():  # the same scans, later rows: pseudonyms set
        patient, year = patient_year[row["scan_id"]]
        writer.add({**row, "patient_pseudo_id": patient, "study_year": year, "ingested_at": later})
    for scan_id, patient in (("rejected-p2", "P2"), ("rejected-p4", "P4")):
        writer.add(
            {
                "scan_id": scan_id,
                "patient_pseudo_id": patient,
                "study_year": 1999,
                "cohort": "test",
                "site": "site-0",
                "status": "rejected",
                "reason": "TOO_FEW_SLICES",
                "engine_version": __version__,
                "ingested_at": later,
            }
        )
    writer.flush()

    per_scan = prevalence_table(results, store, by="cohort", method="ai_roi")
    per_patient = prevalence_table(results, store, by="cohort", method="ai_roi", unit="patient")
    scan_all = per_scan.to_pylist()[-1]
    patient_all = per_patient.to_pylist()[-1]
    assert (scan_all["n_scans"], scan_all["n_decided"], scan_all["n_steatosis"]) == (6, 4, 2)
    assert scan_all["unit"] == "scan" and patient_all["unit"] == "patient"
    assert (patient_all["n_scans"], patient_all["n_decided"]) == (4, 3)  # P1, P2, P3, P4
    assert patient_all["n_steatosis"] == 1 and patient_all["n_ingest_rejected"] == 1  # P2; P4
    assert patient_all["prevalence_pct"] == pytest.approx(100 / 3)
    assert "per patient" in format_prevalence(per_patient, "cohort", "ai_roi")
    with pytest.raises(ConfigError, match="unit must be one of"):
        prevalence_table(results, store, unit="visit")


def test_direct_age_standardisation_against_a_hand_computation() -> None:
    import pyarrow as pa

    from screening.stats import prevalence as prev

    by_age = pa.Table.from_pylist(
        [
            {"group": "<40", "n_decided": 50, "n_steatosis": 5},
            {"group": "40-49", "n_decided": 40, "n_steatosis": 10},
            {"group": "80+", "n_decided": 0, "n_steatosis": 0},
            {"group": "unknown", "n_decided": 7, "n_steatosis": 7},
            {"group": "all", "n_decided": 97, "n_steatosis": 22},
        ]
    )
    standard = {"<40": 3.0, "40-49": 1.0, "80+": 1.0}
    got = prev.age_standardised(by_age, standard)
    p1, p2 = 5 / 50, 10 / 40
    est = (3 * p1 + 1 * p2) / 4  # 80+ has no decided scan: left out, weights renormalised
    se = math.sqrt(9 * p1 * (1 - p1) / 50 + 1 * p2 * (1 - p2) / 40) / 4
    assert got["prevalence_pct"] == pytest.approx(100 * est)
    assert got["ci_lo_pct"] == pytest.approx(100 * (est - 1.959964 * se), abs=1e-4)
    assert got["n_bands_missing"] == 1 and got["n_decided"] == 90
    with pytest.raises(ConfigError, match="not in the standard"):
        prev.age_standardised(by_age, {"<40": 1.0})


def test_age_bands_in_sql_match_the_python_labels(tmp_path: Path) -> None:
    from screening.stats import prevalence as prev

    ages = [None, 12.0, 39.9, 40.0, 55.5, 79.99, 80.0, 101.0]
    sql = prev._age_band_sql(prev.AGE_BAND_EDGES).replace("s.patient_age_years", "a")
    con = duckdb.connect()
    got = [
        con.sql(f"select {sql} from (select cast(? as double) as a)", params=[a]).fetchall()[0][0]
        for a in ages
    ]
    assert got == [prev.age_band_label(a) for a in ages]
