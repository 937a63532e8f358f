"""Report sections on quality: segmentation accuracy (Dice), repeatability, the gallery of
flagged scans, and how to reproduce the report."""

from __future__ import annotations

import math
import os
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from screening.location import is_url
from screening.stats.report._figures import StripPanel, strip_box_plot
from screening.stats.report._gallery import gallery_html
from screening.stats.report._html import (
    Section,
    esc,
    fmt_int,
    fmt_num,
    img_tag,
    method_label,
    natural_key,
    not_computed,
    table,
)
from screening.stats.report._inputs import Loaded, floats
from screening.stats.report._sec_prevalence import methods_in

__all__ = [
    "gallery_section",
    "repeatability_section",
    "reproduce_section",
    "segmentation_section",
]

Row = Mapping[str, Any]

ORGAN_ORDER = ("liver", "spleen")
METRIC_ORDER = ("dice", "jaccard", "hd_mm", "hd95_mm", "assd_mm")
#: Seed of the horizontal jitter of the strip plot (fixed: the same inputs give the same figure).
JITTER_SEED = 0


def _organs(rows: Sequence[Row]) -> list[str]:
    seen = {str(r["organ"]) for r in rows}
    return [o for o in ORGAN_ORDER if o in seen] + sorted(seen - set(ORGAN_ORDER))


def _summary_table(rows: Sequence[Row]) -> str:
    metrics = {str(r["metric"]) for r in rows}
    ordered = [m for m in METRIC_ORDER if m in metrics] + sorted(metrics - set(METRIC_ORDER))
    cells: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in rows:
        key = (str(r["cohort"]), str(r["organ"]), str(r["group"]))
        digits = 3 if r["metric"] in ("dice", "jaccard") else 1
        undefined = r.get("n_undefined")
        extra = f", {fmt_int(undefined)} undefined" if undefined else ""
        cells.setdefault(key, {})[str(r["metric"])] = (
            f"{fmt_num(r.get('mean'), digits)} ± {fmt_num(r.get('std'), digits)} "
            f"(n={fmt_int(r.get('n'))}{extra})"
        )
    keys = sorted(cells, key=lambda k: (natural_key(k[0]), k[1], natural_key(k[2])))
    body = [[*k, *(cells[k].get(m, "—") for m in ordered)] for k in keys]
    return table(
        ["cohort", "organ", "group", *ordered],
        body,
        numeric_from=3,
        caption="Segmentation metrics, mean ± SD (distances in mm)",
    )


def segmentation_section(segmentation: Loaded, summary: Loaded) -> Section:
    """Dice of the AI masks against the expert masks by cohort and group (box + points), one
    panel per organ, and the summary table of every metric."""
    heading = "Segmentation accuracy (Dice)"
    parts = []
    if segmentation.table is None:
        parts.append(not_computed(segmentation.why))
    else:
        rows = segmentation.rows()
        panels = []
        for organ in _organs(rows):
            sub = [r for r in rows if r["organ"] == organ]
            keys = sorted(
                {(str(r["cohort"]), str(r["group"])) for r in sub},
                key=lambda k: (natural_key(k[0]), natural_key(k[1])),
            )
            groups = [
                (
                    f"{c} / {g}",
                    floats([r for r in sub if (r["cohort"], r["group"]) == (c, g)], "dice"),
                )
                for c, g in keys
            ]
            panels.append(StripPanel(organ, groups))
        dice = floats(rows, "dice")
        lowest = float(np.nanmin(dice)) if np.isfinite(dice).any() else 0.0
        ylim = (max(0.0, math.floor((lowest - 0.05) * 10) / 10), 1.02)
        rng = np.random.default_rng(JITTER_SEED)
        png = strip_box_plot(panels, ylabel="Dice vs expert mask", rng=rng, ylim=ylim)
        parts.append(img_tag(png, "Dice coefficient by cohort and group, liver and spleen"))
        undefined = Counter(
            str(r.get("reason") or "no reason given") for r in rows if r.get("dice") is None
        )
        if undefined:
            text = ", ".join(f"{k}: {v}" for k, v in sorted(undefined.items()))
            parts.append(
                f'<p class="note">Dice undefined for {sum(undefined.values())} '
                f"mask pair(s) ({esc(text)}); they are not drawn.</p>"
            )
    parts.append(
        _summary_table(summary.rows()) if summary.table is not None else not_computed(summary.why)
    )
    return Section("segmentation", heading, "\n".join(parts))


def repeatability_section(repeatability: Loaded) -> Section:
    """Within-subject SD, repeatability coefficient and CV per method (repeat scans)."""
    heading = "Repeatability"
    if repeatability.table is None:
        return Section("repeatability", heading, not_computed(repeatability.why))
    rows = repeatability.rows()
    order = methods_in(rows)
    rows = sorted(rows, key=lambda r: order.index(str(r["method"])))
    body = [
        [
            method_label(r["method"]),
            fmt_int(r.get("n_subjects")),
            fmt_int(r.get("n_measurements")),
            fmt_num(r.get("mean")),
            fmt_num(r.get("within_sd"), 2),
            fmt_num(r.get("repeatability_coefficient"), 2),
            fmt_num(r.get("within_cv_pct"), 1),
            str(r.get("note") or ""),
        ]
        for r in rows
    ]
    head = [
        "method",
        "subjects",
        "measurements",
        "mean, HU",
        "within-subject SD, HU",
        "repeatability coefficient, HU",
        "within-subject CV, %",
        "note",
    ]
    note = (
        '<p class="note">Repeat scans of the same subject: within-subject SD from the pooled '
        "within-subject variance; repeatability coefficient 1.96 × √2 × SD (the difference "
        "between two scans of one subject stays within it in 95% of pairs). HU has an "
        "arbitrary zero, so read the CV with care; the coefficient in HU is the number to "
        "read.</p>"
    )
    return Section("repeatability", heading, table(head, body, text_cols=(-1,)) + note)


def gallery_section(
    measurements: Sequence[Row], results_dir: str | os.PathLike[str], max_gallery: int
) -> tuple[Section, int]:
    """The QC overlays of flagged scans as thumbnails; also returns how many were embedded."""
    body, n = gallery_html(measurements, results_dir, max_gallery)
    return Section("gallery", "QC gallery: flagged scans", body), n


def reproduce_section(
    summary: Mapping[str, Any],
    stats_dir: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
) -> Section:
    """The commands that recompute the statistics and this report, and list flagged scans."""
    q = shlex.quote
    stats, results, out = (
        q(str(p) if is_url(p) else str(Path(p))) for p in (stats_dir, results_dir, out_html)
    )
    pipeline = summary.get("pipeline_id")
    reference = summary.get("reference")
    options = (f" --pipeline {q(str(pipeline))}" if pipeline else "") + (
        f" --reference {q(str(reference))}" if reference else ""
    )
    # SQL goes in double quotes: its string literals use single quotes.
    flagged_sql = (
        "select scan_id, status, reason, qc_flags, overlay_file from measurements "
        "where status <> 'ok' or len(qc_flags) > 0 order by status, scan_id"
    )
    prevalence_sql = (
        "select cohort, count(*) as n, round(avg(steatosis_roi::int) * 100, 1) as pct_roi "
        "from measurements where status = 'ok' group by cohort order by cohort"
    )
    lines = [
        "# 1. the statistics this report shows (Parquet tables + summary.json in STATS)",
        f"screening stats {results} --out {stats}{options}",
        "# 2. this report (from Python: screening.stats.report.render_report(STATS, RESULTS, OUT))",
        f"screening report {results} --stats {stats} --out {out}",
        "# 3. the flagged scans behind the gallery, and a quick prevalence check (DuckDB SQL)",
        f'screening query {results} "{flagged_sql}"',
        f'screening query {results} "{prevalence_sql}"',
        "# 4. check the report renders in a browser (headless Chromium screenshot)",
        f"scripts/check_report.sh {out} report.png",
    ]
    body = (
        f"<pre>{esc(chr(10).join(lines))}</pre>"
        '<p class="note">Paths are those this report was made from. `screening stats --help`, '
        "`screening query --examples` list the other options and queries.</p>"
    )
    return Section("reproduce", "How to reproduce", body)
