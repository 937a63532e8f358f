"""HTML building blocks of the report: number formatting, escaped tables, figures, the page.

Everything that reaches the page from data goes through :func:`html.escape`; the page has
inline CSS only (no scripts, no external resources), so one file is the whole report.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METHOD_LABELS",
    "Section",
    "esc",
    "fmt_ci",
    "fmt_int",
    "fmt_num",
    "fmt_p",
    "img_tag",
    "method_label",
    "natural_key",
    "not_computed",
    "page",
    "table",
]

#: Display names of the attenuation methods, in display order.
METHOD_LABELS = {
    "ai_3d": "AI-3D",
    "ai_2d": "AI-2D",
    "ai_roi": "AI-ROI",
    "ai_3d_eroded": "AI-3D (eroded)",
    "ls_ratio": "L/S ratio",
    "readers:all": "all readers",
}

DASH = "—"


def esc(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def method_label(method: object) -> str:
    """Display name of a method (``ai_3d`` -> ``AI-3D``, ``reader:A`` -> ``Reader A``)."""
    text = str(method)
    if text in METHOD_LABELS:
        return METHOD_LABELS[text]
    if text.startswith("reader:"):
        return f"Reader {text.split(':', 1)[1]}"
    return text


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt_num(value: Any, digits: int = 1) -> str:
    """``value`` rounded to ``digits`` decimals; a dash for null/NaN.

    >>> fmt_num(3.14159, 2), fmt_num(None), fmt_num(float("nan"))
    ('3.14', '—', '—')
    """
    if _missing(value):
        return DASH
    return f"{float(value):.{digits}f}"


def fmt_int(value: Any) -> str:
    """An integer count with thousands separators; a dash for null."""
    if _missing(value):
        return DASH
    return f"{int(value):,}"


def fmt_ci(value: Any, lo: Any, hi: Any, digits: int = 1) -> str:
    """``est [lo, hi]``; the interval is left out when it is undefined.

    >>> fmt_ci(12.345, 10.0, 15.5)
    '12.3 [10.0, 15.5]'
    """
    if _missing(value):
        return DASH
    if _missing(lo) or _missing(hi):
        return fmt_num(value, digits)
    return f"{fmt_num(value, digits)} [{fmt_num(lo, digits)}, {fmt_num(hi, digits)}]"


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, ``<0.001`` below that.

    >>> fmt_p(0.04321), fmt_p(1e-9)
    ('0.043', '<0.001')
    """
    if _missing(value):
        return DASH
    p = float(value)
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def natural_key(label: object) -> tuple[int, float, str]:
    """Sort key for group labels: ``<40`` before ``40-49`` before ``80+``; text by name;
    ``unknown`` and ``all`` last."""
    text = "" if label is None else str(label)
    if text in ("unknown", "", "(not recorded)"):
        return (2, 0.0, text)
    if text == "all":
        return (3, 0.0, text)
    m = re.match(r"^([<>]?)(\d+(?:\.\d+)?)", text)
    if m:
        return (0, float(m.group(2)) - (0.5 if m.group(1) == "<" else 0.0), text)
    return (1, 0.0, text.lower())


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric_from: int = 1,
    row_classes: Sequence[str] | None = None,
    caption: str | None = None,
    spans: Sequence[tuple[str, int]] | None = None,
    text_cols: Sequence[int] = (),
) -> str:
    """An HTML table of already formatted (not yet escaped) cells.

    Columns from ``numeric_from`` on are right-aligned. ``spans`` adds a header row above
    ``headers``: (label, number of columns) pairs covering every column. ``text_cols``
    (indices, negative from the end) are left-aligned and may wrap wherever they are.
    """
    n = len(headers)
    text = {c % n for c in text_cols} if n else set()

    def cls(j: int) -> str:
        return "num" if j >= numeric_from and j not in text else "txt"

    top = ""
    if spans:
        top = (
            "<tr>"
            + "".join(f'<th class="span" colspan="{w}">{esc(label)}</th>' for label, w in spans)
            + "</tr>"
        )
    head = "".join(f'<th class="{cls(j)}">{esc(h)}</th>' for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        attr = f' class="{esc(row_classes[i])}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="{cls(j)}">{esc(c)}</td>' for j, c in enumerate(row))
        body.append(f"<tr{attr}>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        f'<div class="tablewrap"><table>{cap}<thead>{top}<tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def img_tag(png: bytes, alt: str, *, css_class: str = "fig") -> str:
    """An ``<img>`` with the PNG inline as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{esc(css_class)}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def not_computed(why: str) -> str:
    """The placeholder of a section (or part) whose input is missing."""
    return f'<p class="missing">not computed: {esc(why)}</p>'


@dataclass(frozen=True)
class Section:
    """One section of the report: anchor id, heading and body HTML."""

    anchor: str
    heading: str
    body: str


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#1d1d1f;
background:#fafafa;line-height:1.45}
header{background:#18324f;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px 0;font-size:1.6em}
header p{margin:0;color:#c9d6e6;font-size:.9em}
header p.banner{margin-top:10px;padding:8px 12px;background:#b3261e;color:#fff;font-weight:600;
border-radius:4px}
main{max-width:1320px;margin:0 auto;padding:8px 32px 40px 32px}
nav{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:16px 0}
nav ol{margin:4px 0;padding-left:20px;columns:2}
nav a{color:#18324f}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:4px 20px 16px 20px;
margin:18px 0}
h2{color:#18324f;border-bottom:2px solid #e3e8ef;padding-bottom:4px}
h3{color:#333;margin-bottom:6px}
.tablewrap{overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:.84em}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #d6dbe1;padding:3px 7px}
th{background:#eef2f7}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
td.txt:last-child{min-width:200px}
th.span{text-align:center;background:#e3e8ef}
td.txt,th.txt{text-align:left}
tr.total td{font-weight:700;background:#f6f8fb}
img.fig{max-width:100%;height:auto;display:block;margin:8px 0}
p.missing{color:#8a4b00;background:#fff6e5;border-left:4px solid #f0a020;padding:6px 10px}
p.note{color:#555;font-size:.88em}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #d6dbe1;border-radius:6px;padding:8px 14px;min-width:130px;
background:#f6f8fb}
.card .v{font-size:1.5em;font-weight:700;color:#18324f}
.card .k{font-size:.8em;color:#555}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
figure.thumb{margin:0;width:362px;border:1px solid #d6dbe1;border-radius:4px;background:#f6f8fb}
figure.thumb img{width:360px;height:auto;display:block}
figure.thumb figcaption{font-size:.78em;padding:4px 6px;word-wrap:break-word}
code,pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.86em}
pre{background:#f3f5f8;border:1px solid #d6dbe1;padding:8px 12px;white-space:pre-wrap;
overflow-wrap:anywhere}
footer{color:#777;font-size:.8em;text-align:center;padding:16px}
"""


def page(
    title: str, subtitle: str, sections: Sequence[Section], footer: str, banner: str = ""
) -> str:
    """The whole HTML document: header (with an optional warning banner), table of
    contents, sections, footer."""
    warn = f'<p class="banner" role="alert">{esc(banner)}</p>' if banner else ""
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.heading)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{esc(s.anchor)}"><h2>{esc(s.heading)}</h2>\n{s.body}\n</section>'
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p>{warn}</header>\n<main>\n"
        f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>\n{body}\n</main>\n"
        f"<footer>{esc(footer)}</footer>\n</body>\n</html>\n"
    )
