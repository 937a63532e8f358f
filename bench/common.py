"""Pieces the stage benchmarks share: writing their reports, the held-out synthetic store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Held-out synthetic cohort seed: not the demo's 7 nor the demo weights' 1001.
HELD_OUT_SEED = 2024


def emit(md: str, res: Any, out: Path | None, json_path: Path | None) -> None:
    """Print the markdown section; also write it (and the raw results) when asked."""
    print(md)
    if out:
        out.write_text(md.rstrip("\n") + "\n")
    if json_path:
        json_path.write_text(json.dumps(res, indent=2, default=str) + "\n")


def held_out_store(work: Path, n: int, prevalence: float = 0.4) -> tuple[Path, Path]:
    """Synthesise the held-out cohort under ``work`` and ingest it (one local worker) with a
    throw-away key; return ``(cohort_dir, store_dir)``."""
    from screening.engine import ClusterConfig
    from screening.ingest import ingest, read_manifest
    from screening.ingest.pseudonym import PseudonymKey
    from screening.synthetic.cohort import generate_cohort

    cohort, store = work / "cohort", work / "store"
    generate_cohort(cohort, n, HELD_OUT_SEED, prevalence=prevalence)
    ingest(
        [],
        store,
        cohort="held-out",
        manifest=read_manifest(cohort / "manifest.csv", "held-out"),
        key=PseudonymKey(os.urandom(32)),
        cluster=ClusterConfig(workers=1),
    )
    return cohort, store
