"""Render the screening report: one self-contained HTML file from STATS and RESULTS."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from screening._version import __version__
from screening.config import require
from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.fsutil import atomic_write_text
from screening.reasons import ReasonCode
from screening.stats.report._html import Section, fmt_int, page
from screening.stats.report._inputs import Loaded, load_measurements, load_stats, load_summary
from screening.stats.report._sec_prevalence import (
    headline_section,
    pipeline_ids,
    prevalence_groups_section,
    site_section,
)
from screening.stats.report._sec_quality import (
    gallery_section,
    repeatability_section,
    reproduce_section,
    segmentation_section,
)
from screening.stats.report._sec_readers import (
    agreement_section,
    attenuation_section,
    bland_altman_section,
    confusion_section,
    roc_section,
    scatter_section,
)

__all__ = ["DEFAULT_THRESHOLD_HU", "SECTION_HEADINGS", "render_report"]

log = logging.getLogger(__name__)

#: Steatosis threshold (HU) drawn on the figures when the STATS files do not state one.
DEFAULT_THRESHOLD_HU = STEATOSIS_THRESHOLD_HU

#: The report's section headings, in order (each section is always present; one whose input
#: is missing says "not computed: <why>").
SECTION_HEADINGS = (
    "Headline numbers",
    "Prevalence by site",
    "Prevalence by cohort, scanner, sex and age band",
    "Attenuation by method",
    "AI versus expert readers",
    "Bland–Altman analysis",
    "Agreement with expert readers",
    "ROC curves and classification",
    "Confusion matrices",
    "Segmentation accuracy (Dice)",
    "Repeatability",
    "QC gallery: flagged scans",
    "How to reproduce",
)

#: Measurements columns the report reads (the rest of the row is never shown).
_MEASUREMENT_COLUMNS = (
    "scan_id",
    "pipeline_id",
    "cohort",
    "status",
    "reason",
    "qc_flags",
    "overlay_file",
    "contrast_suspected",
)


def _threshold(classification: Loaded, summary: Mapping[str, Any]) -> float:
    values = {
        float(r["threshold_hu"]) for r in classification.rows() if r.get("threshold_hu") is not None
    }
    if len(values) == 1:
        return values.pop()
    config = summary.get("config")
    for source in (summary, config if isinstance(config, Mapping) else {}):
        value = source.get("threshold_hu")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return DEFAULT_THRESHOLD_HU


def render_report(
    stats_dir: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    *,
    title: str = "Hepatic steatosis screening",
    max_gallery: int = 24,
) -> Path:
    """Write the screening report as one self-contained HTML file.

    Tables are HTML; figures are PNG images inline as base64 data URIs; the CSS is inline.
    The page loads nothing from elsewhere and runs no script, so it can be mailed or archived
    as is. Any STATS file may be missing: its section then says "not computed: <why>".

    Parameters
    ----------
    stats_dir : path
        Folder written by ``screening stats``: ``prevalence.parquet``,
        ``prevalence_standardised.parquet``, ``classification.parquet``, ``roc.parquet``,
        ``agreement.parquet``, ``agreement_matrix.parquet``, ``paired.parquet``,
        ``segmentation.parquet``, ``segmentation_summary.parquet``, ``repeatability.parquet``
        and ``summary.json`` (each optional).
    results_dir : path
        RESULTS folder of a run: ``measurements/`` (hive-partitioned Parquet) and the QC
        overlays its ``overlay_file`` column points at (relative to ``results_dir``).
    out_html : path
        The report to write (its folder is created). Written to a temporary sibling, then
        renamed into place: a reader never sees half a report.
    title : str
        Page title and heading.
    max_gallery : int
        Flagged scans shown in the QC gallery at most (>= 0); the page says how many more.

    Returns
    -------
    pathlib.Path
        ``out_html``.

    Raises
    ------
    ConfigError
        ``max_gallery`` is negative.

    Notes
    -----
    Scans appear by pseudonymous ``scan_id`` only (first 12 characters in the gallery); the
    free-text ``message`` of a measurement and any column not named in the sections are never
    written to the page.
    """
    require(max_gallery >= 0, f"max_gallery must be >= 0, got {max_gallery}")
    summary, summary_why = load_summary(stats_dir)
    skipped = summary.get("not_computed")
    stats = load_stats(stats_dir, skipped if isinstance(skipped, Mapping) else None)
    ids = pipeline_ids(stats["prevalence"])
    pipeline = summary.get("pipeline_id") or (ids[0] if len(ids) == 1 else None)
    meas, meas_note = load_measurements(results_dir, str(pipeline) if pipeline else None)
    keep = [c for c in _MEASUREMENT_COLUMNS if c in meas.column_names]
    rows = meas.select(keep).to_pylist()
    threshold = _threshold(stats["classification"], summary)

    gallery, n_thumbs = gallery_section(rows, results_dir, max_gallery)
    sections: list[Section] = [
        headline_section(summary, summary_why, stats["prevalence"], rows, meas_note),
        site_section(stats["prevalence"]),
        prevalence_groups_section(stats["prevalence"], stats["prevalence_standardised"]),
        attenuation_section(stats["paired"], threshold),
        scatter_section(stats["paired"], stats["agreement"], threshold),
        bland_altman_section(stats["paired"]),
        agreement_section(stats["agreement"], stats["agreement_matrix"]),
        roc_section(stats["roc"], stats["classification"], stats["classification_grades"]),
        confusion_section(stats["classification"]),
        segmentation_section(stats["segmentation"], stats["segmentation_summary"]),
        repeatability_section(stats["repeatability"]),
        gallery,
        reproduce_section(summary, stats_dir, results_dir, out_html),
    ]
    assert tuple(s.heading for s in sections) == SECTION_HEADINGS

    subtitle = " · ".join(
        part
        for part in (
            f"pipeline {pipeline}" if pipeline else "",
            f"{fmt_int(summary['n_scans'])} scans" if summary.get("n_scans") is not None else "",
            f"statistics of {summary['created_at']}" if summary.get("created_at") else "",
            f"steatosis at ≤ {threshold:g} HU",
        )
        if part
    )
    footer = (
        f"screening {__version__} · self-contained report: no external resources, no scripts · "
        "scans are identified by pseudonymous scan_id only"
    )
    off_domain = sum(
        1 for r in rows if ReasonCode.MODEL_SYNTHETIC_ONLY.value in (r.get("qc_flags") or [])
    )
    banner = (
        f"Warning: {off_domain} scan(s) not made by `screening synth` were segmented by a model "
        "trained on synthetic phantoms only (QC flag MODEL_SYNTHETIC_ONLY). Their attenuation, "
        "prevalence and agreement figures say nothing about real livers: re-run with the "
        "real-CT model (--model liver3mm, the default)."
        if off_domain
        else ""
    )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page(title, subtitle, sections, footer, banner))
    missing = [name for name, loaded in stats.items() if loaded.table is None]
    log.info(
        "report written: %s (%d bytes, %d gallery thumbnails; not computed: %s)",
        out,
        out.stat().st_size,
        n_thumbs,
        ", ".join(missing) or "none",
    )
    return out
