"""The error hierarchy (every error says what was received, what was expected and how to fix
it, and carries its reason code and file).

Every error says what was received, what was expected and how to fix it, and carries the
reason code (:class:`~screening.reasons.ReasonCode`) and the file it concerns. Concrete errors
also subclass the builtin they refine, so ``except FileNotFoundError`` still works.

Expected per-scan failures (bad input) are turned into rows with the error's ``reason`` by the
engine; bugs still raise.
"""

from __future__ import annotations

import os

from screening.reasons import ReasonCode

__all__ = [
    "ClusterError",
    "ConfigError",
    "DicomReadError",
    "DiskFullError",
    "InputError",
    "KeyMissingError",
    "MissingDependencyError",
    "ModelFileError",
    "SchemaMismatchError",
    "ScreeningError",
    "SeriesNotFoundError",
    "StoreError",
    "ValidationError",
    "attempt_import",
    "failure_reason",
    "is_disk_full",
]


class ScreeningError(Exception):
    """Base class of every error this package raises on purpose.

    Parameters
    ----------
    message
        What was received, what was expected, and how to fix it.
    reason
        Reason code recorded in Parquet when this error ends a scan.
    path
        The file or folder concerned. Never a patient identifier.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: ReasonCode | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.message = message
        self.reason = reason
        # A Location names itself by URL (an object store has no local path).
        self.path = None if path is None else (getattr(path, "url", None) or os.fspath(path))
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.reason is not None:
            parts.append(f"[{self.reason}]")
        if self.path is not None:
            parts.append(f"(file: {self.path})")
        return " ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive default exception pickling; Dask pickles errors.
        return (_rebuild, (type(self), self.message, self.reason, self.path))


def _rebuild(
    cls: type[ScreeningError], message: str, reason: ReasonCode | None, path: str | None
) -> ScreeningError:
    return cls(message, reason=reason, path=path)


class ConfigError(ScreeningError, ValueError):
    """An invalid configuration value (a user or API mistake, not a data problem)."""


class KeyMissingError(ConfigError):
    """No pseudonymisation key was given where one is required."""


class SchemaMismatchError(ScreeningError, ValueError):
    """A table does not match its data contract in ``schemas/``."""


class InputError(ScreeningError, ValueError):
    """A scan cannot be used; the engine records it as a row with ``reason``."""


class ValidationError(InputError):
    """A DICOM series or volume failed a validation rule (orientation, spacing, slices)."""


class DicomReadError(InputError):
    """A DICOM file could not be read or decoded."""


class SeriesNotFoundError(ScreeningError, FileNotFoundError):
    """A source path holds no usable image series."""


class StoreError(ScreeningError, OSError):
    """A scan store is missing, incomplete or inconsistent."""


class DiskFullError(StoreError):
    """No space left on a device while writing: the job stopped cleanly, what it committed is
    kept, and re-running the same command after freeing space resumes."""


def failure_reason(error: BaseException) -> tuple[ReasonCode, str]:
    """The reason code and message a failure row records for ``error`` (the one rule for every
    stage): the error's own reason; else DISK_FULL for a full disk, WORKER_LOST for a worker
    process that died (Dask's ``KilledWorker``), INTERNAL_ERROR for anything else (a bug). The
    message of a :class:`ScreeningError` is kept as is; others are prefixed with their type.

    >>> failure_reason(ValueError("bad"))
    (<ReasonCode.INTERNAL_ERROR: 'INTERNAL_ERROR'>, 'ValueError: bad')
    """
    if isinstance(error, ScreeningError):
        return error.reason or ReasonCode.INTERNAL_ERROR, str(error)
    message = f"{type(error).__name__}: {error}"
    if is_disk_full(error):
        return ReasonCode.DISK_FULL, message
    if type(error).__name__ == "KilledWorker":  # distributed's, not imported here
        return ReasonCode.WORKER_LOST, message
    return ReasonCode.INTERNAL_ERROR, message


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or an exception it was raised from) is ENOSPC / EDQUOT."""
    import errno

    seen = 0
    while error is not None and seen < 16:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(error, ScreeningError) and error.reason == ReasonCode.DISK_FULL:
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


class ClusterError(ScreeningError, RuntimeError):
    """The cluster cannot do the work asked of it (e.g. every GPU worker has gone)."""


class ModelFileError(ScreeningError, ValueError):
    """A model checkpoint failed its hash check or describes an unknown architecture."""


class MissingDependencyError(ScreeningError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def attempt_import(module: str, extra: str) -> object:
    """Import an optional dependency or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{module!r} is needed for this feature but is not installed; "
            f"install it with: pip install 'screening[{extra}]'"
        ) from e
