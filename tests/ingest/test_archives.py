"""Safe archive extraction: round trips, path traversal, links, size limits, corrupt files.

Archives are built in each test with :mod:`zipfile` / :mod:`tarfile`; no binary fixtures.
"""

from __future__ import annotations

import io
import logging
import os
import random
import stat
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

import pytest

from screening.errors import ConfigError, InputError
from screening.ingest import archives
from screening.ingest.archives import (
    ARCHIVE_SUFFIXES,
    Extraction,
    SkippedMember,
    extract_archive,
    is_archive,
)
from screening.reasons import ReasonCode

FORMATS = [".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"]
TAR_MODES: dict[str, Literal["w", "w:gz", "w:bz2", "w:xz"]] = {
    ".tar": "w",
    ".tar.gz": "w:gz",
    ".tgz": "w:gz",
    ".tar.bz2": "w:bz2",
    ".tar.xz": "w:xz",
}

# Nested folders, an empty folder and one file larger than the 1 MiB copy chunk.
CONTENT: dict[str, bytes] = {
    "top.txt": b"top level\n",
    "series/a/IM0001.dcm": b"\x00\x01slice one",
    "series/a/IM0002.dcm": b"\x00\x02slice two",
    "series/b/deep/er/vol.nii.gz": random.Random(7).randbytes(2 * 2**20 + 123),
    "series/empty.bin": b"",
}
EMPTY_DIR = "series/nothing_here/"


# ------------------------------------------------------------------------------------ helpers


def _add_zip(zf: zipfile.ZipFile, name: str, data: bytes = b"", mode: int | None = None) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3  # Unix, so external_attr holds st_mode
        info.external_attr = mode << 16
    zf.writestr(info, data)


def _add_tar(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.isreg():
        tf.addfile(info, io.BytesIO(data))
    else:
        info.size = 0
        tf.addfile(info)


def _make_archive(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """Write ``files`` (and empty ``dirs``) as an archive of the kind ``path``'s suffix names."""
    suffix = next(s for s in sorted(FORMATS, key=len, reverse=True) if path.name.endswith(s))
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for d in dirs:
                zf.writestr(zipfile.ZipInfo(d), b"")
            for name, data in files.items():
                _add_zip(zf, name, data)
    else:
        with tarfile.open(path, TAR_MODES[suffix]) as tf:
            for d in dirs:
                _add_tar(tf, d.rstrip("/"), type=tarfile.DIRTYPE, mode=0o755)
            for name, data in files.items():
                _add_tar(tf, name, data)
    return path


def _tree(folder: Path) -> set[str]:
    """Every path below ``folder``, relative, symlinks not followed."""
    return {
        os.path.relpath(os.path.join(dirpath, n), folder)
        for dirpath, dirnames, filenames in os.walk(folder)
        for n in dirnames + filenames
    }


def _outside(tmp_path: Path, dest: Path) -> set[str]:
    """Everything under ``tmp_path`` except ``dest`` and what lies below it."""
    rel = os.path.relpath(dest, tmp_path)
    return {p for p in _tree(tmp_path) if p != rel and not p.startswith(rel + os.sep)}


def _check_error(exc: pytest.ExceptionInfo[InputError], reason: ReasonCode, archive: Path) -> None:
    assert exc.value.reason is reason
    assert exc.value.path == os.fspath(archive)
    assert os.fspath(archive) in str(exc.value)


# ------------------------------------------------------------------------------------ is_archive


def test_archive_suffixes() -> None:
    assert tuple(FORMATS) == ARCHIVE_SUFFIXES


@pytest.mark.parametrize(
    "name", ["s.zip", "s.tar", "s.tar.gz", "s.tgz", "s.tar.bz2", "s.tar.xz", "S.ZIP", "s.TAR.Gz"]
)
def test_is_archive_true(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    assert is_archive(path)
    assert is_archive(os.fspath(path))


@pytest.mark.parametrize(
    "name", ["s.gz", "s.nii.gz", "s.dcm", "s.zip.bak", "s.tar.gz.part", "zip", "s_zip", "s.bz2"]
)
def test_is_archive_false_by_suffix(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    assert not is_archive(path)


def test_is_archive_needs_a_file(tmp_path: Path) -> None:
    (tmp_path / "folder.zip").mkdir()
    assert not is_archive(tmp_path / "folder.zip")
    assert not is_archive(tmp_path / "missing.tar.gz")


# ------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    archive = _make_archive(tmp_path / f"scans{suffix}", CONTENT, dirs=(EMPTY_DIR,))
    dest = tmp_path / "out" / "nested"  # created with its parents

    result = extract_archive(archive, dest)

    assert isinstance(result, Extraction)
    assert result.root == Path(os.path.realpath(dest))
    assert result.skipped == ()
    assert result.files == tuple(sorted(dest.resolve() / n for n in CONTENT))
    assert all(p.is_absolute() for p in result.files)
    for name, data in CONTENT.items():
        assert (dest / name).read_bytes() == data
    assert (dest / EMPTY_DIR).is_dir()
    assert not any(p.name.endswith(".partial") for p in dest.rglob("*"))
    assert stat.S_IMODE((dest / "top.txt").stat().st_mode) == 0o644


def test_dot_and_inner_dotdot_stay_inside(tmp_path: Path) -> None:
    """``./x`` and ``a/../b`` normalise to paths inside dest and are extracted there."""
    archive = _make_archive(tmp_path / "a.zip", {"./x.txt": b"x", "a/../b.txt": b"b"})
    result = extract_archive(archive, tmp_path / "out")
    assert result.skipped == ()
    assert [p.name for p in result.files] == ["b.txt", "x.txt"]
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"b"


# ------------------------------------------------------------------------------------ traversal

EVIL_NAMES = {
    "../evil.txt": "'..' escapes the extraction folder",
    "/abs.txt": "absolute path",
    "a/../../x": "'..' escapes the extraction folder",
    "..\\evil_backslash.txt": "'..' escapes the extraction folder",
    "ok/..\\..\\..\\evil_mixed.txt": "'..' escapes the extraction folder",
    "C:/windows.txt": "absolute path",
    "c:\\windows_backslash.txt": "absolute path",
    "\\\\server\\share\\unc.txt": "absolute path",
}


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_traversal_members_are_skipped(tmp_path: Path, suffix: str) -> None:
    archive = _make_archive(
        tmp_path / f"evil{suffix}", {**{n: b"pwned" for n in EVIL_NAMES}, "good.txt": b"fine"}
    )
    dest = tmp_path / "parent" / "dest"
    dest.mkdir(parents=True)
    before = _outside(tmp_path, dest)

    result = extract_archive(archive, dest)

    assert _outside(tmp_path, dest) == before
    assert set(result.skipped) == {SkippedMember(n, why) for n, why in EVIL_NAMES.items()}
    assert result.files == (dest.resolve() / "good.txt",)
    assert _tree(dest) == {"good.txt"}
    assert not Path("/abs.txt").exists()


def test_existing_symlink_in_dest_is_not_followed(tmp_path: Path) -> None:
    """A symlink already in dest (pointing outside) must not redirect a member."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    (dest / "file.txt").symlink_to(outside / "target.txt")
    archive = _make_archive(tmp_path / "a.zip", {"sub/x.txt": b"x", "file.txt": b"y"})

    result = extract_archive(archive, dest)

    assert list(outside.iterdir()) == []
    assert result.files == ()
    assert {s.name: s.why for s in result.skipped} == {
        "sub/x.txt": "path passes through a symlink",
        "file.txt": "path passes through a symlink",
    }


def test_name_conflicts_are_skipped(tmp_path: Path) -> None:
    """A file where a folder is needed (and vice versa) is recorded, not raised."""
    archive = _make_archive(tmp_path / "a.zip", {"a": b"file", "a/b.txt": b"under a file"})
    dest = tmp_path / "dest"
    (dest / "folder.txt").mkdir(parents=True)
    with zipfile.ZipFile(archive, "a") as zf:
        _add_zip(zf, "folder.txt", b"data")

    result = extract_archive(archive, dest)

    assert result.files == (dest.resolve() / "a",)
    assert {s.name: s.why for s in result.skipped} == {
        "a/b.txt": "conflicts with an existing file",
        "folder.txt": "conflicts with an existing folder",
    }


# ------------------------------------------------------------------------------------ links


def test_tar_links_and_devices_are_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    with tarfile.open(archive, "w") as tf:
        _add_tar(tf, "good.txt", b"fine")
        _add_tar(tf, "abs_link", type=tarfile.SYMTYPE, linkname=os.fspath(secret))
        _add_tar(tf, "rel_link", type=tarfile.SYMTYPE, linkname="good.txt")
        _add_tar(tf, "up", type=tarfile.SYMTYPE, linkname="..")
        _add_tar(tf, "up/through_link.txt", b"lands in dest/up, a real folder")
        _add_tar(tf, "hard", type=tarfile.LNKTYPE, linkname="good.txt")
        _add_tar(tf, "hard_out", type=tarfile.LNKTYPE, linkname=os.fspath(secret))
        _add_tar(tf, "fifo", type=tarfile.FIFOTYPE)
        _add_tar(tf, "chr", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _add_tar(tf, "blk", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
    dest = tmp_path / "dest"
    before = _outside(tmp_path, dest)

    result = extract_archive(archive, dest)

    assert {s.name: s.why for s in result.skipped} == {
        "abs_link": "symlink",
        "rel_link": "symlink",
        "up": "symlink",
        "hard": "hard link",
        "hard_out": "hard link",
        "fifo": "device or fifo",
        "chr": "device or fifo",
        "blk": "device or fifo",
    }
    assert result.files == (dest.resolve() / "good.txt", dest.resolve() / "up/through_link.txt")
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert (dest / "up").is_dir()
    assert _outside(tmp_path, dest) == before
    assert secret.read_bytes() == b"secret"


def test_zip_symlink_member_is_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        _add_zip(zf, "link", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)
        _add_zip(zf, "fifo", b"", mode=stat.S_IFIFO | 0o644)
        _add_zip(zf, "real.txt", b"real", mode=stat.S_IFREG | 0o644)

    result = extract_archive(archive, tmp_path / "dest")

    assert result.skipped == (
        SkippedMember("link", "symlink"),
        SkippedMember("fifo", "device or fifo"),
    )
    assert not os.path.lexists(tmp_path / "dest" / "link")
    assert not os.path.lexists(tmp_path / "dest" / "fifo")
    assert result.files == ((tmp_path / "dest").resolve() / "real.txt",)


def test_skipped_members_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    archive = _make_archive(tmp_path / "a.zip", {"../x": b"1", "/y": b"2", "ok": b"3"})
    with caplog.at_level(logging.DEBUG, logger="screening.ingest.archives"):
        extract_archive(archive, tmp_path / "dest")
    skip_lines = [r for r in caplog.records if r.getMessage().startswith("skipped member")]
    assert len(skip_lines) == 2
    assert "'../x'" in skip_lines[0].getMessage()
    assert "'/y'" in skip_lines[1].getMessage()


# ------------------------------------------------------------------------------------ limits


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_declared_size_over_limit_writes_nothing(tmp_path: Path, suffix: str) -> None:
    files = {f"f{i}.bin": bytes(1000) for i in range(3)}
    archive = _make_archive(tmp_path / f"big{suffix}", files)
    dest = tmp_path / "dest"

    with pytest.raises(InputError) as exc:
        extract_archive(archive, dest, max_total_bytes=2999)

    _check_error(exc, ReasonCode.SIZE_LIMIT, archive)
    assert "3000" in str(exc.value)
    assert not dest.exists()
    # exactly at the limit is allowed
    assert len(extract_archive(archive, dest, max_total_bytes=3000).files) == 3


def test_too_many_members(tmp_path: Path) -> None:
    archive = _make_archive(tmp_path / "many.tar", {f"f{i}": b"x" for i in range(5)})
    with pytest.raises(InputError) as exc:
        extract_archive(archive, tmp_path / "dest", max_members=4)
    _check_error(exc, ReasonCode.SIZE_LIMIT, archive)
    assert not (tmp_path / "dest").exists()
    assert len(extract_archive(archive, tmp_path / "dest", max_members=5).files) == 5


def test_streaming_limit_stops_a_member_larger_than_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes actually written are counted, whatever the headers declared.

    zipfile and tarfile never return more than a member's declared size (see the next test), so
    an archive whose headers under-report is simulated by hiding the declared total from the
    pre-check; the counter must then stop the member that goes over the limit.
    """
    monkeypatch.setattr(archives, "_declared_total", lambda members: 0)
    secret = b"PATIENT-CONTENT-"
    archive = _make_archive(
        tmp_path / "bomb.zip", {"small.txt": b"s" * 100, "big.bin": secret * (2**17)}
    )
    dest = tmp_path / "dest"

    with pytest.raises(InputError) as exc:
        extract_archive(archive, dest, max_total_bytes=2**20)

    _check_error(exc, ReasonCode.SIZE_LIMIT, archive)
    assert "'big.bin'" in str(exc.value)
    assert secret.decode() not in str(exc.value)
    assert _tree(dest) == {"small.txt"}  # the partial member was discarded, temp file included


def test_zip_with_understated_size_is_refused(tmp_path: Path) -> None:
    """Headers patched to declare 10 bytes for a 100 kB member: nothing is written."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _add_zip(zf, "big.bin", b"A" * 100_000)
    raw = bytearray(buf.getvalue())
    struct.pack_into("<I", raw, raw.find(b"PK\x03\x04") + 22, 10)  # local header size
    struct.pack_into("<I", raw, raw.find(b"PK\x01\x02") + 24, 10)  # central directory size
    archive = tmp_path / "lying.zip"
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "dest"

    with pytest.raises(InputError) as exc:
        extract_archive(archive, dest, max_total_bytes=1000)

    # zipfile stops at the declared size, so the CRC check fails: a corrupt archive.
    _check_error(exc, ReasonCode.UNREADABLE_FILE, archive)
    assert "'big.bin'" in str(exc.value)
    assert isinstance(exc.value.__cause__, zipfile.BadZipFile)
    assert _tree(dest) == set()


@pytest.mark.parametrize("limits", [{"max_total_bytes": -1}, {"max_members": -1}])
def test_negative_limits_are_config_errors(tmp_path: Path, limits: dict[str, int]) -> None:
    archive = _make_archive(tmp_path / "a.zip", {"x": b"x"})
    with pytest.raises(ConfigError):
        extract_archive(archive, tmp_path / "dest", **limits)


# ------------------------------------------------------------------------------------ unreadable


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("x.zip", b"this is not a zip file at all" * 10, "ZIP"),
        ("empty.zip", b"", "ZIP"),
        ("x.tar", b"\x01junk" * 200, "tar"),
        ("x.tar.gz", b"\x1f\x8bjunk" * 200, "tar"),
        ("x.tar.xz", b"junk", "tar"),
    ],
)
def test_junk_file_is_unreadable(tmp_path: Path, name: str, data: bytes, expected: str) -> None:
    archive = tmp_path / name
    archive.write_bytes(data)
    with pytest.raises(InputError) as exc:
        extract_archive(archive, tmp_path / "dest")
    _check_error(exc, ReasonCode.UNREADABLE_FILE, archive)
    assert f"expected a {expected}" in str(exc.value)
    assert exc.value.__cause__ is not None
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tar.bz2", ".tar.xz"])
def test_truncated_archive_is_unreadable(tmp_path: Path, suffix: str) -> None:
    full = _make_archive(tmp_path / f"full{suffix}", CONTENT)
    archive = tmp_path / f"cut{suffix}"
    archive.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InputError) as exc:
        extract_archive(archive, tmp_path / "dest")
    _check_error(exc, ReasonCode.UNREADABLE_FILE, archive)
    assert exc.value.__cause__ is not None
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))


def test_missing_or_unknown_archive(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        extract_archive(tmp_path / "missing.zip", tmp_path / "dest")
    _check_error(exc, ReasonCode.UNREADABLE_FILE, tmp_path / "missing.zip")
    other = tmp_path / "scan.rar"
    other.write_bytes(b"Rar!")
    with pytest.raises(InputError) as exc:
        extract_archive(other, tmp_path / "dest")
    _check_error(exc, ReasonCode.UNREADABLE_FILE, other)
    assert ".tar.gz" in str(exc.value)
    assert not (tmp_path / "dest").exists()


# ------------------------------------------------------------------------------------ idempotence


@pytest.mark.parametrize("suffix", [".zip", ".tar.xz"])
def test_extraction_is_idempotent(tmp_path: Path, suffix: str) -> None:
    archive = _make_archive(
        tmp_path / f"a{suffix}", {**CONTENT, "../evil.txt": b"no"}, dirs=(EMPTY_DIR,)
    )
    dest = tmp_path / "dest"
    first = extract_archive(archive, dest)
    (dest / "top.txt").write_bytes(b"edited since")  # restored by the second extraction

    second = extract_archive(archive, dest)

    assert second == first
    assert len(first.files) == len(CONTENT)
    assert first.skipped == (SkippedMember("../evil.txt", "'..' escapes the extraction folder"),)
    assert (dest / "top.txt").read_bytes() == CONTENT["top.txt"]
    folders = {str(Path(n).parent) for n in CONTENT} | {"series/b", "series/b/deep"}
    assert _tree(dest) == set(CONTENT) | (folders - {"."}) | {EMPTY_DIR.rstrip("/")}
    assert {os.path.relpath(p, dest.resolve()) for p in second.files} == set(CONTENT)
    assert not any(p.name.endswith(".partial") for p in dest.rglob("*"))
