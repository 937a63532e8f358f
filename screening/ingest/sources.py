"""What the user points ingest at: SOURCE paths and manifest rows, walked into files.

A SOURCE is a DICOM folder tree (any depth, any names, with or without ``.dcm``), a NIfTI file,
or a ``.zip``/``.tar`` archive (extracted safely into the store's staging folder). A manifest
CSV has an ``image`` column and optional ``liver_mask``, ``spleen_mask``, ``liver_label``,
``spleen_label``, ``cohort``, ``site`` and ``patient_id`` (pseudonymised, never passed on);
every other column passes through into the scans table.

Hidden files and folders (names starting with '.') are skipped silently: they are file-system
clutter (``.DS_Store``), not data.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from screening.errors import ConfigError
from screening.ingest.archives import extract_archive, is_archive, is_archive_name
from screening.location import Location, is_url
from screening.reasons import ReasonCode

__all__ = [
    "MANIFEST_COLUMNS",
    "FoundFile",
    "SourceProblem",
    "SourceSpec",
    "read_manifest",
    "walk_source",
]

log = logging.getLogger(__name__)

#: Manifest columns with a meaning; all others pass through into the scans table.
MANIFEST_COLUMNS = (
    "image",
    "liver_mask",
    "spleen_mask",
    "liver_label",
    "spleen_label",
    "cohort",
    "site",
    "patient_id",
)
#: Columns the scans table owns: a manifest may not override them by passing them through.
_RESERVED = {"scan_id", "patient_pseudo_id", "status", "reason", "message", "store_path"}


@dataclass(frozen=True)
class SourceSpec:
    """One SOURCE argument or one manifest row.

    ``label`` is how outputs name it (the argument or manifest value as the user wrote it).
    ``patient_id`` is only ever used to compute ``patient_pseudo_id``.
    """

    path: str
    label: str
    cohort: str
    site: str | None = None
    liver_mask: str | None = None
    spleen_mask: str | None = None
    liver_labels: tuple[int, ...] | None = None
    spleen_labels: tuple[int, ...] | None = None
    patient_id: str | None = field(default=None, repr=False)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FoundFile:
    """A file to look at: absolute ``path`` and ``name`` for messages (label-relative)."""

    path: str
    name: str
    spec: SourceSpec


@dataclass(frozen=True)
class SourceProblem:
    """A source-level problem (missing path, unsafe archive member) that becomes a row."""

    name: str
    reason: ReasonCode
    message: str
    spec: SourceSpec


def _labels(text: str, column: str, row: int) -> tuple[int, ...] | None:
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.replace(";", " ").replace(",", " ").split())
    except ValueError as e:
        raise ConfigError(
            f"manifest row {row}: {column} {text!r} is not a list of integer labels"
        ) from e


def read_manifest(path: str | os.PathLike[str], default_cohort: str) -> list[SourceSpec]:
    """Read a manifest CSV; relative paths are relative to the manifest's folder."""
    manifest = Path(path)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as e:
        raise ConfigError(f"cannot read manifest {manifest}: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"manifest {manifest} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet) and re-run"
        ) from e
    if "image" not in columns:
        raise ConfigError(
            f"manifest {manifest} has columns {columns}; expected an 'image' column (and "
            "optionally liver_mask, spleen_mask, cohort, site, ...)"
        )
    clash = sorted(set(columns) & _RESERVED)
    if clash:
        raise ConfigError(
            f"manifest {manifest} has column(s) {clash} that the scans table owns; rename them"
        )
    base = manifest.parent

    def resolve(value: str | None) -> str | None:
        value = (value or "").strip()
        if not value or is_url(value):  # a bucket URL is absolute already
            return value or None
        return str((base / value).resolve())

    specs = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        image = (row.get("image") or "").strip()
        if not image:
            raise ConfigError(f"manifest {manifest} line {i}: empty 'image'")
        first = seen.setdefault(str(resolve(image)), i)
        if first != i:
            raise ConfigError(
                f"manifest {manifest} lines {first} and {i} name the same image {image!r}; "
                "expected one row per image (merge the rows' columns into one)"
            )
        extra = tuple(
            (k, v) for k, v in row.items() if k and k not in MANIFEST_COLUMNS and v is not None
        )
        specs.append(
            SourceSpec(
                path=str(resolve(image)),
                label=image,
                cohort=(row.get("cohort") or "").strip() or default_cohort,
                site=(row.get("site") or "").strip() or None,
                liver_mask=resolve(row.get("liver_mask")),
                spleen_mask=resolve(row.get("spleen_mask")),
                liver_labels=_labels(row.get("liver_label") or "", "liver_label", i),
                spleen_labels=_labels(row.get("spleen_label") or "", "spleen_label", i),
                patient_id=(row.get("patient_id") or "").strip() or None,
                extra=extra,
            )
        )
    return specs


def _staging_dir(staging_root: Path, archive: Path) -> Path:
    st = archive.stat()
    token = f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return staging_root / hashlib.sha256(token.encode()).hexdigest()[:24]


def walk_source(
    spec: SourceSpec, staging_root: str | os.PathLike[str] | None
) -> tuple[list[FoundFile], list[SourceProblem]]:
    """List the files under one source, extracting archives (also nested ones) on the way;
    with ``staging_root`` None nothing is extracted and archives are listed as files."""
    files: list[FoundFile] = []
    problems: list[SourceProblem] = []
    staging = None if staging_root is None else Path(staging_root)
    if is_url(spec.path):
        _walk_bucket(spec.path, printable(spec.label), spec, staging, files, problems)
    else:
        _walk(Path(spec.path), printable(spec.label), spec, staging, files, problems)
    return files, problems


def _walk_bucket(
    url: str,
    name: str,
    spec: SourceSpec,
    staging: Path | None,
    files: list[FoundFile],
    problems: list[SourceProblem],
) -> None:
    """The objects under a prefix (or one object), listed without reading them; archives are
    downloaded to staging and extracted like local ones."""
    from screening.errors import StoreError

    where = Location.of(url)
    try:
        where.check_reachable()
        keys = [where.path] if where.fs.isfile(where.path) else sorted(where.fs.find(where.path))
    except StoreError as e:
        problems.append(SourceProblem(name, ReasonCode.UNREADABLE_FILE, e.message, spec))
        return
    except OSError as e:
        why = f"{name} could not be listed ({e})"
        problems.append(SourceProblem(name, ReasonCode.UNREADABLE_FILE, why, spec))
        return
    if not keys:
        problems.append(
            SourceProblem(
                name, ReasonCode.UNREADABLE_FILE, f"{name}: no objects under this prefix", spec
            )
        )
        return
    for key in keys:
        rel = key[len(where.path) :].lstrip("/")
        if any(part.startswith(".") for part in rel.split("/") if part):
            continue
        display = printable(f"{name.rstrip('/')}/{rel}" if rel else name)
        full = f"{where.protocol}://{key}"
        if is_archive_name(full) and staging is not None:
            local = staging / "downloads" / hashlib.sha256(full.encode()).hexdigest()[:24]
            local.mkdir(parents=True, exist_ok=True)
            target = local / posixpath.basename(key)
            where.fs.get_file(key, str(target))
            _extract(target, display, spec, staging, files, problems, depth=1)
        else:
            files.append(FoundFile(full, display, spec))


#: Archives inside archives are extracted this many levels deep, no deeper (a zip nested
#: 1,500 deep must end as a row, not a RecursionError; real archives nest two or three).
MAX_ARCHIVE_DEPTH = 8


def printable(name: str) -> str:
    """A path for messages and Parquet: names that are not valid UTF-8 (which Python carries
    as surrogate escapes) get U+FFFD in their place instead of failing the write later."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _walk(
    path: Path,
    name: str,
    spec: SourceSpec,
    staging: Path | None,
    files: list[FoundFile],
    problems: list[SourceProblem],
) -> None:
    if not path.exists():
        problems.append(
            SourceProblem(name, ReasonCode.UNREADABLE_FILE, f"{name} does not exist", spec)
        )
        return
    if path.is_file():
        if is_archive(path) and staging is not None:
            _extract(path, name, spec, staging, files, problems, depth=1)
        else:
            files.append(FoundFile(str(path), name, spec))
        return

    def unreadable(e: OSError) -> None:  # a folder that cannot be listed is a row, not a gap
        where = printable(str(Path(name) / Path(e.filename or path).relative_to(path)))
        why = e.strerror or type(e).__name__
        problems.append(
            SourceProblem(
                where,
                ReasonCode.UNREADABLE_FILE,
                f"folder {where} could not be listed ({why}); its files were not ingested",
                spec,
            )
        )

    # Symlinked folders are followed (archives arranged with links, as dcm2niix reads them),
    # each real folder once: a link back up the tree or a second link to the same folder
    # adds nothing, so no loop and no duplicate series.
    seen = {os.path.realpath(path)}
    for folder, dirs, names in os.walk(path, onerror=unreadable, followlinks=True):
        keep = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            real = os.path.realpath(os.path.join(folder, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        rel_folder = Path(folder).relative_to(path)
        for file_name in sorted(names):
            if file_name.startswith("."):
                continue
            full = Path(folder) / file_name
            display = printable(str(Path(name) / rel_folder / file_name))
            if is_archive(full) and staging is not None:
                _extract(full, display, spec, staging, files, problems, depth=1)
            elif full.is_file():
                files.append(FoundFile(str(full), display, spec))


def _extract(
    archive: Path,
    name: str,
    spec: SourceSpec,
    staging: Path,
    files: list[FoundFile],
    problems: list[SourceProblem],
    depth: int,
) -> None:
    from screening.errors import InputError

    if depth > MAX_ARCHIVE_DEPTH:
        problems.append(
            SourceProblem(
                name,
                ReasonCode.ARCHIVE_TOO_DEEP,
                f"{name} is an archive nested {depth} deep inside archives (limit "
                f"{MAX_ARCHIVE_DEPTH}); not extracted. Unpack the outer levels first",
                spec,
            )
        )
        return
    dest = _staging_dir(staging, archive)
    try:
        extraction = extract_archive(archive, dest)
    except InputError as e:
        problems.append(
            SourceProblem(name, e.reason or ReasonCode.UNREADABLE_FILE, e.message, spec)
        )
        return
    for member in extraction.skipped:
        problems.append(
            SourceProblem(
                printable(f"{name}!{member.name}"),
                ReasonCode.ARCHIVE_UNSAFE_MEMBER,
                printable(
                    f"archive member {member.name!r} of {name} was not extracted: {member.why}"
                ),
                spec,
            )
        )
    log.debug("extracted %d files from %s", len(extraction.files), name)
    for f in extraction.files:
        rel = f.relative_to(extraction.root)
        display = printable(f"{name}!{rel}")
        if is_archive(f):
            _extract(f, display, spec, staging, files, problems, depth + 1)
        else:
            files.append(FoundFile(str(f), display, spec))
