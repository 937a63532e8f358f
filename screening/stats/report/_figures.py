"""The report's figures as PNG bytes: pure functions of arrays and labels, no file access.

Matplotlib is imported inside the functions and drawn on the Agg canvas of a standalone
:class:`~matplotlib.figure.Figure` (no pyplot, so no global figure state: safe in a worker).
PNG metadata is left out, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BlandAltmanPanel",
    "ConfusionPanel",
    "ForestPanel",
    "Interval",
    "RocCurve",
    "RocPanel",
    "ScatterPanel",
    "StripPanel",
    "bland_altman_grid",
    "box_plot",
    "confusion_grid",
    "forest_plot",
    "heat_map",
    "roc_grid",
    "scatter_grid",
    "strip_box_plot",
]

FloatArray = NDArray[np.float64]

#: Resolution of every figure (dots per inch); sizes are kept modest so the report stays small.
DPI = 90
_BLUE, _ORANGE, _GREY, _RED = "#1f5f9e", "#d9822b", "#7a7a7a", "#c0392b"
_CYCLE = ("#1f5f9e", "#d9822b", "#2e8b57", "#8e44ad", "#c0392b", "#16a0a0")


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _finite(*arrays: FloatArray) -> NDArray[np.bool_]:
    ok = np.ones(arrays[0].shape, bool)
    for a in arrays:
        ok &= np.isfinite(a)
    return ok


def _grid(nrows: int, ncols: int, cell_w: float, cell_h: float) -> tuple[Any, Any]:
    fig = _figure(max(cell_w * ncols, 4.0), max(cell_h * nrows, 2.5))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


# --------------------------------------------------------------------------------------------
# Prevalence
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (percent) and a row label."""

    label: str
    est: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ForestPanel:
    """One method's forest plot: per-group intervals and the overall estimate (diamond)."""

    title: str
    rows: Sequence[Interval]
    overall: Interval | None


def forest_plot(panels: Sequence[ForestPanel], xlabel: str = "prevalence, % (95% CI)") -> bytes:
    """Forest plot: one panel per method, groups as rows (point + CI), the overall as a diamond.

    All panels share the rows of the first panel (the same groups for every method).
    """
    from matplotlib.patches import Polygon

    labels = [r.label for r in panels[0].rows]
    n = len(labels)
    fig, axes = _grid(1, len(panels), 3.3, 0.26 * (n + 2) + 1.3)
    y_rows = np.arange(n, 0, -1, dtype=float)
    for ax, panel in zip(axes[0], panels, strict=True):
        est = np.array([r.est for r in panel.rows], float)
        lo = np.array([r.lo for r in panel.rows], float)
        hi = np.array([r.hi for r in panel.rows], float)
        ok = _finite(est, lo, hi)
        ax.errorbar(
            est[ok],
            y_rows[ok],
            xerr=np.clip([est[ok] - lo[ok], hi[ok] - est[ok]], 0.0, None),  # rounding
            fmt="s",
            ms=4,
            color=_BLUE,
            ecolor=_BLUE,
            capsize=2,
            lw=1.2,
        )
        top = float(np.nanmax(hi[ok])) if ok.any() else 0.0
        ov = panel.overall
        if ov is not None and math.isfinite(ov.est):
            lo_o = ov.lo if math.isfinite(ov.lo) else ov.est
            hi_o = ov.hi if math.isfinite(ov.hi) else ov.est
            ax.add_patch(
                Polygon(
                    [(lo_o, 0.0), (ov.est, 0.3), (hi_o, 0.0), (ov.est, -0.3)],
                    closed=True,
                    facecolor=_ORANGE,
                    edgecolor="black",
                    lw=0.8,
                )
            )
            ax.axvline(ov.est, color=_GREY, ls="--", lw=0.8)
            top = max(top, hi_o)
        ax.axhline(0.5, color="#cccccc", lw=0.8)
        ax.set_xlim(0.0, min(100.0, top * 1.12 + 2.0))
        ax.set_ylim(-0.8, n + 0.8)
        ax.set_yticks([*y_rows, 0.0])
        ax.set_yticklabels([*labels, "Overall"] if ax is axes[0][0] else [])
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", color="#eeeeee")
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Attenuation: box plots, scatter, Bland–Altman
# --------------------------------------------------------------------------------------------


def box_plot(
    groups: Sequence[tuple[str, FloatArray]],
    threshold_hu: float,
    *,
    ylabel: str = "liver attenuation, HU",
    highlight: int = 3,
) -> bytes:
    """Box plot per group (non-finite values dropped), the threshold as a dashed line.

    The first ``highlight`` boxes (the AI methods) are blue, the rest (readers) orange.
    """
    fig = _figure(max(5.0, 1.0 * len(groups) + 2.0), 3.8)
    ax = fig.subplots()
    data = [v[np.isfinite(v)] for _, v in groups]
    bp = ax.boxplot(
        data,
        tick_labels=[f"{g}\nn={d.size}" for (g, _), d in zip(groups, data, strict=True)],
        patch_artist=True,
        widths=0.55,
        flierprops={"markersize": 2.5, "alpha": 0.5},
        medianprops={"color": "black"},
    )
    for i, box in enumerate(bp["boxes"]):
        box.set_facecolor(_BLUE if i < highlight else _ORANGE)
        box.set_alpha(0.55)
    ax.axhline(threshold_hu, color=_RED, ls="--", lw=1, label=f"steatosis ≤ {threshold_hu:g} HU")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", color="#eeeeee")
    ax.tick_params(labelsize=8)
    return _png(fig)


@dataclass(frozen=True)
class ScatterPanel:
    """AI (y) against a reader (x) for one method and reader."""

    title: str
    x: FloatArray
    y: FloatArray
    xlabel: str
    ylabel: str


def _limits(*arrays: FloatArray, extra: Sequence[float] = ()) -> tuple[float, float]:
    vals = np.concatenate([a[np.isfinite(a)] for a in arrays] + [np.asarray(extra, float)])
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    pad = max(0.05 * (hi - lo), 1.0)
    return lo - pad, hi + pad


def scatter_grid(panels: Sequence[Sequence[ScatterPanel]], threshold_hu: float) -> bytes:
    """Grid of scatter plots (rows of panels) with the identity line and threshold lines."""
    ncols = max(len(r) for r in panels)
    fig, axes = _grid(len(panels), ncols, 3.0, 3.0)
    for i, row in enumerate(panels):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row):
                ax.set_axis_off()
                continue
            p = row[j]
            ok = _finite(p.x, p.y)
            lo, hi = _limits(p.x[ok], p.y[ok], extra=(threshold_hu,))
            ax.plot([lo, hi], [lo, hi], color=_GREY, lw=0.8, label="identity")
            ax.axvline(threshold_hu, color=_RED, ls="--", lw=0.8)
            ax.axhline(threshold_hu, color=_RED, ls="--", lw=0.8, label=f"{threshold_hu:g} HU")
            ax.scatter(p.x[ok], p.y[ok], s=7, alpha=0.6, color=_BLUE, edgecolors="none")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            ax.set_title(p.title, fontsize=8.5)
            ax.set_xlabel(p.xlabel, fontsize=8)
            ax.set_ylabel(p.ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


@dataclass(frozen=True)
class BlandAltmanPanel:
    """Differences (AI − reader) against means, with the bias and limits of agreement."""

    title: str
    mean: FloatArray
    diff: FloatArray
    bias: float
    loa_lo: float
    loa_hi: float


def bland_altman_grid(panels: Sequence[Sequence[BlandAltmanPanel]]) -> bytes:
    """Grid of Bland–Altman plots: bias (solid) and 95% limits of agreement (dashed)."""
    ncols = max(len(r) for r in panels)
    fig, axes = _grid(len(panels), ncols, 3.2, 2.7)
    for i, row in enumerate(panels):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row):
                ax.set_axis_off()
                continue
            p = row[j]
            ok = _finite(p.mean, p.diff)
            ax.scatter(p.mean[ok], p.diff[ok], s=7, alpha=0.6, color=_BLUE, edgecolors="none")
            ax.axhline(0.0, color="#bbbbbb", lw=0.7)
            if math.isfinite(p.bias):
                ax.axhline(p.bias, color="black", lw=1, label=f"bias {p.bias:.1f}")
            for v in (p.loa_lo, p.loa_hi):
                if math.isfinite(v):
                    ax.axhline(v, color=_RED, ls="--", lw=0.9)
            if math.isfinite(p.loa_lo) and math.isfinite(p.loa_hi):
                ax.plot([], [], color=_RED, ls="--", label=f"LoA {p.loa_lo:.1f} to {p.loa_hi:.1f}")
            lo, hi = _limits(
                p.diff[ok], extra=[v for v in (p.loa_lo, p.loa_hi) if math.isfinite(v)]
            )
            ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
            ax.set_title(p.title, fontsize=8.5)
            ax.set_xlabel("mean of the two, HU", fontsize=8)
            ax.set_ylabel("AI − reader, HU", fontsize=8)
            ax.tick_params(labelsize=7)
            if math.isfinite(p.bias):
                ax.legend(fontsize=6.5, loc="lower right")
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    """An ROC curve on an FPR grid with its pointwise bootstrap band."""

    label: str
    fpr: FloatArray
    tpr: FloatArray
    lo: FloatArray
    hi: FloatArray


@dataclass(frozen=True)
class RocPanel:
    """The ROC curves of every method against one reader's classification."""

    title: str
    curves: Sequence[RocCurve]


def roc_grid(panels: Sequence[RocPanel], ncols: int = 3) -> bytes:
    """ROC curves with shaded CI bands, one panel per reader, the chance diagonal dotted."""
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = _grid(nrows, ncols, 3.4, 3.4)
    for k in range(nrows * ncols):
        ax = axes[k // ncols][k % ncols]
        if k >= len(panels):
            ax.set_axis_off()
            continue
        panel = panels[k]
        ax.plot([0, 1], [0, 1], color=_GREY, ls=":", lw=0.8)
        for c, curve in enumerate(panel.curves):
            colour = _CYCLE[c % len(_CYCLE)]
            band = _finite(curve.fpr, curve.lo, curve.hi)
            ax.fill_between(
                curve.fpr[band], curve.lo[band], curve.hi[band], color=colour, alpha=0.18, lw=0
            )
            line = _finite(curve.fpr, curve.tpr)
            ax.plot(curve.fpr[line], curve.tpr[line], color=colour, lw=1.4, label=curve.label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("1 − specificity (FPR)", fontsize=8)
        ax.set_ylabel("sensitivity (TPR)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5, loc="lower right")
    return _png(fig)


@dataclass(frozen=True)
class ConfusionPanel:
    """A 2×2 confusion matrix (reader's label as truth, AI decision as prediction)."""

    title: str
    tp: int
    fp: int
    tn: int
    fn: int


def confusion_grid(panels: Sequence[Sequence[ConfusionPanel]]) -> bytes:
    """Grid of 2×2 confusion matrices: rows truth (steatosis, normal), columns the AI call;
    each cell shows the count and its share of the row."""
    ncols = max(len(r) for r in panels)
    fig, axes = _grid(len(panels), ncols, 2.6, 2.4)
    for i, row in enumerate(panels):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row):
                ax.set_axis_off()
                continue
            p = row[j]
            counts = np.array([[p.tp, p.fn], [p.fp, p.tn]], float)
            share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
            ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
            for (r, c), n in np.ndenumerate(counts):
                ax.text(
                    c,
                    r,
                    f"{int(n)}\n{100 * share[r, c]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[r, c] > 0.6 else "black",
                )
            ax.set_xticks([0, 1], ["AI: steatosis", "AI: normal"], fontsize=7)
            ax.set_yticks([0, 1], ["steatosis", "normal"], fontsize=7)
            ax.set_title(p.title, fontsize=8.5)
    return _png(fig)


# --------------------------------------------------------------------------------------------
# Agreement matrix, segmentation
# --------------------------------------------------------------------------------------------


def heat_map(
    labels: Sequence[str], matrix: FloatArray, *, title: str, vmin: float = 0.0, vmax: float = 1.0
) -> bytes:
    """Annotated square heat map (NaN cells grey), e.g. ICC between every pair of raters."""
    n = len(labels)
    side = max(3.5, 0.75 * n + 2.0)
    fig = _figure(side + 0.8, side)
    ax = fig.subplots()
    cmap = _cmap("viridis")
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax)
    for (r, c), v in np.ndenumerate(matrix):
        if math.isfinite(v):
            colour = "black" if v > vmin + 0.6 * (vmax - vmin) else "white"
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="#dddddd")


@dataclass(frozen=True)
class StripPanel:
    """Box + jittered points per group, e.g. Dice of one organ by cohort and group."""

    title: str
    groups: Sequence[tuple[str, FloatArray]]


def strip_box_plot(
    panels: Sequence[StripPanel],
    *,
    ylabel: str,
    rng: np.random.Generator,
    ylim: tuple[float, float],
) -> bytes:
    """Box plots with the points overlaid (jittered with ``rng``), one panel per organ."""
    width = max(4.5, max(0.9 * len(p.groups) + 1.5 for p in panels))
    fig, axes = _grid(1, len(panels), width, 3.6)
    for ax, panel in zip(axes[0], panels, strict=True):
        data = [v[np.isfinite(v)] for _, v in panel.groups]
        if not data:
            ax.set_axis_off()
            ax.set_title(f"{panel.title}: no values", fontsize=9)
            continue
        ax.boxplot(
            data,
            tick_labels=[f"{g}\nn={d.size}" for (g, _), d in zip(panel.groups, data, strict=True)],
            widths=0.5,
            showfliers=False,
            medianprops={"color": "black"},
        )
        for k, d in enumerate(data, start=1):
            x = k + rng.uniform(-0.15, 0.15, d.size)
            ax.scatter(x, d, s=14, alpha=0.75, color=_BLUE, lw=0, zorder=3)
        ax.set_ylim(*ylim)
        ax.set_title(panel.title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", color="#eeeeee")
    return _png(fig)
