"""Prevalence of steatosis by group with Wilson 95% confidence intervals.

Every scan of the catalog is accounted for in exactly one column: rejected at ingest, not run,
failed, excluded for contrast, measured without a decision, or measured with one. Nothing is
silently dropped from the denominator's story, though only decided scans enter the estimate.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError

__all__ = [
    "AGE_BAND_EDGES",
    "DECISION_COLUMNS",
    "DEFAULT_DIMENSIONS",
    "PREVALENCE_UNITS",
    "age_band_label",
    "age_standardised",
    "format_prevalence",
    "prevalence_all",
    "prevalence_table",
    "wilson_interval",
]

#: Method name -> the measurements column holding its steatosis decision.
DECISION_COLUMNS = {
    "ai_roi": "steatosis_roi",
    "ai_3d": "steatosis_3d",
    "ai_2d": "steatosis_2d",
    "ls_ratio": "steatosis_ls",
}

#: What one count in a prevalence table is: a scan, or a patient (``patient_pseudo_id``).
#: Per patient, each patient counts once, by one representative scan: the earliest decided one
#: (lowest ``study_year``, then ``scan_id``), else the earliest; a scan without a pseudonym
#: is its own patient. Repeat screens and several reconstructions of one person then weigh
#: once, and the Wilson interval's independence assumption holds.
PREVALENCE_UNITS = ("scan", "patient")

#: Age bands (years): lower edges of the bands after the first; "<40", "40-49", ..., "80+".
AGE_BAND_EDGES = (40, 50, 60, 70, 80)


def age_band_label(age_years: float | None, edges: tuple[int, ...] = AGE_BAND_EDGES) -> str:
    """The band of ``age_years`` (``unknown`` for a missing age).

    >>> [age_band_label(a) for a in (12, 40, 49.9, 85, None)]
    ['<40', '40-49', '40-49', '80+', 'unknown']
    """
    if age_years is None or np.isnan(age_years):
        return "unknown"
    if age_years < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in itertools.pairwise(edges):
        if age_years < hi:
            return f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


def _age_band_sql(edges: tuple[int, ...]) -> str:
    cases = [f"when s.patient_age_years < {edges[0]} then '<{edges[0]}'"]
    cases += [
        f"when s.patient_age_years < {hi} then '{lo}-{hi - 1}'"
        for lo, hi in itertools.pairwise(edges)
    ]
    return (
        "case when s.patient_age_years is null then 'unknown' "
        + " ".join(cases)
        + f" else '{edges[-1]}+' end"
    )


#: Dimensions a prevalence may be grouped by: scans-table columns or derived from them.
GROUP_EXPRESSIONS = {
    "cohort": "s.cohort",
    "site": "s.site",
    "scanner": "concat_ws(' ', s.manufacturer, s.model)",
    "manufacturer": "s.manufacturer",
    "sex": "s.patient_sex",
    "age_band": "",  # built from AGE_BAND_EDGES
    "kernel": "s.convolution_kernel",
    "study_year": "s.study_year",
}
GROUP_COLUMNS = tuple(GROUP_EXPRESSIONS)
DEFAULT_DIMENSIONS = ("cohort", "site", "scanner", "sex", "age_band")


def wilson_interval(
    k: ArrayLike, n: ArrayLike, confidence: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Wilson score interval for ``k`` successes out of ``n`` (vectorised; NaN where n = 0).

    >>> lo, hi = wilson_interval(0, 10)
    >>> float(lo), round(float(hi), 4)
    (0.0, 0.2775)
    """
    from scipy.stats import norm

    require(0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}")
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    z = float(norm.ppf(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k_arr / n_arr
        denom = 1 + z**2 / n_arr
        centre = (p + z**2 / (2 * n_arr)) / denom
        half = z * np.sqrt(p * (1 - p) / n_arr + z**2 / (4 * n_arr**2)) / denom
    # The interval always holds p; at k = 0 or k = n rounding could put a bound a hair past it.
    lo = np.where(n_arr > 0, np.clip(np.minimum(centre - half, p), 0.0, 1.0), np.nan)
    hi = np.where(n_arr > 0, np.clip(np.maximum(centre + half, p), 0.0, 1.0), np.nan)
    return lo, hi


def _latest_pipeline(con: Any) -> str:
    row = con.sql(
        "select pipeline_id from measurements order by measured_at desc nulls last limit 1"
    ).fetchall()
    if not row:
        raise ConfigError("the results hold no measurements yet: run `screening run` first")
    return str(row[0][0])


def prevalence_table(
    results: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    by: str = "site",
    method: str = "ai_roi",
    pipeline_id: str | None = None,
    confidence: float = 0.95,
    age_band_edges: tuple[int, ...] = AGE_BAND_EDGES,
    unit: str = "scan",
    con: Any = None,
) -> pa.Table:
    """Prevalence by ``by`` (see ``GROUP_EXPRESSIONS``) for one pipeline's ``method`` decisions.

    Rows: one per group, then ``all``. ``pipeline_id`` defaults to the most recently measured
    one. Percentages are of decided scans (``n_decided``). With ``unit="patient"`` every count
    is of patients instead, each by its representative scan (:data:`PREVALENCE_UNITS`); the
    ``n_scans`` column then counts patients, and the ``unit`` column says which.
    """
    from screening.query import connect

    require(by in GROUP_COLUMNS, f"by must be one of {GROUP_COLUMNS}, got {by!r}")
    require(method in DECISION_COLUMNS, f"method must be one of {sorted(DECISION_COLUMNS)}")
    require(unit in PREVALENCE_UNITS, f"unit must be one of {PREVALENCE_UNITS}, got {unit!r}")
    decision = DECISION_COLUMNS[method]
    con = con or connect(results, store)  # a caller's connection saves re-reading the data
    pid = pipeline_id or _latest_pipeline(con)
    group = GROUP_EXPRESSIONS[by] or _age_band_sql(age_band_edges)
    counts = f"""
        count(*) as n_scans,
        count(*) filter (where s.status != 'ok') as n_ingest_rejected,
        count(*) filter (where s.status = 'ok' and m.scan_id is null) as n_not_run,
        count(*) filter (where m.status = 'failed') as n_failed,
        count(*) filter (where m.status != 'failed' and m.{decision} is null
                         and coalesce(m.contrast_suspected, false)) as n_contrast_excluded,
        count(*) filter (where m.status != 'failed' and m.{decision} is null
                         and not coalesce(m.contrast_suspected, false)) as n_undecided,
        count(m.{decision}) as n_decided,
        count(*) filter (where m.{decision}) as n_steatosis
    """
    source = """
        (select * from scans qualify row_number() over (partition by scan_id
                                               order by ingested_at desc) = 1) s
        left join (select * from measurements where pipeline_id = $pid
                   qualify row_number() over (partition by scan_id
                                              order by measured_at desc) = 1) m
        using (scan_id)
    """
    if unit == "patient":
        source += f"""
        where s.scan_id in (
            select s.scan_id from {source}
            qualify row_number() over (
                partition by coalesce(s.patient_pseudo_id, s.scan_id)
                order by (m.{decision} is null), s.study_year nulls last, s.scan_id) = 1)
        """
    sql = f"""
        select coalesce(cast({group} as varchar), 'unknown') as "group", {counts}
        from {source}
        group by 1
        union all
        select 'all', {counts} from {source}
        order by ("group" = 'all'), "group"
    """
    table = con.sql(sql, params={"pid": pid}).to_arrow_table()
    k = table["n_steatosis"].to_numpy(zero_copy_only=False)
    n = table["n_decided"].to_numpy(zero_copy_only=False)
    lo, hi = wilson_interval(k, n, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(n > 0, 100.0 * k / np.where(n > 0, n, 1), np.nan)
    table = table.append_column("prevalence_pct", pa.array(pct, pa.float64(), from_pandas=True))
    table = table.append_column("ci_lo_pct", pa.array(100 * lo, pa.float64(), from_pandas=True))
    table = table.append_column("ci_hi_pct", pa.array(100 * hi, pa.float64(), from_pandas=True))
    table = table.append_column("unit", pa.array([unit] * table.num_rows, pa.string()))
    return table.append_column("pipeline_id", pa.array([pid] * table.num_rows, pa.string()))


def format_prevalence(table: pa.Table, by: str, method: str) -> str:
    """A plain-text table for the terminal."""
    unit = str(table["unit"][0]) if "unit" in table.column_names else "scan"
    head = (
        f"{by:<14} {unit + 's':>8} {'decided':>8} {'steatosis':>9} {'prevalence (95% CI)':>22}"
        f" {'contrast':>8} {'undecided':>9} {'failed':>6} {'rejected':>8} {'not run':>7}"
    )
    pid = str(table["pipeline_id"][0])[:12]
    lines = [
        f"prevalence of steatosis by {by} ({method}, per {unit}, pipeline {pid}; Wilson 95% CI)"
    ]
    lines += [head, "-" * len(head)]
    for r in table.to_pylist():
        ci = (
            f"{r['prevalence_pct']:5.1f}% ({r['ci_lo_pct']:4.1f}-{r['ci_hi_pct']:5.1f})"
            if r["n_decided"]
            else "-"
        )
        lines.append(
            f"{str(r['group'])[:14]:<14} {r['n_scans']:>8} {r['n_decided']:>8} "
            f"{r['n_steatosis']:>9} {ci:>22} {r['n_contrast_excluded']:>8} "
            f"{r['n_undecided']:>9} {r['n_failed']:>6} {r['n_ingest_rejected']:>8} "
            f"{r['n_not_run']:>7}"
        )
    return "\n".join(lines)


def prevalence_all(
    results: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS,
    methods: tuple[str, ...] = ("ai_roi", "ai_3d", "ai_2d"),
    pipeline_id: str | None = None,
    confidence: float = 0.95,
    unit: str = "scan",
    con: Any = None,
) -> pa.Table:
    """Every (method, dimension) prevalence table stacked, with ``method`` and ``dimension``
    columns (each dimension's ``all`` row is the overall prevalence); ``unit`` as in
    :func:`prevalence_table`."""
    from screening.query import connect

    con = con or connect(results, store)  # one read of the datasets for every table
    tables = []
    for method in methods:
        for dim in dimensions:
            t = prevalence_table(
                results, store, by=dim, method=method, pipeline_id=pipeline_id,
                confidence=confidence, unit=unit, con=con,
            )  # fmt: skip
            t = t.add_column(0, "dimension", pa.array([dim] * t.num_rows, pa.string()))
            tables.append(t.add_column(0, "method", pa.array([method] * t.num_rows)))
    return pa.concat_tables(tables)


def age_standardised(
    by_age: pa.Table, standard: dict[str, float], confidence: float = 0.95
) -> dict[str, float]:
    """Direct age standardisation of a ``prevalence_table(by="age_band")`` to ``standard``
    (age band -> population weight, e.g. a census or the WHO world standard population).

    Returns the standardised prevalence (%) with a normal-approximation CI from
    Var = sum(w_i^2 p_i (1 - p_i) / n_i) / (sum w_i)^2. Bands of the standard without any
    decided scan cannot be estimated: they are left out
    (the weights of the rest are renormalised) and counted in ``n_bands_missing``.
    """
    from scipy.stats import norm

    rows = {r["group"]: r for r in by_age.to_pylist() if r["group"] not in ("all", "unknown")}
    unknown = sorted(set(rows) - set(standard))
    require(
        not unknown, f"age bands {unknown} are not in the standard population {sorted(standard)}"
    )
    used = {b: w for b, w in standard.items() if b in rows and rows[b]["n_decided"] > 0}
    require(bool(used), "no age band of the standard population has a decided scan")
    total = sum(used.values())
    p = {b: rows[b]["n_steatosis"] / rows[b]["n_decided"] for b in used}
    est = sum(w * p[b] for b, w in used.items()) / total
    var = sum(w**2 * p[b] * (1 - p[b]) / rows[b]["n_decided"] for b, w in used.items()) / total**2
    z = float(norm.ppf(0.5 + confidence / 2))
    half = z * float(np.sqrt(var))
    return {
        "prevalence_pct": 100 * est,
        "ci_lo_pct": 100 * max(0.0, est - half),
        "ci_hi_pct": 100 * min(1.0, est + half),
        "n_decided": float(sum(rows[b]["n_decided"] for b in used)),
        "n_bands_missing": float(len(set(standard) - set(used))),
    }
