"""Report sections comparing the AI methods with the expert readers: attenuation box plots,
scatter with Spearman's rho, Bland–Altman, the agreement table and reader matrix, ROC curves
with bootstrap bands and confusion matrices."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from screening.stats.report._figures import (
    BlandAltmanPanel,
    ConfusionPanel,
    RocCurve,
    RocPanel,
    ScatterPanel,
    bland_altman_grid,
    box_plot,
    confusion_grid,
    heat_map,
    roc_grid,
    scatter_grid,
)
from screening.stats.report._html import (
    Section,
    esc,
    fmt_ci,
    fmt_int,
    fmt_num,
    fmt_p,
    img_tag,
    method_label,
    not_computed,
    table,
)
from screening.stats.report._inputs import Loaded, floats
from screening.stats.report._sec_prevalence import methods_in

__all__ = [
    "AI_COLUMNS",
    "agreement_section",
    "attenuation_section",
    "bland_altman_section",
    "confusion_section",
    "roc_section",
    "scatter_section",
    "truth_label",
]

Row = Mapping[str, Any]

#: AI method -> its column in paired.parquet.
AI_COLUMNS = {"ai_3d": "liver_hu_3d", "ai_2d": "liver_hu_2d", "ai_roi": "liver_hu_roi"}
#: Readers drawn in the per-reader figure grids at most (the tables list them all).
MAX_READERS_PLOTTED = 4
#: Bland–Altman limits of agreement: bias ± this many SDs of the differences.
LOA_Z = 1.96


#: Truths drawn in the ROC and confusion-matrix figures at most.
MAX_TRUTHS_PLOTTED = 6
#: Classification "readers" that are not a single reader (``screening stats``): the readers'
#: consensus and reference standards given with the reads, in display order.
TRUTH_LABELS = {
    "readers_mean": "readers' mean ROI",
    "label": "reference label",
    "mri_pdff_pct": "MRI-PDFF",
    "pdff_pct": "MRI-PDFF",
    "biopsy_grade": "biopsy",
}


def truth_label(reader: object) -> str:
    """How a classification truth reads on the page: ``reader A``, ``MRI-PDFF``..."""
    return TRUTH_LABELS.get(str(reader), f"reader {reader}")


def _readers(rows: Sequence[Row]) -> list[str]:
    """Reader names: single readers by name, then the consensus and reference standards."""
    names = {str(r["reader"]) for r in rows if r.get("reader") is not None}
    special = [t for t in TRUTH_LABELS if t in names]
    return sorted(names - set(special)) + special


def _capped(readers: list[str], limit: int = MAX_READERS_PLOTTED) -> tuple[list[str], str]:
    if len(readers) <= limit:
        return readers, ""
    note = (
        f'<p class="note">Figures show the first {limit} of {len(readers)} readers or '
        "reference standards; the tables list them all.</p>"
    )
    return readers[:limit], note


def attenuation_section(paired: Loaded, threshold_hu: float) -> Section:
    """Box plots of liver attenuation: each AI method (one value per scan) and each reader."""
    heading = "Attenuation by method"
    if paired.table is None:
        return Section("attenuation", heading, not_computed(paired.why))
    rows = paired.rows()
    per_scan: dict[str, Row] = {}
    for r in rows:
        per_scan.setdefault(str(r["scan_id"]), r)
    scans = list(per_scan.values())
    groups = [(method_label(m), floats(scans, col)) for m, col in AI_COLUMNS.items()]
    for reader in _readers(rows):
        groups.append(
            (f"reader {reader}", floats([r for r in rows if r["reader"] == reader], "roi_hu"))
        )
    png = box_plot(groups, threshold_hu)
    body = img_tag(png, "Box plots of liver attenuation by method and reader") + (
        f'<p class="note">{len(scans)} scans with expert reads. AI values once per scan (blue); '
        f"each reader's ROI attenuation (orange). Dashed: steatosis threshold "
        f"{threshold_hu:g} HU.</p>"
    )
    return Section("attenuation", heading, body)


def _agreement_lookup(agreement: Loaded) -> dict[tuple[str, str], Row]:
    return {(str(r["method"]), str(r["reader"])): r for r in agreement.rows()}


def _pairs(rows: Sequence[Row], reader: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    sub = [r for r in rows if r.get("reader") == reader]
    return floats(sub, "roi_hu"), floats(sub, column)


def scatter_section(paired: Loaded, agreement: Loaded, threshold_hu: float) -> Section:
    """AI against each reader, one panel per (reader, method), Spearman's rho in the title."""
    heading = "AI versus expert readers"
    if paired.table is None:
        return Section("scatter", heading, not_computed(paired.why))
    rows = paired.rows()
    readers, note = _capped(_readers(rows))
    if not readers:
        return Section("scatter", heading, not_computed("paired.parquet has no reader rows"))
    stats = _agreement_lookup(agreement)
    grid = []
    for reader in readers:
        line = []
        for m, col in AI_COLUMNS.items():
            x, y = _pairs(rows, reader, col)
            rho, n, source = _spearman(stats.get((m, reader)), x, y)
            line.append(
                ScatterPanel(
                    f"{method_label(m)} vs reader {reader}: ρ = {fmt_num(rho, 3)}{source} (n={n})",
                    x,
                    y,
                    f"reader {reader} ROI, HU",
                    f"{method_label(m)}, HU",
                )
            )
        grid.append(line)
    png = scatter_grid(grid, threshold_hu)
    body = (
        img_tag(png, "Scatter plots of AI against expert attenuation")
        + (
            '<p class="note">Grey: identity line; red dashed: the steatosis threshold '
            f"({threshold_hu:g} HU) on both axes. ρ: Spearman's rank correlation (from "
            "agreement.parquet; * computed here when that file lacks it).</p>"
        )
        + note
    )
    return Section("scatter", heading, body)


def _spearman(stat: Row | None, x: np.ndarray, y: np.ndarray) -> tuple[float, int, str]:
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if stat is not None and stat.get("spearman") is not None:
        return float(stat["spearman"]), int(stat.get("n") or n), ""
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, n, ""
    from scipy.stats import spearmanr

    return float(spearmanr(x[ok], y[ok]).statistic), n, "*"


def bland_altman_section(paired: Loaded) -> Section:
    """Bland–Altman plots (AI − reader against their mean) per reader and method."""
    heading = "Bland–Altman analysis"
    if paired.table is None:
        return Section("bland-altman", heading, not_computed(paired.why))
    rows = paired.rows()
    readers, note = _capped(_readers(rows))
    if not readers:
        return Section("bland-altman", heading, not_computed("paired.parquet has no reader rows"))
    grid = []
    for reader in readers:
        line = []
        for m, col in AI_COLUMNS.items():
            x, y = _pairs(rows, reader, col)
            ok = np.isfinite(x) & np.isfinite(y)
            diff, mean = y[ok] - x[ok], (y[ok] + x[ok]) / 2.0
            bias = float(diff.mean()) if diff.size else math.nan
            sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
            title = f"{method_label(m)} − reader {reader} (n={diff.size})"
            line.append(
                BlandAltmanPanel(title, mean, diff, bias, bias - LOA_Z * sd, bias + LOA_Z * sd)
            )
        grid.append(line)
    png = bland_altman_grid(grid)
    body = (
        img_tag(png, "Bland–Altman plots of AI against expert attenuation")
        + (
            '<p class="note">Solid: bias (mean difference, AI − reader); dashed: 95% limits of '
            f"agreement (bias ± {LOA_Z} SD of the differences).</p>"
        )
        + note
    )
    return Section("bland-altman", heading, body)


def _reader_cell(reader: object) -> str:
    """The second rater of an agreement row (a reader, or all of them for a multi-rater ICC)."""
    if reader in ("readers:all", "all"):
        return "all readers" if reader == "readers:all" else "(multi-rater)"
    return str(reader)


def _agreement_table(rows: Sequence[Row]) -> str:
    head = [
        "method",
        "reader",
        "n",
        "ICC(2,1) (95% CI)",
        "Spearman ρ",
        "ρ p",
        "MSE, HU²",
        "mean diff ± SD, HU",
        "KS D",
        "KS p",
        "normality p (AI / reader)",
        "BA bias [LoA], HU",
        "t-test p",
        "Wilcoxon p",
        "note",
    ]
    body = []
    for r in rows:
        md = fmt_num(r.get("mean_diff"))
        sd = r.get("sd_diff")
        body.append(
            [
                method_label(r["method"]),
                _reader_cell(r.get("reader")),
                fmt_int(r.get("n")),
                fmt_ci(r.get("icc"), r.get("icc_lo"), r.get("icc_hi"), 3),
                fmt_num(r.get("spearman"), 3),
                fmt_p(r.get("spearman_p")),
                fmt_num(r.get("mse")),
                md if sd is None else f"{md} ± {fmt_num(sd)}",
                fmt_num(r.get("ks_stat"), 3),
                fmt_p(r.get("ks_p")),
                f"{fmt_p(r.get('ks_norm_p_method'))} / {fmt_p(r.get('ks_norm_p_reader'))}",
                fmt_ci(r.get("ba_bias"), r.get("ba_loa_lo"), r.get("ba_loa_hi")),
                fmt_p(r.get("t_p")),
                fmt_p(r.get("wilcoxon_p")),
                str(r.get("note") or ""),
            ]
        )
    return table(
        head, body, numeric_from=2, caption="Agreement of attenuation (HU)", text_cols=(-1,)
    )


def agreement_section(agreement: Loaded, matrix: Loaded) -> Section:
    """The agreement table (ICC with CI, Spearman, MSE, KS, Bland–Altman...) and the ICC of
    every pair of raters as a heat map."""
    heading = "Agreement with expert readers"
    parts = [
        _agreement_table(agreement.rows())
        if agreement.table is not None
        else not_computed(agreement.why)
    ]
    parts.append("<h3>Rater matrix</h3>")
    if matrix.table is None:
        parts.append(not_computed(matrix.why))
    else:
        rows = matrix.rows()
        raters: list[str] = []
        for r in rows:
            for key in ("rater_a", "rater_b"):
                if str(r[key]) not in raters:
                    raters.append(str(r[key]))
        index = {name: i for i, name in enumerate(raters)}
        icc = np.full((len(raters), len(raters)), math.nan)
        for r in rows:
            if r.get("icc") is not None:
                icc[index[str(r["rater_a"])], index[str(r["rater_b"])]] = float(r["icc"])
        labels = [method_label(x) if x in AI_COLUMNS else f"reader {x}" for x in raters]
        lo = min(0.0, float(np.nanmin(icc))) if np.isfinite(icc).any() else 0.0
        png = heat_map(labels, icc, title="ICC(2,1) between raters", vmin=lo, vmax=1.0)
        parts.append(img_tag(png, "Heat map of the ICC between every pair of raters"))
    parts.append(
        '<p class="note">ICC(2,1): two-way random effects, absolute agreement, single '
        "measures. Differences are AI − reader (or first reader − second).</p>"
    )
    return Section("agreement", heading, "\n".join(parts))


def _classification_table(rows: Sequence[Row]) -> str:
    head = [
        "method",
        "truth",
        "n",
        "pos / neg",
        "AUC (95% CI)",
        "sensitivity (95% CI)",
        "specificity (95% CI)",
        "TP",
        "FP",
        "TN",
        "FN",
        "bootstrap used",
        "note",
    ]
    body = [
        [
            method_label(r["method"]),
            truth_label(r.get("reader")),
            fmt_int(r.get("n")),
            f"{fmt_int(r.get('n_pos'))} / {fmt_int(r.get('n_neg'))}",
            fmt_ci(r.get("auc"), r.get("auc_lo"), r.get("auc_hi"), 3),
            fmt_ci(r.get("sensitivity"), r.get("sensitivity_lo"), r.get("sensitivity_hi"), 3),
            fmt_ci(r.get("specificity"), r.get("specificity_lo"), r.get("specificity_hi"), 3),
            fmt_int(r.get("tp")),
            fmt_int(r.get("fp")),
            fmt_int(r.get("tn")),
            fmt_int(r.get("fn")),
            fmt_int(r.get("n_boot_used")),
            str(r.get("note") or ""),
        ]
        for r in rows
    ]
    return table(
        head, body, numeric_from=2, caption="Classification at the threshold", text_cols=(-1,)
    )


def _grades_table(rows: Sequence[Row]) -> str:
    head = ["method", "reference grade", "n", "pos / neg", "AUC (95% CI)", "note"]
    body = [
        [
            method_label(r["method"]),
            str(r.get("problem") or ""),
            fmt_int(r.get("n")),
            f"{fmt_int(r.get('n_pos'))} / {fmt_int(r.get('n_neg'))}",
            fmt_ci(r.get("auc"), r.get("auc_lo"), r.get("auc_hi"), 3),
            str(r.get("note") or ""),
        ]
        for r in rows
    ]
    return table(head, body, numeric_from=2, caption="AUC per grade threshold", text_cols=(-1,))


def roc_section(roc: Loaded, classification: Loaded, grades: Loaded | None = None) -> Section:
    """ROC curves with pointwise bootstrap bands, one panel per reader taken as truth, and the
    classification table (AUC, sensitivity, specificity with CIs)."""
    heading = "ROC curves and classification"
    parts = []
    auc = {(str(r["method"]), str(r["reader"])): r for r in classification.rows()}
    if roc.table is None:
        parts.append(not_computed(roc.why))
    else:
        rows = roc.rows()
        readers, note = _capped(_readers(rows), MAX_TRUTHS_PLOTTED)
        panels = []
        for reader in readers:
            curves = []
            for m in methods_in([r for r in rows if r["reader"] == reader]):
                pts = sorted(
                    (r for r in rows if r["reader"] == reader and r["method"] == m),
                    key=lambda r: float(r["fpr"]),
                )
                a = auc.get((m, reader))
                label = method_label(m) + (
                    f" AUC {fmt_ci(a.get('auc'), a.get('auc_lo'), a.get('auc_hi'), 3)}" if a else ""
                )
                curves.append(
                    RocCurve(
                        label,
                        floats(pts, "fpr"),
                        floats(pts, "tpr"),
                        floats(pts, "tpr_lo"),
                        floats(pts, "tpr_hi"),
                    )
                )
            panels.append(RocPanel(f"truth: {truth_label(reader)}", curves))
        parts.append(img_tag(roc_grid(panels), "ROC curves with 95% bootstrap bands"))
        parts.append(
            '<p class="note">Score: −HU (lower attenuation, more fat). Shaded: pointwise 95% '
            "bootstrap band of the sensitivity at each false-positive rate.</p>" + note
        )
    parts.append(
        _classification_table(classification.rows())
        if classification.table is not None
        else not_computed(classification.why)
    )
    if grades is not None and grades.table is not None:  # only when the reads carry grades
        parts.append(_grades_table(grades.rows()))
    return Section("roc", heading, "\n".join(parts))


def confusion_section(classification: Loaded) -> Section:
    """A 2×2 confusion matrix per method and reader, from tp/fp/tn/fn."""
    heading = "Confusion matrices"
    if classification.table is None:
        return Section("confusion", heading, not_computed(classification.why))
    rows = [
        r
        for r in classification.rows()
        if all(r.get(k) is not None for k in ("tp", "fp", "tn", "fn"))
    ]
    readers, note = _capped(_readers(rows), MAX_TRUTHS_PLOTTED)
    if not readers:
        why = "classification.parquet has no rows with tp, fp, tn and fn"
        return Section("confusion", heading, not_computed(why))
    grid = []
    for reader in readers:
        sub = [r for r in rows if r["reader"] == reader]
        line = []
        for m in methods_in(sub):
            r = next(x for x in sub if x["method"] == m)
            title = f"{method_label(m)} vs {truth_label(reader)}"
            line.append(
                ConfusionPanel(title, int(r["tp"]), int(r["fp"]), int(r["tn"]), int(r["fn"]))
            )
        grid.append(line)
    thresholds = {
        fmt_num(r.get("threshold_hu"), 0) for r in rows if r.get("threshold_hu") is not None
    }
    at = f" at {', '.join(sorted(thresholds))} HU" if thresholds else ""
    body = (
        img_tag(confusion_grid(grid), "Confusion matrices of AI against expert readers")
        + (
            f'<p class="note">Rows: the reader\'s classification (truth); columns: the AI '
            f"decision{esc(at)}. Cells: count and share of the row.</p>"
        )
        + note
    )
    return Section("confusion", heading, body)
