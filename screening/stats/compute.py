"""``screening stats``: every statistic of a run, from its Parquet, into ``STATS/*.parquet``.

Inputs: RESULTS (measurements of one pipeline; the store is found through
``RESULTS/pipelines/``), the store's scans table and masks, and optional reference reads.
Scans enter the agreement and classification analyses only when measured (status ok) and not
contrast-enhanced (the method is for unenhanced CT); how many were left out, and why, is in
``summary.json``. A table that cannot be computed (no reads, no reference masks) is skipped
with its reason in ``summary.json``, never silently.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from screening.config import FrozenConfig, require
from screening.constants import METHOD_COLUMNS, STEATOSIS_THRESHOLD_HU
from screening.errors import ConfigError
from screening.location import Location
from screening.store.results import read_pipeline

__all__ = ["METHODS", "StatsConfig", "StatsSummary", "compute_stats"]

log = logging.getLogger(__name__)

#: AI method -> measurements column (HU).
METHODS = METHOD_COLUMNS


@dataclass(frozen=True, kw_only=True)
class StatsConfig(FrozenConfig):
    """Settings of ``screening stats`` (the paper's: 40 HU, 1,000 bootstrap samples)."""

    threshold_hu: float = STEATOSIS_THRESHOLD_HU
    n_boot: int = 1000
    seed: int = 0
    confidence: float = 0.95
    dimensions: tuple[str, ...] = ("cohort", "site", "scanner", "sex", "age_band")
    segmentation: bool = True
    #: What prevalence counts: each scan, or each patient once (``PREVALENCE_UNITS``).
    prevalence_unit: str = "scan"

    def __post_init__(self) -> None:
        from screening.stats.prevalence import PREVALENCE_UNITS

        require(self.n_boot >= 100, f"n_boot must be >= 100, got {self.n_boot}")
        require(
            self.prevalence_unit in PREVALENCE_UNITS,
            f"prevalence_unit must be one of {PREVALENCE_UNITS}, got {self.prevalence_unit!r}",
        )
        require(0 < self.confidence < 1, "confidence must be in (0, 1)")


@dataclass
class StatsSummary:
    """What was written, and what was not and why."""

    out: Path
    pipeline_id: str
    store: str
    tables: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"statistics of pipeline {self.pipeline_id[:12]} -> {self.out}"]
        lines += [f"  {name}.parquet: {n} row(s)" for name, n in self.tables.items()]
        lines += [f"  {name}: not computed ({why})" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _write(out: Path, name: str, table: pa.Table, summary: StatsSummary) -> None:
    """Write ``STATS/<name>.parquet`` atomically; tables with a contract
    (``schemas/stats_<name>.yaml``) are checked against it first."""
    from screening.schemas import load_table_schema, table_names

    if f"stats_{name}" in table_names():
        load_table_schema(f"stats_{name}").validate(table)
    tmp = out / f".{name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / f"{name}.parquet")
    summary.tables[name] = table.num_rows


def _resolve(
    results: Location, store: str | os.PathLike[str] | None, pipeline_id: str | None
) -> tuple[str, Location]:
    """(pipeline_id, store) from RESULTS/pipelines, or from the arguments."""
    try:
        record = read_pipeline(results, pipeline_id)
        return str(record["pipeline_id"]), Location.of(store or record["store"])
    except ConfigError:
        if store is None:
            raise
    from screening.query import connect

    con = connect(results, store)
    where = "where pipeline_id like $p" if pipeline_id else ""
    rows = con.sql(
        f"select pipeline_id from measurements {where} order by measured_at desc limit 1",
        params={"p": f"{pipeline_id}%"} if pipeline_id else None,
    ).fetchall()
    if not rows:
        raise ConfigError(f"no measurements of pipeline {pipeline_id or '(any)'} in {results}")
    return str(rows[0][0]), Location.of(store)


def _scan_values(con: Any, pid: str) -> pa.Table:
    """One row per catalog scan with its latest measurement of ``pid`` (nulls if none)."""
    return con.sql(
        """
        select s.scan_id, s.cohort, s.site, s.patient_pseudo_id, s.study_year,
               m.status as measure_status, coalesce(m.contrast_suspected, false) as contrast,
               m.liver_hu_3d, m.liver_hu_2d, m.liver_hu_roi, m.liver_hu_3d_eroded,
               m.steatosis_roi, m.pdff_est_pct
        from (select * from scans where status = 'ok'
              qualify row_number() over (partition by scan_id order by ingested_at desc) = 1) s
        left join (select * from measurements where pipeline_id = $pid
                   qualify row_number() over (partition by scan_id
                                              order by measured_at desc) = 1) m
        using (scan_id)
        order by s.scan_id
        """,
        params={"pid": pid},
    ).to_arrow_table()


def compute_stats(
    results: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    reference: str | os.PathLike[str] | None = None,
    pipeline_id: str | None = None,
    cfg: StatsConfig | None = None,
    standard_population: Mapping[str, float] | None = None,
    client: Any = None,
) -> StatsSummary:
    """Compute the statistics of one pipeline's results and write them under ``out``."""
    from screening.query import connect
    from screening.stats.prevalence import age_standardised, prevalence_all, prevalence_table

    cfg = cfg or StatsConfig()
    results_dir, out_dir = Location.of(results), Path(out)
    pid, store_dir = _resolve(results_dir, store, pipeline_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = StatsSummary(out_dir, pid, str(store_dir))
    con = connect(results_dir, store_dir)
    scans = _scan_values(con, pid)
    eligible = scans.filter(
        pc.and_(pc.equal(scans["measure_status"], "ok"), pc.invert(scans["contrast"]))
    )
    summary.counts = {
        "catalog_ok": scans.num_rows,
        "measured_ok": int(pc.sum(pc.equal(scans["measure_status"], "ok")).as_py() or 0),
        "contrast_excluded": int(pc.sum(scans["contrast"]).as_py() or 0),
        "eligible": eligible.num_rows,
    }

    _write(
        out_dir,
        "prevalence",
        prevalence_all(
            results_dir,
            store_dir,
            dimensions=cfg.dimensions,
            pipeline_id=pid,
            unit=cfg.prevalence_unit,
            con=con,
        ),
        summary,
    )
    if standard_population:
        rows = []
        for method in ("ai_roi", "ai_3d", "ai_2d"):
            by_age = prevalence_table(
                results_dir, store_dir, by="age_band", method=method, pipeline_id=pid,
                unit=cfg.prevalence_unit, con=con,
            )  # fmt: skip
            rows.append({"method": method, **age_standardised(by_age, dict(standard_population))})
        _write(out_dir, "prevalence_standardised", pa.Table.from_pylist(rows), summary)

    reads = _reads(reference, con, summary)
    truth_by_scan: dict[str, bool] = {}
    if reads is not None:
        truth_by_scan = _reader_analyses(out_dir, eligible, reads, cfg, summary)
    if cfg.segmentation:
        _segmentation(out_dir, store_dir, eligible, truth_by_scan, cfg, summary, client)
    _repeatability(out_dir, eligible, summary)

    meta = {
        "pipeline_id": pid,
        "store": str(store_dir),
        "results": results_dir.url,
        "reference": str(reference) if reference else None,
        "config": cfg.to_dict(),
        "counts": summary.counts,
        "tables": summary.tables,
        "not_computed": summary.skipped,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out_dir / "summary.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def _reads(reference: Any, con: Any, summary: StatsSummary) -> pa.Table | None:
    if reference is None:
        for name in ("agreement", "classification"):
            summary.skipped[name] = "no reference reads (--reference READS)"
        return None
    from screening.stats.reads import load_reference_reads

    scans = con.sql("select * from scans").to_arrow_table()
    return load_reference_reads(reference, scans)


def _join_reads(eligible: pa.Table, reads: pa.Table) -> pa.Table:
    """One row per (eligible scan, reader): the AI columns beside the reader's value."""
    keep = ["scan_id", "cohort", "site", *METHODS.values()]
    ai = eligible.select(keep)
    extra = [c for c in reads.column_names if c not in ("cohort", "site")]
    return ai.join(reads.select(extra), keys="scan_id", join_type="inner").sort_by(
        [("scan_id", "ascending"), ("reader", "ascending")]
    )


def _reader_analyses(
    out: Path, eligible: pa.Table, reads: pa.Table, cfg: StatsConfig, summary: StatsSummary
) -> dict[str, bool]:
    """Agreement and classification against the readers; returns the per-scan consensus
    (mean of the readers' ROI <= threshold), used to group segmentation by normal/steatosis."""
    from screening.stats.agreement import agreement_table, reader_matrix
    from screening.stats.classification import classification_table, roc_band

    paired = _join_reads(eligible, reads)
    summary.counts["paired_reads"] = paired.num_rows
    if paired.num_rows == 0:
        for name in ("agreement", "classification"):
            summary.skipped[name] = "no read belongs to an eligible (measured, unenhanced) scan"
        return {}
    _write(out, "paired", paired, summary)
    _write(out, "agreement", agreement_table(paired, methods=METHODS), summary)
    _write(out, "agreement_matrix", reader_matrix(paired, methods=METHODS), summary)

    # Truth per reader (its ROI <= threshold) plus the readers' consensus (mean ROI).
    by_reader: dict[str, pa.Table] = {}
    for reader in sorted(set(paired["reader"].to_pylist()) - {None}):
        sub = paired.filter(pc.equal(paired["reader"], reader))
        by_reader[str(reader)] = sub.append_column(
            "truth", pc.less_equal(sub["roi_hu"], cfg.threshold_hu)
        )
    consensus = paired.group_by("scan_id").aggregate([("roi_hu", "mean")])
    truth_by_scan = {
        s: bool(v <= cfg.threshold_hu)
        for s, v in zip(
            consensus["scan_id"].to_pylist(), consensus["roi_hu_mean"].to_pylist(), strict=True
        )
        if v is not None
    }
    ai = eligible.select(["scan_id", *METHODS.values()])
    cons = ai.filter(pc.is_in(ai["scan_id"], pa.array(list(truth_by_scan))))
    by_reader["readers_mean"] = cons.append_column(
        "truth", pa.array([truth_by_scan[s] for s in cons["scan_id"].to_pylist()])
    )
    by_reader.update(_reference_standards(paired, ai))

    tables, roc_rows = [], []
    for reader, sub in by_reader.items():
        tables.append(
            classification_table(
                sub,
                truth_col="truth",
                methods=METHODS,
                reader=reader,
                threshold_hu=cfg.threshold_hu,
                n_boot=cfg.n_boot,
                seed=cfg.seed,
                confidence=cfg.confidence,
            )
        )
        roc_rows += _roc_rows(sub, reader, cfg, roc_band)
    _write(out, "classification", pa.concat_tables(tables, promote_options="permissive"), summary)
    grades = _grade_roc(paired, ai, cfg)
    if grades is not None:
        _write(out, "classification_grades", grades, summary)
    if roc_rows:
        _write(out, "roc", pa.Table.from_pylist(roc_rows), summary)
    return truth_by_scan


def _reference_standards(paired: pa.Table, ai: pa.Table) -> dict[str, pa.Table]:
    """Truth from columns given with the reads: ``label``, MRI-PDFF, biopsy grade."""
    from screening.stats.classification import reference_standard_truth

    out: dict[str, pa.Table] = {}
    standards: tuple[tuple[str, Literal["mri_pdff", "biopsy"] | None], ...] = (
        ("label", None),
        ("mri_pdff_pct", "mri_pdff"),
        ("pdff_pct", "mri_pdff"),
        ("biopsy_grade", "biopsy"),
    )
    for column, kind in standards:
        if column not in paired.column_names:
            continue
        per_scan: dict[str, Any] = {}
        for s, v in zip(paired["scan_id"].to_pylist(), paired[column].to_pylist(), strict=True):
            if v is not None and s not in per_scan:
                per_scan[s] = v
        if not per_scan:
            continue
        sub = ai.filter(pc.is_in(ai["scan_id"], pa.array(list(per_scan))))
        raw = [per_scan[s] for s in sub["scan_id"].to_pylist()]
        truth = (
            pa.array([bool(v) for v in raw])
            if kind is None
            else reference_standard_truth(raw, kind)
        )
        out[column] = sub.append_column("truth", truth)
    return out


def _grade_roc(paired: pa.Table, ai: pa.Table, cfg: StatsConfig) -> pa.Table | None:
    """AUC for >= mild, >= moderate and severe when the reads carry a reference ``grade``."""
    from screening.stats.classification import grade_roc_table

    if "grade" not in paired.column_names:
        return None
    per_scan: dict[str, Any] = {}
    for s, g in zip(paired["scan_id"].to_pylist(), paired["grade"].to_pylist(), strict=True):
        if g is not None and s not in per_scan:
            per_scan[s] = g
    if not per_scan:
        return None
    sub = ai.filter(pc.is_in(ai["scan_id"], pa.array(list(per_scan))))
    hu = {m: sub[c].to_numpy(zero_copy_only=False).astype(np.float64) for m, c in METHODS.items()}
    grades = [per_scan[s] for s in sub["scan_id"].to_pylist()]
    return grade_roc_table(hu, grades, n_boot=cfg.n_boot, seed=cfg.seed, confidence=cfg.confidence)


def _roc_rows(sub: pa.Table, reader: str, cfg: StatsConfig, roc_band: Any) -> list[dict[str, Any]]:
    truth = sub["truth"].to_numpy(zero_copy_only=False)
    if truth.dtype == object or len(set(truth.tolist())) < 2:
        return []
    hu = {m: sub[c].to_numpy(zero_copy_only=False).astype(np.float64) for m, c in METHODS.items()}
    band = roc_band(hu, truth.astype(bool), n_boot=cfg.n_boot, seed=cfg.seed)
    rows = []
    for i, method in enumerate(band.methods):
        for j, fpr in enumerate(band.fpr):
            rows.append(
                {
                    "method": method,
                    "reader": reader,
                    "fpr": float(fpr),
                    "tpr": float(band.tpr[i, j]),
                    "tpr_lo": float(band.tpr_lo[i, j]),
                    "tpr_hi": float(band.tpr_hi[i, j]),
                }
            )
    return rows


def _segmentation(
    out: Path,
    store: Location,
    eligible: pa.Table,
    truth_by_scan: dict[str, bool],
    cfg: StatsConfig,
    summary: StatsSummary,
    client: Any,
) -> None:
    from screening.stats.segmentation import segmentation_table, summarise_segmentation

    table = segmentation_table(store, client=client)
    defined = table.filter(pc.is_null(table["reason"])) if table.num_rows else table
    if defined.num_rows == 0:
        summary.skipped["segmentation"] = "no scan has both `seg` and `seg_reference`"
        return
    # Normal vs steatosis: the readers' consensus when reads exist, else the AI-ROI call.
    ai_call = dict(
        zip(eligible["scan_id"].to_pylist(), eligible["steatosis_roi"].to_pylist(), strict=True)
    )
    source = "readers" if truth_by_scan else "ai_roi"
    groups = []
    for s in table["scan_id"].to_pylist():
        call = truth_by_scan.get(s) if truth_by_scan else ai_call.get(s)
        groups.append("unknown" if call is None else ("steatosis" if call else "normal"))
    table = table.append_column("group", pa.array(groups, pa.string()))
    table = table.append_column("group_source", pa.array([source] * table.num_rows))
    _write(out, "segmentation", table, summary)
    _write(
        out,
        "segmentation_summary",
        summarise_segmentation(table, by=["cohort", "organ", "group"]),
        summary,
    )


def _repeatability(out: Path, eligible: pa.Table, summary: StatsSummary) -> None:
    """Repeat scans: the same patient (pseudonym) and study year, measured and unenhanced.
    The scans table keeps no acquisition time (an identifier), so "minutes apart" is the
    caller's cohort design; a store mixing follow-up years is split by ``study_year``."""
    from screening.stats.repeatability import repeatability_table

    subjects = [
        None if p is None else f"{p}:{y}"
        for p, y in zip(
            eligible["patient_pseudo_id"].to_pylist(),
            eligible["study_year"].to_pylist(),
            strict=True,
        )
    ]
    values = eligible.append_column("subject", pa.array(subjects, pa.string()))
    table = repeatability_table(values, subject_col="subject")
    if int(table["n_subjects"][0].as_py() or 0) == 0:
        summary.skipped["repeatability"] = "no patient has two measured, unenhanced scans"
    _write(out, "repeatability", table, summary)
