"""Wall time of a one-file ``screening ingest``, this checkout against another, interleaved.

``python -m bench.bench_startup [--baseline DIR] [--runs N] [--out FILE]``

Each run is a whole process, ``python -m screening.cli ingest ONE.nii.gz --store S`` into a fresh
store, so it counts the interpreter, imports, the embedded cluster's start and stop, and the work.
The input is the TotalSegmentator example CT (``../shared/data/real``; a synthetic NIfTI phantom
when that is absent). With ``--baseline`` (a checkout of an earlier commit, e.g. made with
``git worktree add /tmp/base <commit>``) the two are run alternately in the same loop, so the
machine's load falls on both alike; the report gives medians, the spread and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, cpu_model, emit, git_state

REAL_CT = ROOT.parent / "shared/data/real/totalsegmentator-example/example_ct.nii.gz"


def _input(work: Path) -> tuple[Path, str]:
    if REAL_CT.is_file():
        return REAL_CT, "TotalSegmentator example CT (122 × 101 × 112, NIfTI)"
    import nibabel as nib
    import numpy as np

    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom

    ph = make_phantom(PhantomSpec(), ScanGeometry.preset("small"), seed=0)
    path = work / "one.nii.gz"
    hu = np.maximum(ph.hu, -1024).astype(np.int16)
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([*ph.spacing_mm[::-1], 1.0])), path)
    return path, f"synthetic phantom {hu.shape} (NIfTI)"


def _one_run(repo: Path, image: Path, store: Path) -> float:
    shutil.rmtree(store, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "screening.cli", "ingest", str(image), "--store", str(store)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--quiet"], cwd=repo, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _row(name: str, times: list[float]) -> str:
    med = statistics.median(times)
    return f"| {name} | {len(times)} | {med:.2f} | {min(times):.2f} – {max(times):.2f} |"


NOTE = """\
What changed (issue 17): the embedded cluster counted GPUs by importing torch (about 3 s) even
for ingest, which never uses a GPU. Ingest now asks for no GPU workers, and `visible_gpu_count`
returns 0 without importing torch on a Linux machine with no NVIDIA device node. The rest is the
interpreter and imports (about 0.8 s) and the LocalCluster's start and stop (about 1.2 s); a
one-file ingest still goes through a real Dask worker, so a crash in a native decoder stays a
`WORKER_LOST` row instead of killing the command. Baseline: commit 11a81f1, the tree before the
restructure (`git worktree add /tmp/base 11a81f1`, then `python -m bench.bench_startup
--baseline /tmp/base`, or `SCREENING_BENCH_BASELINE=/tmp/base make bench`)."""


def bench_startup(runs: int, baseline: Path | None = None) -> tuple[dict[str, list[float]], str]:
    """Wall seconds per run for this checkout (and ``baseline``), and what the input was."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image, what = _input(work)
        repos = {"this checkout": ROOT}
        if baseline is not None:
            repos["baseline"] = Path(baseline).resolve()
        for repo in repos.values():  # warm the page cache and bytecode once, untimed
            _one_run(repo, image, work / "store")
        times: dict[str, list[float]] = {name: [] for name in repos}
        for _ in range(runs):
            for name, repo in repos.items():
                times[name].append(_one_run(repo, image, work / "store"))
    return times, what


def startup_markdown(times: dict[str, list[float]], what: str) -> str:
    lines = [
        "# Start-up: a one-file `screening ingest` (`bench/bench_startup.py`)",
        "",
        f"`screening ingest ONE.nii.gz --store S`, whole process, fresh store each run; input: "
        f"{what}. Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {git_state()}. "
        "Runs interleaved.",
        "",
        "| code | runs | median s | min – max s |",
        "|---|---|---|---|",
        *(_row(name, t) for name, t in times.items()),
    ]
    if "baseline" in times:
        ratio = statistics.median(times["baseline"]) / statistics.median(times["this checkout"])
        lines += ["", f"Baseline / this checkout (medians): **{ratio:.2f}×**."]
    return "\n".join([*lines, "", NOTE]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", type=Path, help="checkout of the commit to compare with")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    times, what = bench_startup(args.runs, args.baseline)
    emit(startup_markdown(times, what), times, args.out, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
