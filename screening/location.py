"""Where a file or folder lives: a local path or an object-store URL (s3://, gs://), one API.

A :class:`Location` wraps an fsspec filesystem and a path on it. Local paths behave exactly as
before (a write goes to a temporary sibling and is renamed into place). Object stores have no
rename, but a single PUT is atomic: an object is either absent or whole, so a write goes
straight to its final key and a reader never sees half of it.

Credentials and endpoints come from the standard environment of each store's library
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` / ``AWS_PROFILE`` for S3
through s3fs and botocore, ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS through gcsfs), never from
the command line, and never in logs: a location prints as its URL only.

>>> loc = Location.of("/tmp/results") / "measurements"
>>> loc.url, loc.is_local
('/tmp/results/measurements', True)
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from screening.errors import MissingDependencyError, StoreError
from screening.fsutil import atomic_write_bytes

__all__ = ["Location", "Where", "input_size", "is_url", "open_input"]

#: fsspec protocols and what installs each.
_INSTALL = {
    "s3": "'screening[s3]'",
    "s3a": "'screening[s3]'",
    "gs": "'screening[gcs]'",
    "gcs": "'screening[gcs]'",
}


def is_url(where: str | os.PathLike[str]) -> bool:
    """Whether ``where`` names an object store (``scheme://``) rather than a local path."""
    text = os.fspath(where)
    return "://" in text and not text.startswith("file://")


class Location:
    """A path on a filesystem: ``Location.of("s3://bucket/results") / "measurements"``."""

    __slots__ = ("fs", "path", "protocol")

    def __init__(self, fs: Any, path: str, protocol: str) -> None:
        self.fs, self.path, self.protocol = fs, path.rstrip("/") or path, protocol

    @classmethod
    def of(cls, where: str | os.PathLike[str] | Location) -> Location:
        """A location from a local path, a ``file://`` URL or an object-store URL."""
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        if not is_url(text):
            from fsspec.implementations.local import LocalFileSystem

            local = text.removeprefix("file://")
            return cls(LocalFileSystem(), str(Path(local).absolute()), "file")
        import fsspec

        protocol = text.split("://", 1)[0]
        try:
            fs, path = fsspec.core.url_to_fs(text)
        except ImportError as e:
            package = _INSTALL.get(protocol, f"the fsspec backend of {protocol}://")
            raise MissingDependencyError(
                f"{protocol}:// needs its fsspec backend: pip install {package} ({e})"
            ) from e
        except ValueError as e:
            raise StoreError(f"not a storage URL fsspec knows: {text} ({e})") from e
        return cls(fs, path, protocol)

    # ------------------------------------------------------------------ naming

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def url(self) -> str:
        """The path (local) or ``protocol://path``: what messages and records show."""
        return self.path if self.is_local else f"{self.protocol}://{self.path}"

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> Location:
        return Location(self.fs, posixpath.dirname(self.path), self.protocol)

    def __truediv__(self, name: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, name), self.protocol)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.protocol, self.path) == (
            other.protocol,
            other.path,
        )

    def __hash__(self) -> int:
        return hash((self.protocol, self.path))

    def __fspath__(self) -> str:
        """Path-like exactly when local (``open``, pyarrow and zarr then take it as a path)."""
        if not self.is_local:
            raise TypeError(f"{self.url} is in object storage, not a local path")
        return self.path

    def local_path(self) -> Path:
        """The local path; a StoreError for an object-store location."""
        if not self.is_local:
            raise StoreError(f"{self.url} is in object storage, not a local path")
        return Path(self.path)

    def check_reachable(self) -> None:
        """For an object store: the bucket exists and the environment's credentials may list
        it. A StoreError naming the URL (never the credentials) otherwise."""
        if self.is_local:
            return
        bucket = f"{self.protocol}://{self.path.split('/', 1)[0]}"
        creds = (
            "the credentials in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "or AWS_PROFILE, AWS_ENDPOINT_URL for an S3-compatible server; "
            "GOOGLE_APPLICATION_CREDENTIALS for GCS)"
        )
        try:
            self.fs.ls(self.path.split("/", 1)[0], refresh=True)
        except FileNotFoundError as e:
            raise StoreError(f"bucket {bucket} does not exist (or {creds} cannot see it)") from e
        except PermissionError as e:
            raise StoreError(f"access to {bucket} was denied: check {creds}") from e
        except OSError as e:
            raise StoreError(f"cannot reach {bucket}: {e} (check {creds})") from e

    # ------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def is_dir(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def is_file(self) -> bool:
        return bool(self.fs.isfile(self.path))

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.path))

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def glob(self, pattern: str) -> list[Location]:
        """Files matching ``pattern`` below this folder, sorted; hidden names skipped. Listed
        afresh: workers and other processes write here too, so no cached listing is trusted."""
        if not self.is_local:
            self.fs.invalidate_cache(self.path)
        found = self.fs.glob(posixpath.join(self.path, pattern))
        out = [Location(self.fs, str(p), self.protocol) for p in sorted(found)]
        return [p for p in out if not p.name.startswith(".")]

    @contextmanager
    def open(self, mode: str = "rb") -> Iterator[IO[Any]]:
        with self.fs.open(self.path, mode) as f:
            yield f

    # ------------------------------------------------------------------ writing

    def makedirs(self) -> None:
        """Create the folder (local only: object stores have no folders)."""
        if self.is_local:
            os.makedirs(self.path, exist_ok=True)

    def write_bytes(self, data: bytes) -> None:
        """Write the whole object at once: a reader sees the old one, or all of the new one."""
        if not self.is_local:
            self.fs.pipe_file(self.path, data)
            return
        os.makedirs(posixpath.dirname(self.path), exist_ok=True)
        atomic_write_bytes(self.path, data)

    def put_bytes(self, data: bytes) -> None:
        """Write without the atomic dance: for files inside something that is itself published
        atomically later (the chunks of a store that gets its completion marker last)."""
        if self.is_local:
            os.makedirs(posixpath.dirname(self.path), exist_ok=True)
            with open(self.path, "wb") as f:
                f.write(data)
        else:
            self.fs.pipe_file(self.path, data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_json(self, obj: Any) -> None:
        self.write_text(json.dumps(obj, indent=2) + "\n")

    def remove(self, *, recursive: bool = False) -> None:
        """Delete the file (or the folder with ``recursive``); absent is fine."""
        with suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=recursive)

    def move_to(self, dest: Location) -> None:
        """Move a file (a copy and a delete on object stores)."""
        dest.parent.makedirs()
        self.fs.mv(self.path, dest.path)


def open_input(path: str, *, block_size: int = 256 * 1024) -> IO[bytes]:
    """A source file opened for reading: a local path as a plain file, an object-store URL as a
    file that fetches ``block_size`` ranges on demand (a DICOM header costs a range read, not
    the whole object). Close it (``with``)."""
    if not is_url(path):
        return open(path.removeprefix("file://"), "rb")
    loc = Location.of(path)
    f: IO[bytes] = loc.fs.open(loc.path, "rb", block_size=block_size)
    return f


def input_size(f: IO[bytes]) -> int:
    """Size in bytes of a file from :func:`open_input`."""
    size = getattr(f, "size", None)
    return int(size) if size is not None else os.fstat(f.fileno()).st_size


#: Anything a location can be made from.
Where = str | os.PathLike[str] | Location
