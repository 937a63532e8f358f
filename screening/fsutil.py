"""Atomic small-file writes (a temporary sibling, flushed and fsync'd, then ``os.replace``:
a reader or a crash sees the old file or the whole new one) and exclusive process locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from screening.errors import ConfigError

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "exclusive_lock"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, and removed on release) or raise
    ConfigError naming the holder.

    The kernel drops the lock when the holder exits, however it exits (Ctrl-C, SIGKILL), so a
    killed process never blocks the next one; its left-over file is simply locked again.
    ``what`` names the holder in the error.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"another {what} is running on this folder (pid {holder}, lock {target}); "
                "wait for it to finish"
            ) from e
        try:
            same = os.fstat(fd).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file as we opened it: lock the new one
    else:  # pragma: no cover - would need ten races in a row
        raise ConfigError(f"could not lock {target}: it keeps being replaced")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        target.unlink(missing_ok=True)  # while still holding the lock
        os.close(fd)
