"""Gallery of the QC overlays of flagged scans, as small inline PNG thumbnails.

A scan is flagged when its measurements row has QC flags or a status other than ``ok``.
Captions carry only the pseudonymous ``scan_id`` (first 12 characters), the flags, the status
and the reason code: never the free-text message or anything else from the row.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from screening.location import Location, Where
from screening.stats.report._html import esc, img_tag, not_computed

__all__ = ["THUMB_WIDTH", "flagged_rows", "gallery_html", "thumbnail_png"]

log = logging.getLogger(__name__)

#: Width of a gallery thumbnail, pixels.
THUMB_WIDTH = 360
#: Colours of a thumbnail's palette (a CT overlay reads well with 256; it keeps the PNG small).
THUMB_COLOURS = 256

_STATUS_ORDER = {"failed": 0, "rejected": 1, "ok": 2}


def flagged_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows with QC flags or a status other than ``ok``: failures first, then by scan_id."""
    flagged = [r for r in rows if r.get("qc_flags") or r.get("status") != "ok"]
    return sorted(
        flagged,
        key=lambda r: (_STATUS_ORDER.get(str(r.get("status")), 3), str(r.get("scan_id"))),
    )


def _inside(root: Location, rel: str) -> Location | None:
    """``root / rel`` when it stays inside ``root`` (symlinks resolved on a local disk), else
    None: a row's ``overlay_file`` must not make the report read other files."""
    if root.is_local:
        base = root.local_path().resolve()
        path = (base / rel).resolve()
        return Location.of(path) if path.is_relative_to(base) else None
    norm = posixpath.normpath(rel)
    if norm.startswith(("..", "/")) or "://" in rel:
        return None
    return root / norm


def thumbnail_png(path: Where, width: int = THUMB_WIDTH) -> bytes:
    """The image at ``path`` (local or in a bucket) downscaled to ``width`` pixels wide (never
    upscaled), as a palette PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(Location.of(path).read_bytes())) as im:
        im.load()
        rgb = im.convert("RGB")
    if rgb.width > width:
        height = max(1, round(rgb.height * width / rgb.width))
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    small = rgb.quantize(colors=THUMB_COLOURS, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _caption(row: Mapping[str, Any]) -> str:
    scan = str(row.get("scan_id") or "?")[:12]
    flags = ", ".join(str(f) for f in (row.get("qc_flags") or [])) or "no flags"
    status = str(row.get("status") or "?")
    reason = row.get("reason")
    state = f"{status} / {reason}" if reason else status
    return (
        f"<code>{esc(scan)}</code><br>flags: {esc(flags)}<br>status: {esc(state)}"
        f"<br>cohort: {esc(row.get('cohort') or '?')}"
    )


def gallery_html(
    rows: Sequence[Mapping[str, Any]], results_dir: str | os.PathLike[str], max_gallery: int
) -> tuple[str, int]:
    """The gallery's HTML and the number of thumbnails embedded."""
    if not rows:
        return not_computed("no measurements under RESULTS/measurements"), 0
    flagged = flagged_rows(rows)
    intro = (
        f'<p class="note">{len(flagged)} of {len(rows)} scans are flagged (QC flags raised or '
        "status other than ok). Overlays show the liver mask, the AI-2D slice and the ROIs.</p>"
    )
    if not flagged:
        return intro + "<p>No flagged scans.</p>", 0
    root = Location.of(results_dir)
    figures, n_img = [], 0
    for row in flagged[: max(0, max_gallery)]:
        rel = row.get("overlay_file")
        body = '<p class="missing">no overlay</p>'
        if rel:
            path = _inside(root, str(rel))
            if path is None:
                log.warning("report: overlay outside RESULTS ignored: %s", rel)
            elif path.is_file():
                try:
                    body = img_tag(thumbnail_png(path), f"QC overlay {str(row['scan_id'])[:12]}")
                    n_img += 1
                except OSError as e:  # PIL.UnidentifiedImageError is an OSError
                    log.warning("report: cannot read overlay %s: %s", path, e)
                    body = '<p class="missing">overlay unreadable</p>'
            else:
                body = '<p class="missing">overlay file missing</p>'
        figures.append(
            f'<figure class="thumb">{body}<figcaption>{_caption(row)}</figcaption></figure>'
        )
    more = len(flagged) - len(figures)
    tail = (
        f'<p class="note">… and {more} more flagged scan(s) not shown (max_gallery={max_gallery}).'
        " List them with <code>screening query</code> (see How to reproduce).</p>"
        if more > 0
        else ""
    )
    return intro + f'<div class="gallery">{"".join(figures)}</div>' + tail, n_img
