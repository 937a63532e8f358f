"""Pseudonymisation: keyed hashes instead of patient and series identifiers
(docs/data-contracts.md).

``scan_id`` and ``patient_pseudo_id`` are HMAC-SHA256 under a secret key that lives outside the
outputs (a key file or the ``SCREENING_KEY`` environment variable, read by the CLI only). The
same key gives the same ids, so a re-run finds its earlier work and a patient's scans link up;
without the key nobody can go from an id back to a UID or a PatientID by guessing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from screening.errors import ConfigError, KeyMissingError

__all__ = ["MIN_KEY_CHARS", "PseudonymKey", "generate_key_file", "load_key"]

#: A key shorter than this is refused (``keygen`` writes 64 hex characters, 256 bits).
MIN_KEY_CHARS = 32

_KEYGEN_HINT = (
    "make one with `screening keygen KEYFILE` (keep it outside the store and back it up: the "
    "same key must be used for every run on this store), then pass --key-file KEYFILE or set "
    "SCREENING_KEY"
)


@dataclass(frozen=True)
class PseudonymKey:
    """A secret HMAC key. ``repr`` never shows the secret (it may end up in logs or tracebacks).

    >>> key = PseudonymKey(b"x" * 32)
    >>> key.pseudonym("patient", "12345") == key.pseudonym("patient", "12345")
    True
    >>> "x" in repr(key)
    False
    """

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_CHARS:
            raise ConfigError(
                f"the pseudonymisation key has {len(self.secret)} characters; at least "
                f"{MIN_KEY_CHARS} are needed; {_KEYGEN_HINT}"
            )

    def pseudonym(self, namespace: str, *parts: str) -> str:
        """HMAC-SHA256 (hex) of ``namespace`` and ``parts``, joined unambiguously."""
        message = "\x1f".join((namespace, *parts)).encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Short public tag of the key, kept with the store to catch a run with another key."""
        return self.pseudonym("screening-key-fingerprint")[:16]

    def __repr__(self) -> str:
        return f"PseudonymKey(fingerprint={self.fingerprint})"


def generate_key_file(path: str | os.PathLike[str]) -> Path:
    """Write a new random 256-bit key (64 hex characters) readable by the owner only.

    Refuses to overwrite: losing a key breaks the link between runs.
    """
    target = Path(path)
    if target.exists():
        raise ConfigError(
            f"{target} already exists; a new key would change every scan_id and "
            "patient_pseudo_id. Choose another file name or delete this one on purpose."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return target


def load_key(
    key_file: str | os.PathLike[str] | None = None, key_text: str | None = None
) -> PseudonymKey | None:
    """The key from ``key_file`` or from ``key_text`` (the CLI passes ``$SCREENING_KEY``).

    Returns ``None`` when neither is given; callers that need a key raise
    :func:`require_key`'s error.
    """
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text().strip()
        except OSError as e:
            raise KeyMissingError(f"cannot read the key file {path}: {e}; {_KEYGEN_HINT}") from e
        return PseudonymKey(text.encode())
    if key_text:
        return PseudonymKey(key_text.strip().encode())
    return None


def missing_key_error(what: str) -> KeyMissingError:
    """The error raised when ``what`` needs a key and none was given."""
    return KeyMissingError(
        f"{what} needs a pseudonymisation key and none was given; {_KEYGEN_HINT}"
    )


def scan_pseudonym(key: PseudonymKey | None, namespace: str, *parts: str) -> str:
    """A deterministic id: keyed when ``key`` is given, else a plain sha256.

    The unkeyed form is only used for inputs that carry no identifiers (a NIfTI file's
    content hash, a junk file's path); DICOM ingest always requires a key.
    """
    if key is not None:
        return key.pseudonym(namespace, *parts)
    return hashlib.sha256("\x1f".join((namespace, *parts)).encode()).hexdigest()
