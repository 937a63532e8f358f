"""Report sections on the cohort: headline numbers, prevalence by site (forest plot) and by
the other dimensions (tables). Every scan is accounted for: rejected, not run, failed,
contrast-excluded and undecided scans are shown beside the decided ones, never dropped."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.stats.report._figures import ForestPanel, Interval, forest_plot
from screening.stats.report._html import (
    METHOD_LABELS,
    Section,
    esc,
    fmt_ci,
    fmt_int,
    img_tag,
    method_label,
    natural_key,
    not_computed,
    table,
)
from screening.stats.report._inputs import Loaded

__all__ = ["headline_section", "methods_in", "prevalence_groups_section", "site_section"]

Row = Mapping[str, Any]

#: Dimensions in display order; others follow by name.
DIMENSION_ORDER = ("cohort", "site", "scanner", "sex", "age_band")
DIMENSION_LABELS = {"age_band": "age band", "cohort": "cohort", "site": "site"}
#: Sites drawn in the forest plot at most (largest first); the table lists them all.
MAX_FOREST_ROWS = 40

_COUNT_COLUMNS = (
    ("n_scans", "scans"),
    ("n_ingest_rejected", "rejected at ingest"),
    ("n_not_run", "not run"),
    ("n_failed", "failed"),
    ("n_contrast_excluded", "contrast excluded"),
)


def _count_labels(rows: Sequence[Row]) -> list[str]:
    """Labels of the count columns: the first counts patients when ``screening stats --unit
    patient`` wrote the table (each patient once), else scans."""
    per_patient = any(r.get("unit") == "patient" for r in rows)
    labels = [label for _, label in _COUNT_COLUMNS]
    return ["patients", *labels[1:]] if per_patient else labels


def methods_in(rows: Sequence[Row], column: str = "method") -> list[str]:
    """The methods present, AI methods in their canonical order first, then by name."""
    seen = {str(r[column]) for r in rows if r.get(column) is not None}
    known = [m for m in METHOD_LABELS if m in seen]
    return known + sorted(seen - set(known))


def _overall(rows: Sequence[Row]) -> dict[str, Row]:
    """Method -> its whole-cohort ``group == "all"`` row (first dimension that has one)."""
    out: dict[str, Row] = {}
    ordered = sorted(rows, key=lambda r: _dimension_key(str(r.get("dimension"))))
    for r in ordered:
        if r.get("group") == "all":
            out.setdefault(str(r["method"]), r)
    return out


def _dimension_key(dim: str) -> tuple[int, str]:
    return (DIMENSION_ORDER.index(dim), dim) if dim in DIMENSION_ORDER else (99, dim)


def _prev_cell(r: Row | None) -> str:
    if r is None:
        return "—"
    return fmt_ci(r.get("prevalence_pct"), r.get("ci_lo_pct"), r.get("ci_hi_pct"))


def _cards(items: Sequence[tuple[str, str]]) -> str:
    cards = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{cards}</div>'


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for key, value in summary.items():
        if isinstance(value, Mapping):
            text = "; ".join(f"{k}: {v}" for k, v in value.items()) or "—"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str)
        if len(text) > 300:
            text = text[:297] + "..."
        rows.append([str(key), "—" if value is None else text])
    return table(["field", "value"], rows, numeric_from=2, caption="summary.json")


def _measurement_counts(rows: Sequence[Row]) -> str:
    status = Counter(str(r.get("status")) for r in rows)
    flagged = sum(1 for r in rows if r.get("qc_flags"))
    contrast = sum(1 for r in rows if r.get("contrast_suspected"))
    reasons = Counter(str(r["reason"]) for r in rows if r.get("reason"))
    head = ["rows", "ok", "rejected", "failed", "with QC flags", "contrast suspected"]
    body = [
        [
            fmt_int(len(rows)),
            fmt_int(status.get("ok", 0)),
            fmt_int(status.get("rejected", 0)),
            fmt_int(status.get("failed", 0)),
            fmt_int(flagged),
            fmt_int(contrast),
        ]
    ]
    out = table(head, body, numeric_from=0, caption="Measurements in RESULTS (one row per scan)")
    if reasons:
        out += table(
            ["reason code", "rows"],
            [[k, fmt_int(v)] for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])],
            caption="Reason codes in the measurements",
        )
    return out


def headline_section(
    summary: Mapping[str, Any],
    summary_why: str,
    prevalence: Loaded,
    measurements: Sequence[Row],
    measurements_note: str,
) -> Section:
    """Scans, decided scans and the overall prevalence with its CI per method; exclusions
    (ingest rejections, failures, contrast) in their own columns."""
    parts: list[str] = []
    overall = _overall(prevalence.rows())
    methods = methods_in(list(overall.values()))
    n_scans = summary.get("n_scans")
    if n_scans is None and overall:
        n_scans = next(iter(overall.values())).get("n_scans")
    cards = [("scans", fmt_int(n_scans))]
    if overall and _count_labels(list(overall.values()))[0] == "patients":
        patients = next(iter(overall.values())).get("n_scans")
        cards.append(
            ("patients (each counted once, by the earliest decided scan)", fmt_int(patients))
        )
    for m in methods:
        r = overall[m]
        cards.append(
            (
                f"{method_label(m)} prevalence, % (95% CI); {fmt_int(r.get('n_steatosis'))}"
                f" of {fmt_int(r.get('n_decided'))} decided",
                _prev_cell(r),
            )
        )
    parts.append(_cards(cards))
    if prevalence.table is None:
        parts.append(not_computed(prevalence.why))
    else:
        head = [
            "method",
            *_count_labels(list(overall.values())),
            "undecided",
            "decided",
            "steatosis",
            "prevalence, % (95% CI)",
        ]
        body = [
            [
                method_label(m),
                *(fmt_int(overall[m].get(c)) for c, _ in _COUNT_COLUMNS),
                fmt_int(overall[m].get("n_undecided")),
                fmt_int(overall[m].get("n_decided")),
                fmt_int(overall[m].get("n_steatosis")),
                _prev_cell(overall[m]),
            ]
            for m in methods
        ]
        parts.append(
            table(head, body, caption="Where every scan went (whole cohort, per method)")
            + '<p class="note">Only decided scans enter the prevalence; scans rejected at '
            "ingest, not run, failed, excluded for contrast or left undecided are counted here "
            "and in every table below. Steatosis: the measurement's decision (liver attenuation at "
            f"or below the threshold, {STEATOSIS_THRESHOLD_HU:g} HU by default).</p>"
        )
    if measurements:
        parts.append(_measurement_counts(measurements))
    if measurements_note:
        parts.append(f'<p class="note">{esc(measurements_note)}</p>')
    parts.append(_summary_table(summary) if summary else not_computed(summary_why))
    return Section("headline", "Headline numbers", "\n".join(parts))


def _group_name(group: object) -> str:
    """A group label for the page: a missing or blank value reads ``(not recorded)``."""
    text = "" if group is None else str(group).strip()
    return text or "(not recorded)"


def _dimension_table(rows: Sequence[Row], methods: Sequence[str], label: str) -> str:
    by_group: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_group.setdefault(_group_name(r.get("group")), {})[str(r["method"])] = r
    groups = sorted(by_group, key=natural_key)
    head = [label, *_count_labels(rows)]
    spans = [("", len(head))]
    for m in methods:
        head += ["undecided", "prevalence, % (95% CI) · steatosis/decided"]
        spans.append((method_label(m), 2))
    body, classes = [], []
    for g in groups:
        first = next(iter(by_group[g].values()))
        cells = [g, *(fmt_int(first.get(c)) for c, _ in _COUNT_COLUMNS)]
        for m in methods:
            mr = by_group[g].get(m)
            if mr is None:
                cells += ["—", "—"]
                continue
            k, n = fmt_int(mr.get("n_steatosis")), fmt_int(mr.get("n_decided"))
            cells += [fmt_int(mr.get("n_undecided")), f"{_prev_cell(mr)} · {k}/{n}"]
        body.append(cells)
        classes.append("total" if g == "all" else "")
    return table(head, body, row_classes=classes, spans=spans)


def site_section(prevalence: Loaded) -> Section:
    """Forest plot of the prevalence by site (point + 95% CI per site, overall diamond)."""
    heading = "Prevalence by site"
    if prevalence.table is None:
        return Section("prevalence-site", heading, not_computed(prevalence.why))
    rows = [r for r in prevalence.rows() if r.get("dimension") == "site"]
    if not rows:
        why = "prevalence.parquet has no rows with dimension 'site'"
        return Section("prevalence-site", heading, not_computed(why))
    methods = methods_in(rows)
    sizes: dict[str, int] = {}
    for r in rows:
        if r.get("group") != "all":
            g = _group_name(r.get("group"))
            sizes[g] = max(sizes.get(g, 0), int(r.get("n_scans") or 0))
    sites = sorted(sizes, key=natural_key)
    if not sites:
        why = "prevalence.parquet has only the all-sites row for dimension 'site'"
        return Section("prevalence-site", heading, not_computed(why))
    note = ""
    if len(sites) > MAX_FOREST_ROWS:
        keep = set(sorted(sites, key=lambda s: -sizes[s])[:MAX_FOREST_ROWS])
        note = (
            f'<p class="note">The plot shows the {MAX_FOREST_ROWS} largest of {len(sites)} '
            "sites; the table lists them all.</p>"
        )
        sites = [s for s in sites if s in keep]
    overall = _overall(rows)
    panels = []
    for m in methods:
        by_site = {_group_name(r.get("group")): r for r in rows if r["method"] == m}
        intervals = [_interval(f"{s} (n={sizes[s]})", by_site.get(s)) for s in sites]
        o = overall.get(m)
        panels.append(
            ForestPanel(method_label(m), intervals, _interval("Overall", o) if o else None)
        )
    png = forest_plot(panels)
    body = (
        img_tag(png, "Forest plot: prevalence of steatosis by site with 95% CIs")
        + '<p class="note">Points: prevalence among decided scans with Wilson 95% CI; diamond: '
        "all sites together; n = scans in the catalog at that site.</p>"
        + note
        + "<h3>By site</h3>"
        + _dimension_table(rows, methods, "site")
    )
    return Section("prevalence-site", heading, body)


def _interval(label: str, r: Row | None) -> Interval:
    if r is None:
        return Interval(label, float("nan"), float("nan"), float("nan"))

    def f(key: str) -> float:
        v = r.get(key)
        return float("nan") if v is None else float(v)

    return Interval(label, f("prevalence_pct"), f("ci_lo_pct"), f("ci_hi_pct"))


def _standardised(loaded: Loaded) -> str:
    if loaded.table is None:
        return not_computed(loaded.why)
    order = methods_in(loaded.rows())
    rows = sorted(loaded.rows(), key=lambda r: order.index(str(r["method"])))
    body = [
        [
            method_label(r["method"]),
            fmt_int(r.get("n_decided")),
            fmt_ci(r.get("prevalence_pct"), r.get("ci_lo_pct"), r.get("ci_hi_pct")),
            fmt_int(r.get("n_bands_missing")),
        ]
        for r in rows
    ]
    return table(
        ["method", "decided", "prevalence, % (95% CI)", "age bands missing"],
        body,
        caption="Age-standardised prevalence",
    )


def prevalence_groups_section(prevalence: Loaded, standardised: Loaded) -> Section:
    """One table per grouping dimension other than site, then the age-standardised estimate."""
    heading = "Prevalence by cohort, scanner, sex and age band"
    if prevalence.table is None:
        return Section("prevalence-groups", heading, not_computed(prevalence.why))
    rows = prevalence.rows()
    dims = sorted({str(r.get("dimension")) for r in rows} - {"site"}, key=_dimension_key)
    parts = []
    for dim in dims:
        sub = [r for r in rows if r.get("dimension") == dim]
        label = DIMENSION_LABELS.get(dim, dim)
        parts.append(f"<h3>By {esc(label)}</h3>")
        parts.append(_dimension_table(sub, methods_in(sub), label))
    if not dims:
        parts.append(not_computed("prevalence.parquet has no dimension other than site"))
    parts.append("<h3>Age-standardised</h3>")
    parts.append(_standardised(standardised))
    parts.append(
        f'<p class="note">Methods: {esc(", ".join(method_label(m) for m in methods_in(rows)))}. '
        "Prevalence: steatosis / decided, Wilson 95% CI.</p>"
    )
    return Section("prevalence-groups", heading, "\n".join(parts))


def pipeline_ids(prevalence: Loaded) -> list[str]:
    """The pipeline ids the prevalence table was computed for."""
    if prevalence.table is None or "pipeline_id" not in prevalence.table.column_names:
        return []
    return sorted({str(p) for p in prevalence.table["pipeline_id"].to_pylist() if p})
