"""Discovery: turn the files found under the sources into series to ingest and rows to reject.

Headers are read in batches by Dask tasks (:func:`scan_files`); grouping and filtering then run
on the client (:func:`plan`), which only sees the small :class:`DicomHeader` records.

DICOM files are grouped by (StudyInstanceUID, SeriesInstanceUID). When SeriesInstanceUID is
missing they are grouped by a geometry key (study, frame of reference, orientation, matrix,
pixel spacing and folder) and the row records ``series_key = geometry``. Exact copies (same
SOPInstanceUID, same pixel data) are dropped and counted; two files with one SOPInstanceUID and
different pixel data make the series a DUPLICATE_CONFLICT (which one is right cannot be
known). Files that are not part of an axial CT volume
(localizers, dose reports, secondary captures, derived reformats, other modalities) become
rejection rows of their own, one per (series, reason).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from screening.ingest.dicom import DicomHeader, FileProblem, classify, read_header
from screening.ingest.nifti import is_nifti
from screening.ingest.pseudonym import PseudonymKey, scan_pseudonym
from screening.ingest.sources import FoundFile, SourceProblem, SourceSpec
from screening.location import open_input
from screening.reasons import ReasonCode, SourceFormat

__all__ = ["NiftiFile", "Plan", "Rejection", "WorkItem", "plan", "scan_files"]

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class NiftiFile:
    """A NIfTI file found by discovery; its id is its content hash (names can change)."""

    path: str
    sha256: str


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open_input(path) as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def scan_files(paths: Sequence[str]) -> list[DicomHeader | FileProblem | NiftiFile]:
    """Discovery task: one record per path (DICOM header, NIfTI hash, or a problem)."""
    out: list[DicomHeader | FileProblem | NiftiFile] = []
    for path in paths:
        if is_nifti(path):
            try:
                out.append(NiftiFile(path, _file_sha256(path)))
            except OSError as e:
                out.append(FileProblem(path, ReasonCode.UNREADABLE_FILE, f"unreadable ({e})"))
        else:
            out.append(read_header(path))
    return out


@dataclass(frozen=True)
class WorkItem:
    """One series (or NIfTI file) to ingest: everything its task needs, nothing identifying."""

    scan_id: str
    spec: SourceSpec
    source_format: SourceFormat
    source_path: str
    series_key: str
    headers: tuple[DicomHeader, ...] = ()
    names: tuple[str, ...] = ()
    nifti_path: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A row decided at discovery: the input is not a CT volume we can use."""

    scan_id: str
    spec: SourceSpec
    source_format: SourceFormat | None
    source_path: str
    series_key: str
    reason: ReasonCode
    message: str
    n_files: int = 1


@dataclass(frozen=True)
class Plan:
    items: tuple[WorkItem, ...]
    rejections: tuple[Rejection, ...]
    n_dicom_files: int


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _common(names: Sequence[str]) -> str:
    if len(names) == 1:
        return names[0]
    try:
        return os.path.commonpath(list(names))
    except ValueError:
        return names[0]


def _pixel_bytes(h: DicomHeader) -> tuple[str, bytes, tuple[float, float]] | None:
    """(transfer syntax, pixel data as stored, rescale) of one file; None when unreadable."""
    import pydicom

    try:
        with open_input(h.path) as f:
            ds = pydicom.dcmread(f)
        rescale = (float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))
        return h.transfer_syntax, bytes(ds.PixelData), rescale
    except Exception:  # untrusted bytes: an unreadable copy is not the same image
        return None


def _pixels(path: str) -> Any:
    import pydicom

    with open_input(path) as f:
        return pydicom.dcmread(f).pixel_array


def _same_image(a: DicomHeader, b: DicomHeader) -> bool:
    """Whether two files with one SOPInstanceUID hold the same image (only duplicates pay for
    this read). Same syntax: the stored bytes; a different syntax: the decoded pixels."""
    import numpy as np

    pa, pb = _pixel_bytes(a), _pixel_bytes(b)
    if pa is None or pb is None or pa[2] != pb[2]:
        return False
    if pa[0] == pb[0]:
        return pa[1] == pb[1]
    try:
        return bool(np.array_equal(_pixels(a.path), _pixels(b.path)))
    except Exception:
        return False


def _group_key(h: DicomHeader, folder: str) -> tuple[str, ...]:
    if h.series_uid:
        return ("series_uid", h.study_uid, h.series_uid)
    iop = tuple(f"{v:.2f}" for v in (h.orientation or ()))
    ps = tuple(f"{v:.4f}" for v in (h.pixel_spacing or ()))
    return (
        "geometry",
        h.study_uid,
        h.frame_of_reference_uid,
        *iop,
        str(h.rows),
        str(h.columns),
        *ps,
        folder,
    )


def plan(
    found: Sequence[FoundFile],
    scanned: dict[str, DicomHeader | FileProblem | NiftiFile],
    source_problems: Sequence[SourceProblem],
    key: PseudonymKey | None,
) -> Plan:
    """Group scanned files into work items and rejection rows."""
    items: list[WorkItem] = []
    rejections: list[Rejection] = []
    for p in source_problems:
        rejections.append(
            Rejection(
                scan_pseudonym(key, "source-problem", p.name, p.reason),
                p.spec,
                None,
                p.name,
                "file",
                p.reason,
                p.message,
            )
        )
    groups: dict[tuple[SourceSpec, tuple[str, ...]], list[tuple[DicomHeader, str]]] = defaultdict(
        list
    )
    n_dicom = 0
    for f in found:
        record = scanned[f.path]
        if isinstance(record, NiftiFile):
            items.append(
                WorkItem(
                    scan_id=scan_pseudonym(key, "nifti", record.sha256),
                    spec=f.spec,
                    source_format=SourceFormat.NIFTI,
                    source_path=f.name,
                    series_key="file",
                    names=(f.name,),
                    nifti_path=f.path,
                )
            )
        elif isinstance(record, FileProblem):
            rejections.append(
                Rejection(
                    scan_pseudonym(key, "file", f.name),
                    f.spec,
                    None,
                    f.name,
                    "file",
                    record.reason,
                    f"{f.name}: {record.message}",
                )
            )
        else:
            n_dicom += 1
            folder = os.path.dirname(f.name)
            groups[(f.spec, _group_key(record, folder))].append((record, f.name))

    for (spec, gkey), members in groups.items():
        members.sort(key=lambda m: m[1])
        seen: dict[str, tuple[DicomHeader, str]] = {}
        unique: list[tuple[DicomHeader, str]] = []
        conflicts: list[str] = []
        for h, name in members:
            kept = seen.get(h.sop_uid) if h.sop_uid else None
            if kept is not None:
                if not _same_image(kept[0], h):
                    conflicts.append(f"{kept[1]} vs {name}")
                continue
            seen[h.sop_uid] = (h, name)
            unique.append((h, name))
        copies = len(members) - len(unique)
        if conflicts:
            names = [n for _, n in members]
            rejections.append(
                Rejection(
                    scan_pseudonym(key, "dicom-conflict", *gkey),
                    spec,
                    SourceFormat.DICOM,
                    _common(names),
                    gkey[0],
                    ReasonCode.DUPLICATE_CONFLICT,
                    f"{len(conflicts)} SOPInstanceUID(s) name two files with different pixel "
                    f"data ({_listing(conflicts, 3)}); which copy is right cannot be told, so "
                    f"the series ({len(names)} file(s)) is not ingested",
                    n_files=len(names),
                )
            )
            continue
        by_reason: dict[ReasonCode | None, list[tuple[DicomHeader, str]]] = defaultdict(list)
        why: dict[ReasonCode | None, str] = {}
        for h, name in unique:
            verdict = classify(h)
            code = verdict[0] if verdict else None
            by_reason[code].append((h, name))
            if verdict:
                why.setdefault(code, verdict[1])
        series_key = gkey[0]
        id_parts = (
            gkey[1:]
            if series_key == "series_uid"
            else (*gkey[1:-1], *sorted(h.sop_uid for h, _ in unique))
        )
        base_id = scan_pseudonym(key, f"dicom-{series_key}", *id_parts)
        for code, subset in by_reason.items():
            names = [n for _, n in subset]
            if code is None:
                notes = []
                if series_key == "geometry":
                    notes.append(
                        "SeriesInstanceUID missing: files grouped by study, frame of reference, "
                        "orientation, matrix, pixel spacing and folder"
                    )
                if copies:
                    notes.append(f"{copies} exact duplicate file(s) (same SOPInstanceUID) ignored")
                items.append(
                    WorkItem(
                        scan_id=base_id,
                        spec=spec,
                        source_format=SourceFormat.DICOM,
                        source_path=_common(names),
                        series_key=series_key,
                        headers=tuple(h for h, _ in subset),
                        names=tuple(names),
                        note="; ".join(notes) or None,
                    )
                )
            else:
                rejections.append(
                    Rejection(
                        scan_pseudonym(key, "dicom-subset", base_id, code),
                        spec,
                        SourceFormat.DICOM,
                        _common(names),
                        series_key,
                        code,
                        f"{len(names)} file(s) skipped, {why[code]}: {_listing(names)}",
                        n_files=len(names),
                    )
                )
    return Plan(tuple(items), tuple(rejections), n_dicom)
