"""Repeatability: recovers a designed within-subject SD; agrees with the paired formula."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from screening.stats.repeatability import repeatability, repeatability_table


def test_two_scans_per_subject_equals_the_paired_difference_formula() -> None:
    rng = np.random.default_rng(0)
    first = rng.normal(50, 10, 30)
    second = first + rng.normal(0, 2, 30)
    subjects = [f"s{i}" for i in range(30)] * 2
    r = repeatability(subjects, np.concatenate([first, second]))
    # For pairs, s_w^2 = sum(d^2) / (2 n) (Bland & Altman 1996).
    expected = math.sqrt(float(np.sum((first - second) ** 2)) / (2 * 30))
    assert r.within_sd == pytest.approx(expected, rel=1e-12)
    assert r.repeatability_coefficient == pytest.approx(1.96 * math.sqrt(2) * expected)
    assert r.n_subjects == 30 and r.n_measurements == 60


def test_designed_within_subject_sd_is_recovered_with_unequal_repeats() -> None:
    rng = np.random.default_rng(1)
    sw, subjects, values = 3.0, [], []
    for i in range(400):
        mean = rng.normal(55, 12)
        for _ in range(int(rng.integers(2, 5))):
            subjects.append(i)
            values.append(mean + rng.normal(0, sw))
    r = repeatability(subjects, values)
    df = r.n_measurements - r.n_subjects
    # s_w^2 * df / sw^2 ~ chi2(df): a 99.9% band for the estimate.
    lo = sw * math.sqrt(1 - 3.3 * math.sqrt(2 / df))
    hi = sw * math.sqrt(1 + 3.3 * math.sqrt(2 / df))
    assert lo < r.within_sd < hi
    assert r.within_cv_pct == pytest.approx(100 * r.within_sd / abs(r.mean))


def test_singletons_missing_values_and_too_few_subjects() -> None:
    r = repeatability(["a", "a", "b", "c"], [40.0, np.nan, 50.0, 51.0])
    assert r.n_subjects == 0 and math.isnan(r.within_sd) and "at least 2" in r.note
    r = repeatability(["a", "a", "b", "b", "c"], [40.0, 41.0, 50.0, 52.0, 99.0])
    assert r.n_subjects == 2 and r.n_measurements == 4  # c has no repeat


def test_table_has_a_row_per_method() -> None:
    t = pa.table(
        {
            "patient_pseudo_id": ["a", "a", "b", "b"],
            "liver_hu_3d": [40.0, 42.0, 50.0, 49.0],
            "liver_hu_roi": [41.0, 41.0, 52.0, 52.0],
        }
    )
    out = repeatability_table(t, methods={"ai_3d": "liver_hu_3d", "ai_roi": "liver_hu_roi"})
    rows = {r["method"]: r for r in out.to_pylist()}
    assert rows["ai_roi"]["within_sd"] == 0.0
    assert rows["ai_3d"]["within_sd"] == pytest.approx(math.sqrt((2 + 0.5) / 2))
