"""Disk full (ENOSPC) on a real, tiny filesystem: the run stops cleanly with a clear error,
keeps every committed row, leaves no half file, and a re-run after freeing space finishes with
exactly one row per scan."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from distributed import Client

from screening.errors import DiskFullError
from screening.pipeline import RunConfig, run_cohort
from screening.reasons import Segmenter
from tests.pipeline import segmenters
from tests.pipeline.conftest import fresh_cluster, write_phantom_store
from tests.pipeline.test_run import rows


def test_results_disk_full_stops_cleanly_and_resumes(
    tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    store = tmp_path / "store"
    ids = write_phantom_store(store, 8, seed=12)
    results = small_disk(40) / "results"  # room for some rows, not for all
    cfg = RunConfig(
        segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver, overlays=False, flush_rows=1
    )
    with fresh_cluster() as scheduler, Client(scheduler) as client:
        with pytest.raises(DiskFullError, match="no space left") as err:
            run_cohort(store, results, cfg, client)
        assert "re-run" in str(err.value)
        committed = Counter(r["scan_id"] for r in rows(results))
        assert set(committed.values()) == {1} and 1 <= len(committed) < len(ids)
        assert not list(results.rglob(".*.tmp"))  # no half-written part left taking space
        # Free space: tmpfs grows in place, keeping its files.
        subprocess.run(["mount", "-o", "remount,size=4m", str(results.parent)], check=True)
        summary = run_cohort(store, results, cfg, client)
    assert summary.n_skipped == len(committed)
    got = Counter(r["scan_id"] for r in rows(results))
    assert sorted(got) == sorted(ids) and set(got.values()) == {1}
