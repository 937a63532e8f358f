"""Pieces the stage benchmarks share: writing their reports, the machine and commit they name,
the held-out synthetic store."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

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
    from screening.ingest import ingest, read_manifest
    from screening.ingest.pseudonym import PseudonymKey
    from screening.runtime import ClusterConfig
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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the reports' machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_state() -> str:
    """Short commit, and whether the library (``screening/``) differs from it."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        rev, dirty = run("rev-parse", "--short", "HEAD"), run("status", "--porcelain", "screening")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev} + uncommitted changes in screening/" if dirty else rev
