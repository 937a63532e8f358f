"""Training data for ``screening train``: a scan store as is, or a manifest ingested first.

It composes two stages (ingest, then model training), so it lives in the pipeline layer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from screening.errors import InputError
from screening.ingest import generate_key_file, ingest, load_key, read_manifest
from screening.runtime import ClusterConfig

__all__ = ["training_store"]

log = logging.getLogger(__name__)


def training_store(data: str | os.PathLike[str], out: Path, *, progress: bool = False) -> Path:
    """A store root as is; a manifest CSV is ingested into ``OUT/data-store`` first (with a
    key of its own, kept beside it: this cache is for training only)."""
    p = Path(data)
    if p.is_dir():
        return p
    if p.suffix.lower() != ".csv" or not p.is_file():
        raise InputError(f"--data must be a scan store folder or a manifest .csv, got {p}", path=p)
    store = out / "data-store"
    key_file = out / "data-store.key"
    if not key_file.exists():
        out.mkdir(parents=True, exist_ok=True)
        generate_key_file(key_file)
    summary = ingest(
        [],
        store,
        cohort="training",
        manifest=read_manifest(p, "training"),
        key=load_key(key_file),
        cluster=ClusterConfig(workers=1),
        progress=progress,
    )
    log.info("training data: %s", summary.describe().splitlines()[0])
    return store
