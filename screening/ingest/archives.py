"""Safe extraction of ``.zip`` and tar archives (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``,
``.tar.xz``) holding scans.

Only regular files and folders are extracted. Members that could write outside the extraction
folder (absolute paths, drive letters, ``..``), links, devices and fifos are skipped and recorded
in :attr:`Extraction.skipped` instead of raising, so one bad member does not lose a whole archive.

Defences, each one on its own enough to keep writes inside ``dest``:

* member names are normalised lexically (``\\`` counts as a separator) and rejected when absolute
  or when ``..`` climbs above the extraction folder;
* folders are created one component at a time and a component that already exists as a symlink
  is refused, so a symlink left in ``dest`` cannot redirect a write;
* the final path is checked with :func:`os.path.realpath` to lie inside ``dest``;
* tar members also pass :func:`tarfile.data_filter` (the ``filter="data"`` of
  :meth:`tarfile.TarFile.extractall`).

Archive bombs: the declared uncompressed sizes are summed before anything is written, and the
bytes actually written are counted while streaming (declared sizes can lie); either going over
``max_total_bytes`` raises :class:`~screening.errors.InputError` with
:attr:`~screening.reasons.ReasonCode.SIZE_LIMIT`.

Each file is streamed in 1 MiB chunks into a temporary file in its final folder
(``.extract-*.partial``) and moved into place with :func:`os.replace`, so an interrupted
extraction never leaves a truncated file under a member's name. Extracting the same archive again
into the same folder overwrites the files and returns the same result.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import lzma
import os
import re
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from screening.errors import ConfigError, InputError
from screening.reasons import ReasonCode

__all__ = [
    "ARCHIVE_SUFFIXES",
    "Extraction",
    "SkippedMember",
    "extract_archive",
    "is_archive",
    "is_archive_name",
]

_LOG = logging.getLogger(__name__)

#: File name endings recognised as archives (compared case-insensitively).
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

_CHUNK_BYTES = 2**20
_FILE_MODE = 0o644  # extracted files are plain data: never executable, setuid or world-writable

# Why a member was skipped (SkippedMember.why).
_ABSOLUTE = "absolute path"
_ESCAPES = "'..' escapes the extraction folder"
_INVALID_NAME = "empty or invalid name"
_SYMLINK = "symlink"
_HARDLINK = "hard link"
_DEVICE = "device or fifo"
_UNSUPPORTED_TYPE = "unsupported member type"
_ENCRYPTED = "encrypted"
_THROUGH_SYMLINK = "path passes through a symlink"
_FILE_IN_THE_WAY = "conflicts with an existing file"
_FOLDER_IN_THE_WAY = "conflicts with an existing folder"
_OUTSIDE = "resolves outside the extraction folder"
_DATA_FILTER = "rejected by tarfile's data filter"

_DRIVE = re.compile(r"^[A-Za-z]:")

# Errors that reading a damaged archive can raise (gzip and bz2 raise plain OSError).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,  # a zip compression method this Python cannot decode
    OSError,
)

_Kind = Literal["file", "dir", "symlink", "hardlink", "device", "encrypted", "other"]

_KIND_SKIPS: dict[_Kind, str] = {
    "symlink": _SYMLINK,
    "hardlink": _HARDLINK,
    "device": _DEVICE,
    "encrypted": _ENCRYPTED,
    "other": _UNSUPPORTED_TYPE,
}


@dataclass(frozen=True)
class SkippedMember:
    """An archive member that was not extracted.

    Parameters
    ----------
    name
        The member name as stored in the archive.
    why
        Why it was skipped, e.g. ``"absolute path"``, ``"'..' escapes the extraction folder"``,
        ``"symlink"``, ``"hard link"``, ``"device or fifo"``.
    """

    name: str
    why: str


@dataclass(frozen=True)
class Extraction:
    """What :func:`extract_archive` produced.

    Parameters
    ----------
    root
        The folder the members were extracted into (absolute, symlinks resolved).
    files
        The extracted regular files, absolute and sorted; folders are not listed.
    skipped
        The members that were not extracted, in archive order.
    """

    root: Path
    files: tuple[Path, ...]
    skipped: tuple[SkippedMember, ...]


@dataclass(frozen=True)
class _Member:
    """One archive member, independent of the archive format."""

    name: str
    kind: _Kind
    size: int  # declared uncompressed size in bytes
    open: Callable[[], IO[bytes]]
    veto: Callable[[Path], str | None] | None = None  # format-specific last check, given root


def is_archive_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like an archive (:data:`ARCHIVE_SUFFIXES`); nothing is read,
    so it serves object-store keys too."""
    return _format_of(path) is not None


def is_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an existing file with one of :data:`ARCHIVE_SUFFIXES`.

    Parameters
    ----------
    path
        Any path; the suffix is compared case-insensitively. The content is not read.

    Returns
    -------
    bool
        ``True`` for a file (not a folder) named like an archive.
    """
    return is_archive_name(path) and os.path.isfile(path)


def extract_archive(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_total_bytes: int = 64 * 2**30,
    max_members: int = 1_000_000,
) -> Extraction:
    """Extract the regular files and folders of ``archive`` into ``dest``, safely.

    Parameters
    ----------
    archive
        A ``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2`` or ``.tar.xz`` file. Tar
        compression is detected from the content, so a mis-named tar still opens.
    dest
        Folder to extract into; created (with parents) when missing, but only once the archive
        has passed the size checks. Files already there with a member's name are replaced.
    max_total_bytes
        Limit on the uncompressed size of the archive, in bytes: on the sum of the declared
        sizes of all members (checked before writing anything) and on the bytes actually written
        (checked while streaming).
    max_members
        Limit on the number of members (files, folders, links, ...).

    Returns
    -------
    Extraction
        The extraction folder, the extracted files and the skipped members.

    Raises
    ------
    InputError
        With reason ``SIZE_LIMIT`` when either limit is exceeded, and ``UNREADABLE_FILE`` when
        ``archive`` is missing, has an unknown suffix, or is not a readable archive of its kind.
        When the written-bytes limit trips mid-way, the members extracted before stay in
        ``dest``; the member being written is discarded.
    ConfigError
        When a limit is negative.
    OSError
        When ``dest`` cannot be written (permissions, full disk).
    """
    if max_total_bytes < 0 or max_members < 0:
        raise ConfigError(
            f"got max_total_bytes={max_total_bytes}, max_members={max_members}; "
            "both limits must be >= 0"
        )
    fmt = _format_of(archive)
    if fmt is None:
        raise InputError(
            "not an archive by its name; expected one of " + ", ".join(ARCHIVE_SUFFIXES),
            reason=ReasonCode.UNREADABLE_FILE,
            path=archive,
        )
    if not os.path.isfile(archive):
        raise InputError(
            "archive not found (or not a file); check the path",
            reason=ReasonCode.UNREADABLE_FILE,
            path=archive,
        )
    expected = "a ZIP archive" if fmt == "zip" else "a tar archive (optionally gz, bz2 or xz)"
    limits = _Limits(max_total_bytes=max_total_bytes, max_members=max_members)
    with _open_members(archive, fmt, expected, limits) as members:
        return _extract_members(members, archive, Path(dest), expected, limits)


# --------------------------------------------------------------------------- reading archives


@dataclass(frozen=True)
class _Limits:
    max_total_bytes: int
    max_members: int


def _format_of(path: str | os.PathLike[str]) -> Literal["zip", "tar"] | None:
    name = os.fspath(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    return None


def _unreadable(archive: str | os.PathLike[str], expected: str, detail: str = "") -> InputError:
    where = f" ({detail})" if detail else ""
    return InputError(
        f"could not read the archive{where}; expected {expected}. "
        "The file may be truncated, corrupt or of another type: re-export or re-copy it",
        reason=ReasonCode.UNREADABLE_FILE,
        path=archive,
    )


def _too_many(archive: str | os.PathLike[str], limits: _Limits) -> InputError:
    return InputError(
        f"the archive has more than {limits.max_members} members; "
        "raise max_members if the archive is trusted",
        reason=ReasonCode.SIZE_LIMIT,
        path=archive,
    )


@contextlib.contextmanager
def _open_members(
    archive: str | os.PathLike[str],
    fmt: Literal["zip", "tar"],
    expected: str,
    limits: _Limits,
) -> Iterator[list[_Member]]:
    """Open ``archive`` and list its members; read errors become ``UNREADABLE_FILE``."""
    try:
        handle = _open_archive(archive, fmt)
    except _READ_ERRORS as e:
        raise _unreadable(archive, expected, type(e).__name__) from e
    with handle:
        try:
            if isinstance(handle, zipfile.ZipFile):
                infos = handle.infolist()
                if len(infos) > limits.max_members:
                    raise _too_many(archive, limits)
                members = [_zip_member(handle, info) for info in infos]
            else:
                members = []
                for tinfo in handle:  # lazily, so a huge member list stops at the limit
                    members.append(_tar_member(handle, tinfo))
                    if len(members) > limits.max_members:
                        raise _too_many(archive, limits)
        except _READ_ERRORS as e:
            raise _unreadable(archive, expected, type(e).__name__) from e
        yield members


def _open_archive(
    archive: str | os.PathLike[str], fmt: Literal["zip", "tar"]
) -> zipfile.ZipFile | tarfile.TarFile:
    if fmt == "zip":
        return zipfile.ZipFile(archive)
    return tarfile.open(archive, "r:*")  # compression detected from the content


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    mode = info.external_attr >> 16  # Unix st_mode, when the archiver stored one
    kind: _Kind
    if stat.S_ISLNK(mode):
        kind = "symlink"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        kind = "device"
    elif info.is_dir() or stat.S_ISDIR(mode):
        kind = "dir"
    elif info.flag_bits & 0x1:
        kind = "encrypted"
    else:
        kind = "file"
    return _Member(info.filename, kind, info.file_size, functools.partial(zf.open, info))


def _tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    kind: _Kind
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    elif info.ischr() or info.isblk() or info.isfifo():
        kind = "device"
    else:
        kind = "other"
    return _Member(
        info.name,
        kind,
        info.size,
        functools.partial(_tar_open, tf, info),
        functools.partial(_tar_data_filter, info),
    )


def _tar_open(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(info)
    if f is None:  # only for non-regular members, which are never opened
        raise tarfile.ExtractError(f"member {info.name!r} has no data")
    return f


def _tar_data_filter(info: tarfile.TarInfo, root: Path) -> str | None:
    """Second line of defence: the standard library's ``filter="data"`` must agree."""
    try:
        tarfile.data_filter(info, os.fspath(root))
    except tarfile.FilterError:
        return _DATA_FILTER
    return None


# --------------------------------------------------------------------------- writing members


def _declared_total(members: Sequence[_Member]) -> int:
    """Sum of the declared uncompressed sizes, in bytes."""
    return sum(max(m.size, 0) for m in members)


def _extract_members(
    members: Sequence[_Member],
    archive: str | os.PathLike[str],
    dest: Path,
    expected: str,
    limits: _Limits,
) -> Extraction:
    declared = _declared_total(members)
    if declared > limits.max_total_bytes:
        raise InputError(
            f"the archive declares {declared} bytes uncompressed, more than the limit of "
            f"{limits.max_total_bytes} bytes; nothing was extracted. "
            "Raise max_total_bytes if the archive is trusted",
            reason=ReasonCode.SIZE_LIMIT,
            path=archive,
        )
    os.makedirs(dest, exist_ok=True)
    root = Path(os.path.realpath(dest))
    counter = _Counter(archive, limits.max_total_bytes)
    files: set[Path] = set()
    skipped: list[SkippedMember] = []
    for member in members:
        outcome = _extract_one(member, root, archive, expected, counter)
        if isinstance(outcome, Path):
            files.add(outcome)
        elif outcome is not None:
            skipped.append(SkippedMember(member.name, outcome))
            _LOG.debug("skipped member %r of %s: %s", member.name, os.fspath(archive), outcome)
    _LOG.debug(
        "extracted %d files from %s into %s (%d members skipped)",
        len(files),
        os.fspath(archive),
        root,
        len(skipped),
    )
    return Extraction(root=root, files=tuple(sorted(files)), skipped=tuple(skipped))


def _extract_one(
    member: _Member,
    root: Path,
    archive: str | os.PathLike[str],
    expected: str,
    counter: _Counter,
) -> Path | str | None:
    """Extract one member: its file path, a reason to skip it, or ``None`` for a folder."""
    if member.kind in _KIND_SKIPS:
        return _KIND_SKIPS[member.kind]
    parts = _relative_parts(member.name)
    if isinstance(parts, str):
        return parts
    if member.veto is not None and (why := member.veto(root)) is not None:
        return why
    if member.kind == "dir":
        made = _make_dirs(root, parts)
        return made if isinstance(made, str) else None
    if not parts:
        return _INVALID_NAME
    parent = _make_dirs(root, parts[:-1])
    if isinstance(parent, str):
        return parent
    target = parent / parts[-1]
    if os.path.islink(target):
        return _THROUGH_SYMLINK
    if os.path.isdir(target):
        return _FOLDER_IN_THE_WAY
    if not _is_within(root, target):
        return _OUTSIDE
    _write_file(member, target, archive, expected, counter)
    return target


def _relative_parts(name: str) -> tuple[str, ...] | str:
    """The member's path as components below the root, or why it cannot be placed there.

    Backslashes count as separators (zips made on Windows), ``.`` and empty components are
    dropped and ``..`` removes the previous component; climbing above the root is refused.
    """
    if "\x00" in name:
        return _INVALID_NAME
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        return _ABSOLUTE
    parts: list[str] = []
    for part in posix.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return _ESCAPES
            parts.pop()
        else:
            parts.append(part)
    return tuple(parts)


def _make_dirs(root: Path, parts: Sequence[str]) -> Path | str:
    """Create ``root/parts`` one component at a time, refusing to pass through a symlink."""
    current = root
    for part in parts:
        current = current / part
        if os.path.islink(current):
            return _THROUGH_SYMLINK
        try:
            os.mkdir(current)
        except FileExistsError:
            if not os.path.isdir(current):
                return _FILE_IN_THE_WAY
    if not _is_within(root, current):
        return _OUTSIDE
    return current


def _is_within(root: Path, path: Path) -> bool:
    """Whether ``path``, with every symlink resolved, is ``root`` or lies below it."""
    real = os.path.realpath(path)
    return os.path.commonpath([os.fspath(root), real]) == os.fspath(root)


class _Counter:
    """Bytes actually written from one archive, against the limit."""

    def __init__(self, archive: str | os.PathLike[str], limit: int) -> None:
        self.archive = archive
        self.limit = limit
        self.written = 0

    def add(self, n: int, member: str) -> None:
        self.written += n
        if self.written > self.limit:
            raise InputError(
                f"extracting member {member!r} took the archive past the limit of {self.limit} "
                "bytes uncompressed, although its headers declared less; the member was "
                "discarded. The archive is corrupt or crafted; raise max_total_bytes only if it "
                "is trusted",
                reason=ReasonCode.SIZE_LIMIT,
                path=self.archive,
            )


def _write_file(
    member: _Member,
    target: Path,
    archive: str | os.PathLike[str],
    expected: str,
    counter: _Counter,
) -> None:
    """Stream ``member`` to a temporary file next to ``target``, then move it into place."""
    fd, tmp = tempfile.mkstemp(prefix=".extract-", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                src = member.open()
            except _READ_ERRORS as e:
                raise _unreadable(archive, expected, f"member {member.name!r}") from e
            with src:
                while True:
                    try:
                        chunk = src.read(_CHUNK_BYTES)
                    except _READ_ERRORS as e:
                        raise _unreadable(archive, expected, f"member {member.name!r}") from e
                    if not chunk:
                        break
                    counter.add(len(chunk), member.name)
                    out.write(chunk)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
