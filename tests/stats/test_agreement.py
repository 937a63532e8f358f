"""Attenuation agreement: ICC(2,1) against an independent ANOVA and published data, the pair
statistics against numpy/scipy, invariants, degenerate inputs, and the synthetic readers'
designed bias and noise recovered through the tables."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import stats

from screening.errors import ConfigError
from screening.stats.agreement import (
    AGREEMENT_COLUMNS,
    WILCOXON_ZERO_METHOD,
    agreement_table,
    icc_2_1,
    pair_agreement,
    reader_matrix,
)
from screening.stats.reads import load_reference_reads
from screening.synthetic.cohort import DEFAULT_READERS, generate_cohort

# Shrout & Fleiss (1979), Table 2: 6 targets (rows) rated by 4 judges (columns).
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]],
    dtype=float,
)


def _ratings(seed: int, n: int, k: int) -> NDArray[np.float64]:
    """Subjects around 50 HU (sd 10), rater offsets (sd 2), noise (sd 3)."""
    rng = np.random.default_rng(seed)
    subject = rng.normal(50, 10, size=(n, 1))
    rater = rng.normal(0, 2, size=(1, k))
    return np.asarray(subject + rater + rng.normal(0, 3, size=(n, k)), dtype=np.float64)


def _icc_by_least_squares(y: NDArray[np.float64], alpha: float = 0.05) -> dict[str, float]:
    """ICC(A,1) from sums of squares obtained by fitting dummy-coded linear models, with the CI
    in pingouin's algebraic arrangement of McGraw & Wong's formulas."""
    n, k = y.shape
    obs = y.ravel()  # row-major: subject i, rater j at i * k + j
    subj = np.repeat(np.arange(n), k)
    rater = np.tile(np.arange(k), n)
    ones = np.ones((n * k, 1))
    s_dummies = (subj[:, None] == np.arange(1, n)[None, :]).astype(float)
    r_dummies = (rater[:, None] == np.arange(1, k)[None, :]).astype(float)

    def rss(design: NDArray[np.float64]) -> float:
        beta = np.linalg.lstsq(design, obs, rcond=None)[0]
        return float(np.sum((obs - design @ beta) ** 2))

    full = rss(np.hstack([ones, s_dummies, r_dummies]))
    ss_subjects = rss(np.hstack([ones, r_dummies])) - full
    ss_raters = rss(np.hstack([ones, s_dummies])) - full
    msb, msj, mse = ss_subjects / (n - 1), ss_raters / (k - 1), full / ((n - 1) * (k - 1))
    icc = (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    fj = msj / mse
    term = n * (1 + (k - 1) * icc) - k * icc
    v = df2 * (k * icc * fj + term) ** 2 / (df1 * k**2 * icc**2 * fj**2 + term**2)
    fu = stats.f.ppf(1 - alpha / 2, n - 1, v)
    fl = stats.f.ppf(1 - alpha / 2, v, n - 1)
    lo = n * (msb - fu * mse) / (fu * (k * msj + (k * n - k - n) * mse) + n * msb)
    hi = n * (fl * msb - mse) / (k * msj + (k * n - k - n) * mse + n * fl * msb)
    return {"icc": icc, "lo": lo, "hi": hi, "f": msb / mse, "msb": msb, "msj": msj, "mse": mse}


# --- ICC(2,1) ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 15), k=st.integers(2, 5))
def test_icc_matches_least_squares_anova(seed: int, n: int, k: int) -> None:
    y = _ratings(seed, n, k)
    ref = _icc_by_least_squares(y)
    got = icc_2_1(y)
    assert got.icc == pytest.approx(ref["icc"], rel=1e-9, abs=1e-12)
    assert got.ci_lo == pytest.approx(ref["lo"], rel=1e-7, abs=1e-10)
    assert got.ci_hi == pytest.approx(ref["hi"], rel=1e-7, abs=1e-10)
    assert got.f == pytest.approx(ref["f"], rel=1e-9)
    assert (got.ms_rows, got.ms_cols, got.ms_error) == pytest.approx(
        (ref["msb"], ref["msj"], ref["mse"]), rel=1e-9, abs=1e-9
    )
    assert (got.df1, got.df2, got.n, got.k) == (n - 1, (n - 1) * (k - 1), n, k)
    assert got.p == pytest.approx(stats.f.sf(ref["f"], n - 1, (n - 1) * (k - 1)), rel=1e-9)
    assert got.ci_lo <= got.icc <= got.ci_hi


def test_icc_reproduces_shrout_fleiss_table_2() -> None:
    r = icc_2_1(SHROUT_FLEISS)
    # Published: ICC(2,1) = .29; ANOVA BMS 11.24, JMS 32.49, EMS 1.02 (Shrout & Fleiss 1979).
    assert r.icc == pytest.approx(0.29, abs=0.005)
    assert r.ms_rows == pytest.approx(11.24, abs=0.005)
    assert r.ms_cols == pytest.approx(32.49, abs=0.005)
    assert r.ms_error == pytest.approx(1.02, abs=0.005)
    assert (r.df1, r.df2) == (5, 15)
    # psych::ICC on the same data (its documented example): F 11, p 0.00013, CI 0.019-0.76.
    assert r.f == pytest.approx(11.03, abs=0.005)
    assert r.p == pytest.approx(0.00013, abs=0.000005)
    assert r.ci_lo == pytest.approx(0.019, abs=0.0005)
    assert r.ci_hi == pytest.approx(0.76, abs=0.005)


def test_icc_drops_and_counts_incomplete_rows() -> None:
    y = _ratings(3, 12, 3)
    holes = y.copy()
    holes[[1, 7], [0, 2]] = np.nan
    got, ref = icc_2_1(holes), icc_2_1(np.delete(y, [1, 7], axis=0))
    assert (got.n, got.n_dropped) == (10, 2)
    assert (got.icc, got.ci_lo, got.ci_hi) == (ref.icc, ref.ci_lo, ref.ci_hi)


def test_icc_degenerate_inputs_give_nan_with_a_note() -> None:
    few = icc_2_1([[1.0, 2.0], [3.0, 4.0]])
    assert math.isnan(few.icc) and "at least 3" in str(few.note)
    flat = icc_2_1(np.full((5, 3), 40.0))
    assert math.isnan(flat.icc) and "no variation" in str(flat.note)
    with pytest.raises(ConfigError, match="k >= 2"):
        icc_2_1(np.arange(5.0)[:, None])
    with pytest.raises(ConfigError, match="infinite"):
        icc_2_1([[1.0, np.inf], [2.0, 3.0], [4.0, 5.0]])


_hu = st.integers(-50, 90).map(float)


@settings(max_examples=60)
@given(
    data=st.lists(st.tuples(_hu, _hu, _hu), min_size=3, max_size=20),
    perm=st.permutations([0, 1, 2]),
)
def test_icc_is_invariant_to_the_order_of_raters_and_subjects(
    data: list[tuple[float, float, float]], perm: list[int]
) -> None:
    y = np.array(data)
    base = icc_2_1(y)
    swapped = icc_2_1(y[::-1][:, perm])
    for field in ("icc", "ci_lo", "ci_hi", "f", "p"):
        a, b = getattr(base, field), getattr(swapped, field)
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-9)


@given(st.lists(_hu, min_size=3, max_size=30))
def test_icc_of_a_series_with_itself_is_one(a: list[float]) -> None:
    assume(len(set(a)) > 1)
    r = icc_2_1(np.column_stack([a, a]))
    assert (r.icc, r.ci_lo, r.ci_hi) == (1.0, 1.0, 1.0)


@settings(max_examples=40)
@given(
    # n >= 14: scipy's Wilcoxon with ties would otherwise run a slow exact permutation test.
    pairs=st.lists(st.tuples(_hu, st.integers(-5, 5)), min_size=14, max_size=30),
    shift=st.integers(1, 40).map(float),
)
def test_a_constant_offset_lowers_absolute_agreement_but_not_spearman(
    pairs: list[tuple[float, int]], shift: float
) -> None:
    a = np.array([p[0] for p in pairs])
    b = a + np.array([p[1] for p in pairs])  # a second rater a few HU off
    assume(np.ptp(a) > 0 and np.ptp(b) > 0)
    before = pair_agreement(a, b)
    assume(before["icc"] > 0)
    # Move b away from a (the mean difference grows whatever its sign was).
    b2 = b - shift if a.mean() >= b.mean() else b + shift
    after = pair_agreement(a, b2)
    assert after["icc"] < before["icc"]
    assert after["spearman"] == before["spearman"]
    assert after["spearman_p"] == before["spearman_p"]


# --- pair statistics --------------------------------------------------------------------


def test_pair_statistics_equal_numpy_and_scipy() -> None:
    rng = np.random.default_rng(8)
    b = rng.normal(45, 12, 60).round(1)
    a = b + 1.3 + rng.normal(0, 3, 60)
    a[[4, 9]] = np.nan  # missing AI values
    b[20] = np.nan  # a missing read
    r = pair_agreement(a, b)
    ok = ~(np.isnan(a) | np.isnan(b))
    x, y = a[ok], b[ok]
    d = x - y
    assert (r["n"], r["n_missing"]) == (57, 3)
    assert r["mse"] == pytest.approx(np.mean((x - y) ** 2))
    assert r["mean_diff"] == pytest.approx(np.mean(x) - np.mean(y))
    sd = np.sqrt(np.sum((d - d.mean()) ** 2) / (d.size - 1))
    assert r["sd_diff"] == pytest.approx(sd) and r["ba_sd"] == pytest.approx(sd)
    assert r["ba_bias"] == pytest.approx(d.mean())
    assert r["ba_loa_lo"] == pytest.approx(d.mean() - 1.96 * sd)
    assert r["ba_loa_hi"] == pytest.approx(d.mean() + 1.96 * sd)
    ks = stats.ks_2samp(x, y)
    assert (r["ks_stat"], r["ks_p"]) == (pytest.approx(ks.statistic), pytest.approx(ks.pvalue))
    for key, s in (("ks_norm_p_a", x), ("ks_norm_p_b", y)):
        expect = stats.kstest((s - s.mean()) / s.std(ddof=1), "norm").pvalue
        assert r[key] == pytest.approx(expect)
    rho = stats.spearmanr(x, y)
    assert (r["spearman"], r["spearman_p"]) == (
        pytest.approx(rho.statistic),
        pytest.approx(rho.pvalue),
    )
    assert r["t_p"] == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(
        stats.wilcoxon(x, y, zero_method=WILCOXON_ZERO_METHOD).pvalue
    )
    assert r["icc"] == pytest.approx(icc_2_1(np.column_stack([x, y])).icc)
    assert r["note"] is None


def test_bland_altman_limit_intervals_match_the_large_sample_rule() -> None:
    # Bland & Altman: the SE of a limit of agreement is about sqrt(3 s² / n) for large n.
    rng = np.random.default_rng(2)
    b = rng.normal(50, 10, 400)
    r = pair_agreement(b + rng.normal(1, 4, 400), b)
    half = 1.96 * math.sqrt(3 * r["ba_sd"] ** 2 / r["n"])
    for limit in ("ba_loa_lo", "ba_loa_hi"):
        assert r[f"{limit}_ci_hi"] - r[limit] == pytest.approx(half, rel=0.01)
        assert r[limit] - r[f"{limit}_ci_lo"] == pytest.approx(half, rel=0.01)
    se_bias = r["ba_sd"] / math.sqrt(r["n"])
    assert r["ba_bias_hi"] - r["ba_bias"] == pytest.approx(1.96 * se_bias, rel=0.01)


def test_ties_use_average_ranks_and_pratt_zero_differences() -> None:
    a = np.array([30.0, 30.0, 41.5, 41.5, 41.5, 55.0, 60.0, 60.0, 72.0])
    b = np.array([31.0, 30.0, 40.0, 41.5, 44.0, 55.0, 58.0, 61.0, 70.0])
    r = pair_agreement(a, b)
    # Spearman with ties is Pearson's r of the average ranks.
    ranks = np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1]
    assert r["spearman"] == pytest.approx(ranks)
    # Three zero differences: Pratt keeps them in the ranking, unlike 'wilcox'.
    pratt = stats.wilcoxon(a - b, zero_method="pratt").pvalue
    assert r["wilcoxon_p"] == pytest.approx(pratt)
    assert pratt != pytest.approx(stats.wilcoxon(a - b, zero_method="wilcox").pvalue)


def _no_warnings(a: Any, b: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pair_agreement(a, b)


def test_fewer_than_three_pairs_give_nan_and_say_so() -> None:
    r = _no_warnings([40.0, 50.0, np.nan, 60.0], [41.0, 49.0, 55.0, np.nan])
    assert (r["n"], r["n_missing"]) == (2, 2)
    assert all(math.isnan(r[k]) for k in ("icc", "mean_diff", "spearman", "ks_p", "t_p"))
    assert "fewer than 3" in r["note"]


def test_constant_series_give_nan_correlation_without_warnings() -> None:
    r = _no_warnings([45.0] * 6, [40.0, 42.0, 44.0, 46.0, 48.0, 50.0])
    assert math.isnan(r["spearman"]) and math.isnan(r["ks_norm_p_a"])
    assert not math.isnan(r["ks_norm_p_b"]) and not math.isnan(r["icc"])
    assert "constant" in r["note"] and "Spearman" in r["note"]
    assert r["mean_diff"] == pytest.approx(0.0)


def test_identical_and_shifted_series_make_paired_tests_undefined() -> None:
    a = np.array([35.0, 42.0, 51.0, 58.0, 63.0])
    same = _no_warnings(a, a)
    assert math.isnan(same["t_p"]) and math.isnan(same["wilcoxon_p"])
    assert same["icc"] == 1.0 and same["mse"] == 0.0 and "identical" in same["note"]
    shifted = _no_warnings(a + 2.0, a)
    assert math.isnan(shifted["t_p"]) and shifted["mean_diff"] == pytest.approx(2.0)
    assert shifted["wilcoxon_p"] == pytest.approx(stats.wilcoxon(np.full(5, 2.0)).pvalue)
    assert 0 < shifted["icc"] < 1


def test_pair_rejects_mismatched_shapes() -> None:
    with pytest.raises(ConfigError, match="same length"):
        pair_agreement([1.0, 2.0, 3.0], [1.0, 2.0])


# --- tables -----------------------------------------------------------------------------


def _long_table(rng: np.random.Generator, n: int = 12) -> tuple[pa.Table, dict[str, Any]]:
    """Two AI methods on every scan; reader A reads all scans, B all but two."""
    truth = rng.normal(50, 12, n)
    ai = {"ai_3d": truth + rng.normal(0, 1, n), "ai_roi": truth + 2 + rng.normal(0, 2, n)}
    reads = {"A": truth + rng.normal(0, 2, n), "B": truth - 1 + rng.normal(0, 2, n)}
    reads["B"][[3, 8]] = np.nan
    rows = []
    for i in range(n):
        for r in ("A", "B"):
            if r == "B" and i in (3, 8):
                continue
            rows.append(
                {
                    "scan_id": f"s{i:02d}",
                    "reader": r,
                    "roi_hu": float(reads[r][i]),
                    "liver_hu_3d": float(ai["ai_3d"][i]),
                    "liver_hu_roi": float(ai["ai_roi"][i]),
                }
            )
    return pa.Table.from_pylist(rows), {**ai, **reads}


_TWO = {"ai_3d": "liver_hu_3d", "ai_roi": "liver_hu_roi"}


def test_agreement_table_rows_and_values() -> None:
    table, arrays = _long_table(np.random.default_rng(4))
    out = agreement_table(table, methods=_TWO)
    assert tuple(out.column_names) == AGREEMENT_COLUMNS
    rows = {(r["method"], r["reader"]): r for r in out.to_pylist()}
    assert list(rows) == [
        ("ai_3d", "A"),
        ("ai_3d", "B"),
        ("ai_3d", "readers:all"),
        ("ai_roi", "A"),
        ("ai_roi", "B"),
        ("ai_roi", "readers:all"),
        ("reader:A", "B"),
        ("readers:all", "all"),
    ]
    for m in _TWO:
        for reader in ("A", "B"):
            ok = ~np.isnan(arrays[reader])
            d = arrays[m][ok] - arrays[reader][ok]
            row = rows[(m, reader)]
            assert row["n"] == ok.sum() and row["k"] == 2
            assert row["mean_diff"] == pytest.approx(d.mean())  # AI − reader
            assert row["ba_loa_hi"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
        every = np.column_stack([arrays[m], arrays["A"], arrays["B"]])
        multi = rows[(m, "readers:all")]
        ref = icc_2_1(every)
        assert (multi["n"], multi["k"], multi["icc"]) == (10, 3, pytest.approx(ref.icc))
        assert multi["mean_diff"] is None and "2 scans" in multi["note"]  # null: not pairwise
    pair = rows[("reader:A", "B")]
    ok = ~np.isnan(arrays["B"])
    assert pair["mean_diff"] == pytest.approx(np.mean(arrays["A"][ok] - arrays["B"][ok]))
    readers = icc_2_1(np.column_stack([arrays["A"], arrays["B"]]))
    assert rows[("readers:all", "all")]["icc"] == pytest.approx(readers.icc)


def test_reader_matrix_is_square_symmetric_and_one_on_the_diagonal() -> None:
    table, _ = _long_table(np.random.default_rng(5))
    out = reader_matrix(table, methods=_TWO)
    raters = ["ai_3d", "ai_roi", "A", "B"]
    assert out.num_rows == len(raters) ** 2
    cells = {(r["rater_a"], r["rater_b"]): r for r in out.to_pylist()}
    for a in raters:
        assert cells[(a, a)]["icc"] == 1.0 and cells[(a, a)]["mean_diff"] == 0.0
        for b in raters:
            ab, ba = cells[(a, b)], cells[(b, a)]
            assert ab["icc"] == pytest.approx(ba["icc"]) and ab["n"] == ba["n"]
            assert ab["mean_diff"] == pytest.approx(-ba["mean_diff"])
    assert cells[("A", "B")]["n"] == 10


def test_agreement_table_input_errors() -> None:
    table, _ = _long_table(np.random.default_rng(6))
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['liver_hu_2d'\]"):
        agreement_table(table)  # default methods include ai_2d
    dup = pa.concat_tables([table, table.slice(0, 1)])
    with pytest.raises(ConfigError, match=r"duplicate .*'s00', 'A'"):
        agreement_table(dup, methods=_TWO)
    rows = table.to_pylist()
    rows[1]["liver_hu_3d"] += 5.0  # scan s00's reader-B row disagrees with its reader-A row
    with pytest.raises(ConfigError, match="different 'liver_hu_3d' values"):
        agreement_table(pa.Table.from_pylist(rows), methods=_TWO)


# --- the synthetic readers' designed bias and noise ---------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("agreement") / "cohort"
    generate_cohort(out, n=40, seed=5)
    return out


def test_synthetic_reader_bias_and_noise_are_recovered(cohort: Path) -> None:
    with (cohort / "truth.csv").open(newline="") as fh:
        truth = {r["case_id"]: float(r["liver_hu_scan"]) for r in csv.DictReader(fh)}
    scans = pa.table(
        {"scan_id": [f"scan-{c}" for c in truth], "case_id": list(truth), "status": ["ok"] * 40}
    )
    reads = load_reference_reads(cohort / "reads.csv", scans)
    ai = {f"scan-{c}": hu for c, hu in truth.items()}
    joined = reads.append_column(
        "liver_hu_scan", pa.array([ai[s] for s in reads["scan_id"].to_pylist()], pa.float64())
    )
    out = agreement_table(joined, methods={"truth": "liver_hu_scan"})
    rows = {r["reader"]: r for r in out.to_pylist() if r["method"] == "truth"}
    per_reader = {s.name: reads["reader"].to_pylist().count(s.name) for s in DEFAULT_READERS}
    alpha = 1e-3  # per check; the cohort is fixed by its seed, so the test is deterministic
    z = stats.norm.isf(alpha / 2)
    for spec in DEFAULT_READERS:
        row, n = rows[spec.name], per_reader[spec.name]
        assert row["n"] == n >= 10
        sigma = math.hypot(spec.sd_hu, 1.5)  # reader error and parenchymal texture (1.5 HU)
        # mean_diff is AI − reader = −(designed bias) + noise of sd sigma / sqrt(n).
        assert abs(row["mean_diff"] + spec.bias_hu) <= z * sigma / math.sqrt(n), spec
        # (n − 1) s² / σ² follows chi-square with n − 1 df.
        lo, hi = stats.chi2.ppf([alpha / 2, 1 - alpha / 2], n - 1)
        assert lo <= (n - 1) * row["sd_diff"] ** 2 / sigma**2 <= hi, spec
