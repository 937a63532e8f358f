"""Classification statistics: point estimates against sklearn, the vectorised paired bootstrap
against a slow per-resample loop on the same indices, and a synthetic cohort with known truth."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy.stats import norm
from sklearn.metrics import confusion_matrix, recall_score, roc_auc_score, roc_curve

from screening.errors import ConfigError
from screening.stats.classification import (
    CLASSIFICATION_SCHEMA,
    auc,
    bootstrap_classification,
    bootstrap_indices,
    classification_table,
    confusion,
    grade_roc_table,
    reference_standard_truth,
    roc_band,
    roc_points,
    sensitivity,
    specificity,
)

# Scores on a coarse integer grid so ties are common, both classes present.
labelled = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-5, 5), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda t: 0 < sum(t) < len(t)),
    )
)


def _cohort(
    n: int, seed: int, sd_hu: float = 12.0, prevalence: float = 0.3
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Liver HU for n cases: steatotic ~ N(30, sd), others ~ N(55, sd) (overlapping classes)."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prevalence
    hu = np.where(truth, 30.0, 55.0) + rng.normal(0.0, sd_hu, n)
    return np.round(hu, 0), truth  # whole HU: ties, as in real reads


def _slow_bootstrap(
    hu: NDArray[np.float64], truth: NDArray[np.bool_], idx: NDArray[np.int64], thr: float
) -> dict[str, NDArray[np.float64]]:
    """The plain loop: each resample on its own with sklearn, NaN values left out per method."""
    out = {k: np.full((hu.shape[0], idx.shape[0]), np.nan) for k in ("auc", "sens", "spec")}
    for m in range(hu.shape[0]):
        for b, i in enumerate(idx):
            h, t = hu[m, i], truth[i]
            h, t = h[~np.isnan(h)], t[~np.isnan(h)]
            if t.all() or not t.any():
                continue
            out["auc"][m, b] = roc_auc_score(t, -h)
            pred = h <= thr
            out["sens"][m, b] = np.count_nonzero(pred & t) / np.count_nonzero(t)
            out["spec"][m, b] = np.count_nonzero(~pred & ~t) / np.count_nonzero(~t)
    return out


# ------------------------------------------------------------------ point estimates vs sklearn


@settings(max_examples=60)
@given(data=labelled)
def test_auc_and_roc_points_equal_sklearn_with_ties(data: tuple[list[int], list[bool]]) -> None:
    score, truth = np.array(data[0], float), np.array(data[1])
    assert auc(score, truth).value == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    ours = roc_points(score, truth)
    ref = roc_curve(truth, score, drop_intermediate=False)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@settings(max_examples=60)
@given(
    data=st.integers(1, 50).flatmap(
        lambda n: st.tuples(*(st.lists(st.booleans(), min_size=n, max_size=n),) * 2)
    )
)
def test_confusion_sensitivity_specificity_equal_sklearn(data: tuple[list[bool], ...]) -> None:
    pred, truth = np.array(data[0]), np.array(data[1])
    tn, fp, fn, tp = confusion_matrix(truth, pred, labels=[False, True]).ravel()
    assert confusion(pred, truth) == (tp, fp, tn, fn)
    if truth.any():
        assert sensitivity(pred, truth).value == recall_score(truth, pred)
    else:
        assert np.isnan(sensitivity(pred, truth).value)
    if not truth.all():
        assert specificity(pred, truth).value == recall_score(~truth, ~pred)
    else:
        assert np.isnan(specificity(pred, truth).value)


@pytest.mark.parametrize("cls", [True, False])
def test_one_class_gives_nan_with_a_message_and_no_warning(cls: bool) -> None:
    score, truth = np.arange(5.0), np.full(5, cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = auc(score, truth)
        fpr, tpr, _ = roc_points(score, truth)
        res = bootstrap_classification(-score, truth, n_boot=50)
    assert np.isnan(a.value) and "undefined" in a.note
    assert ("positive" if not cls else "negative") in a.note
    assert np.isnan(tpr if not cls else fpr).all()
    assert np.isnan(res.auc[0]) and np.isnan(res.auc_lo[0]) and res.n_boot_used[0] == 0
    assert "AUC undefined" in res.notes[0] and "50 of 50 resamples" in res.notes[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # what sklearn does instead: NaN with a warning (>= 1.8) or ValueError (older)
            sklearn_complained = bool(np.isnan(roc_auc_score(truth, score))) and bool(caught)
        except ValueError:
            sklearn_complained = True
    assert sklearn_complained


def test_predictions_all_on_one_side() -> None:
    truth = np.array([True, True, False, False, False])
    everyone = np.ones(5, bool)
    assert (sensitivity(everyone, truth).value, specificity(everyone, truth).value) == (1.0, 0.0)
    assert (sensitivity(~everyone, truth).value, specificity(~everyone, truth).value) == (0, 1)
    res = bootstrap_classification(np.full(5, 10.0), truth, n_boot=200, seed=1)  # all <= 40
    assert res.sensitivity[0] == 1.0 and res.specificity[0] == 0.0
    assert res.sensitivity_lo[0] == res.sensitivity_hi[0] == 1.0
    assert res.specificity_lo[0] == res.specificity_hi[0] == 0.0
    assert res.auc[0] == 0.5  # one tie group: every pair counts one half
    assert (res.tp[0], res.fp[0], res.tn[0], res.fn[0]) == (2, 3, 0, 0)
    only_neg = sensitivity(everyone, np.zeros(5, bool))
    assert np.isnan(only_neg.value) and "no positive" in only_neg.note


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_samples(n: int) -> None:
    hu, truth = np.array([20.0, 60.0])[:n], np.array([True, False])[:n]
    res = bootstrap_classification(hu, truth, n_boot=400, seed=2)
    assert res.n[0] == n and res.n_boot == 400
    if n < 2:
        assert np.isnan(res.auc[0]) and res.n_boot_used[0] == 0 and res.notes[0]
        return
    # Both cases drawn in a resample with probability 1/2; those resamples separate perfectly.
    assert res.auc[0] == 1.0 and 150 < res.n_boot_used[0] < 250
    assert res.auc_lo[0] == res.auc_hi[0] == 1.0
    assert f"{400 - res.n_boot_used[0]} of 400 resamples" in res.notes[0]


# ------------------------------------------------------------------ bootstrap


def test_vectorised_bootstrap_equals_slow_loop_on_the_same_indices() -> None:
    # Small and imbalanced so some resamples have one class; a missing value in one method.
    hu, truth = _cohort(14, seed=5, prevalence=0.2)
    hus = np.vstack([hu, hu + np.random.default_rng(6).normal(0, 8, hu.size).round(), hu])
    hus[1, 3] = np.nan
    res = bootstrap_classification(hus, truth, n_boot=250, seed=11)
    ref = _slow_bootstrap(
        hus, truth, bootstrap_indices(hu.size, 250, np.random.default_rng(11)), 40
    )
    assert 0 < res.n_boot_used.min() < 250  # the dropping path is exercised
    np.testing.assert_allclose(res.boot_auc, ref["auc"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(res.boot_sensitivity, ref["sens"])
    np.testing.assert_array_equal(res.boot_specificity, ref["spec"])
    np.testing.assert_array_equal(res.n_boot_used, (~np.isnan(ref["auc"])).sum(axis=1))
    for m in range(3):  # point estimates on each method's own cases
        ok = ~np.isnan(hus[m])
        assert res.auc[m] == pytest.approx(roc_auc_score(truth[ok], -hus[m, ok]), abs=1e-12)
        assert res.n[m] == ok.sum()
        lo, hi = np.percentile(ref["auc"][m][~np.isnan(ref["auc"][m])], [2.5, 97.5])
        assert (res.auc_lo[m], res.auc_hi[m]) == pytest.approx((lo, hi), abs=1e-12)
    assert "1 cases without a value" in res.notes[1]


def test_bootstrap_is_paired_across_methods() -> None:
    hu, truth = _cohort(120, seed=7)
    other = hu + np.random.default_rng(8).normal(0, 10, hu.size)
    both = bootstrap_classification({"a": hu, "b": other, "a_shifted": hu + 7}, truth, seed=4)
    alone = bootstrap_classification({"a": hu}, truth, seed=4)
    # Same indices whatever the other methods: each method's replicates do not depend on them.
    np.testing.assert_array_equal(both.boot_auc[0], alone.boot_auc[0])
    # A shift keeps the order of cases, so AUC replicates are identical: same resample each time.
    np.testing.assert_array_equal(both.boot_auc[0], both.boot_auc[2])
    assert both.methods == ("a", "b", "a_shifted")
    # Paired resamples make the two methods' replicates correlated (unpaired would be ~0).
    assert np.corrcoef(both.boot_auc[0], both.boot_auc[1])[0, 1] > 0.3


def test_resamples_drawn_in_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import screening.stats.bootstrap as cls

    hu, truth = _cohort(60, seed=15)
    hus = {"a": hu, "b": hu + np.random.default_rng(16).normal(0, 6, hu.size)}
    grades = np.array(["none", "mild", "moderate", "severe"])[np.digitize(-hu, [-50, -40, -30])]
    run = {
        "boot": lambda: bootstrap_classification(hus, truth, n_boot=100, seed=3).boot_auc,
        "band": lambda: roc_band(hus, truth, n_boot=100, seed=3).tpr_hi,
        "grade": lambda: grade_roc_table(hus, grades, n_boot=100, seed=3)["auc_lo"].to_numpy(),
    }
    whole = {k: f() for k, f in run.items()}
    monkeypatch.setattr(cls, "_CHUNK_ELEMENTS", 7 * hu.size)  # 15 chunks, the last short
    for k, f in run.items():
        np.testing.assert_array_equal(f(), whole[k], err_msg=k)


def test_bootstrap_is_seeded_and_reproducible() -> None:
    hu, truth = _cohort(150, seed=1)
    a = bootstrap_classification(hu, truth, n_boot=200, seed=3)
    b = bootstrap_classification(hu, truth, n_boot=200, seed=np.random.default_rng(3))
    c = bootstrap_classification(hu, truth, n_boot=200, seed=4)
    np.testing.assert_array_equal(a.boot_auc, b.boot_auc)
    assert (a.auc_lo, a.auc_hi) == (b.auc_lo, b.auc_hi)
    assert not np.array_equal(a.boot_auc, c.boot_auc)
    np.testing.assert_array_equal(a.auc, c.auc)  # the point estimate does not resample


def test_point_estimate_inside_ci_and_bootstrap_mean_near_it() -> None:
    hu, truth = _cohort(300, seed=2)
    res = bootstrap_classification(hu, truth, n_boot=4000, seed=0)
    for k in ("auc", "sensitivity", "specificity"):
        point, lo, hi = (getattr(res, k + s)[0] for s in ("", "_lo", "_hi"))
        assert lo < point < hi
        boot = getattr(res, "boot_" + k)[0]
        # Mean of the resamples = point + bootstrap bias (O(1/n)) + Monte Carlo error.
        tol = 4 * boot.std() / np.sqrt(boot.size) + 0.1 * boot.std()
        assert abs(boot.mean() - point) < tol, k


def test_ci_width_shrinks_like_one_over_sqrt_n() -> None:
    widths = []
    for n in (200, 800, 3200):
        hu, truth = _cohort(n, seed=n)
        r = bootstrap_classification(hu, truth, n_boot=1000, seed=1)
        widths.append([r.auc_hi[0] - r.auc_lo[0], r.sensitivity_hi[0] - r.sensitivity_lo[0]])
    ratios = np.array(widths[:-1]) / np.array(widths[1:])  # 4x the cases: half the width
    assert np.all((ratios > 1.5) & (ratios < 2.7)), ratios


def test_bad_inputs_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="one value per case"):
        bootstrap_classification(np.zeros(3), np.zeros(4, bool))
    with pytest.raises(ConfigError, match="boolean"):
        bootstrap_classification(np.zeros(3), np.array([0, 2, 1]))
    with pytest.raises(ConfigError, match="non-finite"):
        auc(np.array([1.0, np.nan]), np.array([True, False]))
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_classification(np.zeros(3), np.zeros(3, bool), n_boot=0)


# ------------------------------------------------------------------ ROC band


def _tpr_at(fpr: NDArray[np.float64], tpr: NDArray[np.float64], f: float) -> float:
    """Reference: linear between ROC points, the upper TPR where the curve is vertical."""
    at = np.isclose(fpr, f, rtol=0, atol=1e-12)
    if at.any():
        return float(tpr[at].max())
    j = np.flatnonzero(fpr < f)[-1]
    return float(tpr[j] + (f - fpr[j]) / (fpr[j + 1] - fpr[j]) * (tpr[j + 1] - tpr[j]))


@pytest.mark.parametrize("exact_grid", [False, True])
def test_roc_band_equals_per_resample_roc_curves(exact_grid: bool) -> None:
    hu, truth = _cohort(40, seed=9)
    if exact_grid:  # 20 negatives: every grid FPR is an ROC point, often at a vertical rise
        truth = np.arange(40) < 20
        hu = np.where(truth, 30.0, 45.0) + np.random.default_rng(9).integers(-10, 11, 40)
    grid = np.linspace(0, 1, 21)
    band = roc_band(hu, truth, fpr_grid=grid, n_boot=150, seed=5)
    fpr, tpr, _ = roc_points(-hu, truth)
    np.testing.assert_allclose(band.tpr[0], [_tpr_at(fpr, tpr, f) for f in grid], atol=1e-12)
    boot = []
    for i in bootstrap_indices(hu.size, 150, np.random.default_rng(5)):
        if 0 < truth[i].sum() < i.size:
            f_b, t_b, _ = roc_points(-hu[i], truth[i])
            boot.append([_tpr_at(f_b, t_b, f) for f in grid])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    assert band.n_boot_used[0] == len(boot)
    np.testing.assert_allclose(band.tpr_lo[0], lo, atol=1e-12)
    np.testing.assert_allclose(band.tpr_hi[0], hi, atol=1e-12)
    assert np.all(np.diff(band.tpr[0]) >= 0) and band.tpr[0, -1] == 1.0
    assert np.all(band.tpr_lo[0] <= band.tpr[0] + 1e-12)
    assert np.all(band.tpr[0] <= band.tpr_hi[0] + 1e-12)


# ------------------------------------------------------------------ grades, reference standards


def test_grade_roc_table_on_a_graded_sample() -> None:
    rng = np.random.default_rng(12)
    names = np.array(["none", "mild", "moderate", "severe"])
    codes = rng.choice(4, size=200, p=[0.5, 0.25, 0.15, 0.1])
    hu = 60.0 - 12.0 * codes + rng.normal(0, 6, codes.size)  # more fat, lower HU
    grades = names[codes].astype(object)
    grades[:5] = None
    table = grade_roc_table({"ai": hu}, grades, n_boot=300, seed=1).to_pylist()
    assert [r["problem"] for r in table] == [">= mild", ">= moderate", "severe"]
    for row, lowest in zip(table, (1, 2, 3), strict=True):
        t = codes[5:] >= lowest
        assert row["auc"] == pytest.approx(roc_auc_score(t, -hu[5:]), abs=1e-12)
        assert (row["n"], row["n_pos"], row["n_missing"]) == (195, t.sum(), 5)
        assert 0.8 < row["auc_lo"] < row["auc"] < row["auc_hi"] <= 1.0
    # PDFF rises as HU falls: the same AUCs from the PDFF scale.
    pdff = grade_roc_table(-0.58 * hu + 38.2, grades, kind="pdff", n_boot=300, seed=1)
    assert pdff["auc"].to_pylist() == pytest.approx([r["auc"] for r in table], abs=1e-12)
    # No severe case: that problem is skipped with a note, the others still run.
    mild_only = grade_roc_table(hu[codes < 3], names[codes[codes < 3]], n_boot=50)
    severe = mild_only.to_pylist()[2]
    assert np.isnan(severe["auc"]) and severe["note"].startswith("skipped")
    assert not np.isnan(mild_only["auc"][0].as_py())
    with pytest.raises(ConfigError, match="not a grade"):
        grade_roc_table(hu[:2], ["mild", "very"], n_boot=10)


def test_reference_standard_truth() -> None:
    pdff = reference_standard_truth([4.99, 5.0, None, float("nan"), 31.0], "mri_pdff")
    assert pdff.to_pylist() == [False, True, None, None, True]
    biopsy = reference_standard_truth([0, 1, 3, None, "none", "Moderate", "S2", 2.0], "biopsy")
    assert biopsy.to_pylist() == [False, True, True, None, False, True, True, True]
    with pytest.warns(UserWarning, match="fractions"):
        reference_standard_truth([0.02, 0.3], "mri_pdff")
    with pytest.raises(ConfigError, match="not a grade"):
        reference_standard_truth([4], "biopsy")


# ------------------------------------------------------------------ the table


def test_classification_table_drops_missing_per_method() -> None:
    hu, truth = _cohort(80, seed=13)
    noisy = hu + np.random.default_rng(14).normal(0, 5, hu.size)
    col_2d = pa.array(np.where(np.arange(80) % 10 == 0, np.nan, noisy), from_pandas=True)
    truth_col = pa.array(truth, mask=np.arange(80) % 20 == 1)  # 4 rows without a truth
    table = pa.table(
        {"liver_hu_3d": hu, "liver_hu_2d": col_2d, "liver_hu_roi": hu - 3, "ref": truth_col}
    )
    out = classification_table(table, truth_col="ref", reader="R1", n_boot=200, seed=2)
    assert out.schema == CLASSIFICATION_SCHEMA
    rows = {r["method"]: r for r in out.to_pylist()}
    assert list(rows) == ["ai_3d", "ai_2d", "ai_roi"]
    assert [rows[m]["n_missing"] for m in rows] == [4, 4 + 8, 4]
    keep = np.arange(80) % 20 != 1
    ref = bootstrap_classification(hu[keep], truth[keep], n_boot=200, seed=2)
    r3d = rows["ai_3d"]
    assert r3d["auc"] == ref.auc[0] and r3d["auc_lo"] == ref.auc_lo[0]
    assert (r3d["tp"], r3d["fp"], r3d["tn"], r3d["fn"]) == (
        ref.tp[0],
        ref.fp[0],
        ref.tn[0],
        ref.fn[0],
    )
    assert r3d["tp"] + r3d["fp"] + r3d["tn"] + r3d["fn"] == r3d["n"] == 76
    assert r3d["reader"] == "R1" and "4 rows without a truth" in r3d["note"]
    assert "8 cases without a value" in rows["ai_2d"]["note"]
    # A truth array instead of a column gives the same table.
    same = classification_table(table, truth=truth_col, reader="R1", n_boot=200, seed=2)
    assert same.equals(out)
    with pytest.raises(ConfigError, match="exactly one"):
        classification_table(table, n_boot=10)
    with pytest.raises(ConfigError, match="no column"):
        classification_table(table, truth_col="ref", methods={"x": "liver_hu_x"})


# ------------------------------------------------------------------ a synthetic cohort


def _read_truth(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_synthetic_cohort_scan_hu_plus_noise_classifies_almost_perfectly(tmp_path: Path) -> None:
    from screening.synthetic.cohort import generate_cohort

    generate_cohort(tmp_path / "c", n=30, seed=3)
    # Contrast-enhanced scans are excluded by the engine; their scan HU is not the liver's.
    rows = [r for r in _read_truth(tmp_path / "c" / "truth.csv") if r["contrast_phase"] == "none"]
    scan = np.array([float(r["liver_hu_scan"]) for r in rows])
    truth = np.array([r["steatosis"] == "True" for r in rows])
    assert 0 < truth.sum() < truth.size
    sd = 3.0  # the "AI" error (HU), about a reader's
    ai = scan + np.random.default_rng(0).normal(0, sd, scan.size)

    # Expected AUC under N(0, sd) errors: mean over (pos, neg) pairs of P(ai_pos < ai_neg).
    gap = scan[~truth][None, :] - scan[truth][:, None]
    expected_auc = float(norm.cdf(gap / (sd * np.sqrt(2))).mean())
    expected_sens = float(norm.cdf((40.0 - scan[truth]) / sd).mean())
    expected_spec = float(norm.sf((40.0 - scan[~truth]) / sd).mean())
    assert expected_auc > 0.95  # classes are generated >= 1 HU apart, mostly far more

    # The spread of the observed values over error draws, to set the tolerance.
    draws = np.random.default_rng(1).normal(0, sd, (400, scan.size)) + scan
    sims = np.array([auc(-d, truth).value for d in draws])
    assert abs(sims.mean() - expected_auc) < 4 * sims.std() / np.sqrt(sims.size) + 1e-9

    table = pa.table({"liver_hu_3d": ai, "liver_hu_2d": ai, "liver_hu_roi": ai, "t": truth})
    out = classification_table(table, truth_col="t", n_boot=1000, seed=0).to_pylist()[0]
    assert out["auc"] >= expected_auc - 4 * sims.std() - 1e-9
    assert out["auc"] > 0.9
    n_pos, n_neg = truth.sum(), (~truth).sum()
    for k, e, m in (("sensitivity", expected_sens, n_pos), ("specificity", expected_spec, n_neg)):
        assert abs(out[k] - e) <= 4 * np.sqrt(e * (1 - e) / m) + 1 / m, k
    assert out["auc_lo"] <= out["auc"] <= out["auc_hi"] <= 1.0
    assert out["n"] == truth.size and out["n_boot_used"] == 1000

    # Grades come from PDFF = -0.58 HU + 38.2, so ">= moderate" (PDFF >= 15 %) is HU <= 40:
    # the same truth as `steatosis`, hence the same AUC.
    graded = grade_roc_table(ai, [r["steatosis_grade"] for r in rows], n_boot=200).to_pylist()
    assert graded[1]["problem"] == ">= moderate" and graded[1]["n_pos"] == truth.sum()
    assert graded[1]["auc"] == out["auc"]
