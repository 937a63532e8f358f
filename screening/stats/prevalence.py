"""Prevalence of steatosis by group with Wilson 95% confidence intervals.

Every scan of the catalog is accounted for in exactly one column: rejected at ingest, not run,
failed, excluded for contrast, measured without a decision, or measured with one. Nothing is
silently dropped from the denominator's story, though only decided scans enter the estimate.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError

__all__ = ["DECISION_COLUMNS", "format_prevalence", "prevalence_table", "wilson_interval"]

#: Method name -> the measurements column holding its steatosis decision.
DECISION_COLUMNS = {
    "ai_roi": "steatosis_roi",
    "ai_3d": "steatosis_3d",
    "ai_2d": "steatosis_2d",
    "ls_ratio": "steatosis_ls",
}

#: Columns of the scans table a prevalence may be grouped by.
GROUP_COLUMNS = ("cohort", "site", "manufacturer", "model", "patient_sex", "convolution_kernel")


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
    lo = np.where(n_arr > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    hi = np.where(n_arr > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
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
) -> pa.Table:
    """Prevalence by ``by`` (a scans-table column) for one pipeline's ``method`` decisions.

    Rows: one per group, then ``all``. ``pipeline_id`` defaults to the most recently measured
    one. Percentages are of decided scans (``n_decided``).
    """
    from screening.query import connect

    require(by in GROUP_COLUMNS, f"by must be one of {GROUP_COLUMNS}, got {by!r}")
    require(method in DECISION_COLUMNS, f"method must be one of {sorted(DECISION_COLUMNS)}")
    decision = DECISION_COLUMNS[method]
    con = connect(results, store)
    pid = pipeline_id or _latest_pipeline(con)
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
    sql = f"""
        select cast(s.{by} as varchar) as "group", {counts} from {source}
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
    return table.append_column("pipeline_id", pa.array([pid] * table.num_rows, pa.string()))


def format_prevalence(table: pa.Table, by: str, method: str) -> str:
    """A plain-text table for the terminal."""
    head = (
        f"{by:<14} {'scans':>6} {'decided':>8} {'steatosis':>9} {'prevalence (95% CI)':>22}"
        f" {'contrast':>8} {'undecided':>9} {'failed':>6} {'rejected':>8} {'not run':>7}"
    )
    pid = str(table["pipeline_id"][0])[:12]
    lines = [f"prevalence of steatosis by {by} ({method}, pipeline {pid}; Wilson 95% CI)"]
    lines += [head, "-" * len(head)]
    for r in table.to_pylist():
        ci = (
            f"{r['prevalence_pct']:5.1f}% ({r['ci_lo_pct']:4.1f}-{r['ci_hi_pct']:5.1f})"
            if r["n_decided"]
            else "-"
        )
        lines.append(
            f"{str(r['group'])[:14]:<14} {r['n_scans']:>6} {r['n_decided']:>8} "
            f"{r['n_steatosis']:>9} {ci:>22} {r['n_contrast_excluded']:>8} "
            f"{r['n_undecided']:>9} {r['n_failed']:>6} {r['n_ingest_rejected']:>8} "
            f"{r['n_not_run']:>7}"
        )
    return "\n".join(lines)
