"""``python -m bench [--quick] [--out BENCHMARKS.md]``: run all benchmarks, print, write markdown.

The targets are for one core, so thread pools are pinned to one thread before numpy loads.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from bench.bench_synthetic import Result, bench_cohort, bench_phantom  # noqa: E402
from bench.common import cpu_model, git_state  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"

# Repeats per case (after one warm-up and one untimed tracemalloc run).
REPEATS = {"full": 5, "small": 21, "full_baseline": 3, "cohort": 3}
QUICK_REPEATS = {"full": 1, "small": 3, "full_baseline": 1, "cohort": 1}

NOTE = """\
**Baseline.** The renderer (`screening/synthetic/render.py`) labels, looks up HU, adds noise,
blurs and rounds the volume in z-slabs of about `_SLAB_VOXELS` = 2 M voxels, so each numpy pass
works on a few MB that stay in cache. The optimisation being measured is that slabbing; the
baseline is the *same* renderer with slabbing disabled (`_SLAB_VOXELS` set above the volume
size, i.e. whole-volume numpy passes that stream hundreds of MB through memory on every pass
and thrash the cache), timed in the same process and run. The cohort writer has no baseline: it
is timed for context only (seconds per scan, including DICOM/NIfTI writing)."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = cpu_model()
    mem_kib = next(
        (
            int(ln.split()[1])
            for ln in _read("/proc/meminfo").splitlines()
            if ln.startswith("MemTotal:")
        ),
        None,
    )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "ram_gib": None if mem_kib is None else round(mem_kib / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threads_env": {
            v: os.environ.get(v)
            for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
        "torch_loaded": "torch" in sys.modules,
        "git": git_state(),
    }


def run_all(quick: bool, log: bool = True) -> list[Result]:
    """Every benchmark, in order: small, full, full baseline, cohort."""
    reps = QUICK_REPEATS if quick else REPEATS
    warmup = 0 if quick else 1  # quick: the untimed memory run is the only warm-up
    steps = [
        ("small phantom", lambda: bench_phantom("small", repeats=reps["small"], warmup=warmup)),
        ("full phantom", lambda: bench_phantom("full", repeats=reps["full"], warmup=warmup)),
        (
            "full phantom, baseline",
            lambda: bench_phantom(
                "full", repeats=reps["full_baseline"], warmup=warmup, baseline=True
            ),
        ),
        (
            "cohort",
            lambda: bench_cohort(n=2 if quick else 8, repeats=reps["cohort"], warmup=warmup),
        ),
    ]
    results = []
    for label, step in steps:
        if log:
            print(f"running: {label} ...", file=sys.stderr, flush=True)
        results.append(step())
    return results


def ratios(results: list[Result], stat: str = "median") -> dict[str, float]:
    """baseline / optimised (``stat``: median or min) for every case that has a baseline."""
    by_name = {r.name: r for r in results}
    return {
        r.baseline_of: getattr(r, stat) / getattr(by_name[r.baseline_of], stat)
        for r in results
        if r.baseline_of in by_name
    }


def _fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def _met(r: Result) -> str:
    if r.target_s is None:
        return "—"
    return f"< {r.target_s:g} s: {'yes' if r.target_met else '**no**'}"


def _row(r: Result) -> list[str]:
    peak = "—" if r.peak_mib is None else f"{r.peak_mib:.0f}"
    return [
        r.description,
        str(len(r.wall_s)),
        _fmt_s(r.median),
        _fmt_s(r.min),
        _fmt_s(r.iqr),
        f"{r.cpu_per_wall:.2f}",
        f"{100 * r.sys_share:.0f}",
        peak,
        _met(r),
    ]


HEADER = ["case", "n", "median", "min", "IQR", "CPU/wall", "sys %", "peak MiB", "target (median)"]


def _md_table(rows: list[list[str]], unit: str) -> str:
    head = [h if h not in ("median", "min", "IQR") else f"{h} ({unit})" for h in HEADER]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(results: list[Result]) -> str:
    rows = [HEADER] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    mins = ratios(results, "min")
    lines += [
        f"ratio {name}: baseline / slabbed = {x:.2f}× (medians), {mins[name]:.2f}× (minima)"
        for name, x in ratios(results).items()
    ]
    return "\n".join(lines)


def markdown(results: list[Result], machine: dict[str, Any], quick: bool) -> str:
    phantom = [r for r in results if r.name.startswith("phantom_")]
    cohort = [r for r in results if r.name.startswith("cohort_")]
    threads = ", ".join(f"{k}={v}" for k, v in machine["threads_env"].items())
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/__main__.py`); regenerate rather than edit by hand "
        "(the note below lives in that file)."
        + ("\n\n**Quick run (`--quick`): too few repeats to quote.**" if quick else ""),
        "",
        NOTE,
        "",
        "## How to run",
        "",
        "```",
        "make bench                          # = .venv/bin/python -m bench; writes this file",
        ".venv/bin/python -m bench --quick   # smoke test, 1-3 repeats; writes bench/out/ only",
        "```",
        "",
        "Raw timings: `bench/out/results.json` (git-ignored).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| date | {machine['date']} |",
        f"| CPU | {machine['cpu']} |",
        f"| cores | {machine['cores']} ({machine['cores_usable']} usable by this process) |",
        f"| RAM | {machine['ram_gib']} GiB |",
        f"| OS | {machine['os']} |",
        f"| Python / numpy / scipy | {machine['python']} / {machine['numpy']} / "
        f"{machine['scipy']} |",
        f"| threads | {threads}; torch not imported |"
        if not machine["torch_loaded"]
        else f"| threads | {threads}; torch.set_num_threads(1) |",
        f"| commit | {machine['git']} |",
        "",
        "## Synthetic phantom: `make_phantom(PhantomSpec(), ScanGeometry.preset(size), seed=0)`",
        "",
        _md_table([_row(r) for r in phantom], "s"),
        "",
    ]
    mins = ratios(results, "min")
    for name, x in ratios(results).items():
        out.append(
            f"**Slabbing speed-up ({name}): baseline median / slabbed median = "
            f"{x:.2f}×** (ratio of minima: {mins[name]:.2f}×)."
        )
        out.append("")
    out += [
        '## Cohort writer: `generate_cohort(tmp, n, seed=0, size="small", overwrite=True)`',
        "",
        _md_table([_row(r) for r in cohort], "s/scan"),
        "",
        "Context only, no baseline and no target: per-scan time includes rendering, DICOM/NIfTI "
        "writing (masks included) and the CSVs. Cohort scans draw their own slice spacing, so "
        "their slice counts differ from the `small` preset.",
        "",
        "## Method",
        "",
        "- One core: thread pools pinned via the environment variables above before numpy is "
        "imported. CPU/wall is process CPU time over wall time (≈ 1 means one busy core); "
        "sys % is the kernel's share of that CPU time (mostly page faults on freshly allocated "
        "buffers).",
        "- Per case: one untimed run under `tracemalloc` (peak MiB: numpy buffers, which numpy "
        "reports to tracemalloc; scipy's C scratch is not counted), one warm-up (none with "
        "`--quick`), then the timed repeats (`n`) with `time.perf_counter`. Median, min and "
        "IQR (inclusive quartiles) of the repeats.",
        "- The machine is shared and noisy, so read the median together with the IQR; the "
        "min is the least disturbed run. Targets (full < 5 s, small < 0.5 s, one core) are "
        "judged on the median.",
        "",
    ]
    return "\n".join(out)


def _demote(markdown_text: str) -> str:
    """Nest a benchmark's own report under this file's top-level heading."""
    return "\n".join("#" + ln if ln.startswith("#") else ln for ln in markdown_text.splitlines())


def run_stage_benchmarks(quick: bool) -> list[str]:
    """The stage benchmarks with their own reports: ingest, store codecs, segmentation,
    measurement, real CT, the distributed run, statistics."""
    from bench.bench_decoders import run as bench_decoders
    from bench.bench_decoders import to_markdown as decoders_markdown
    from bench.bench_ingest import bench_ingest
    from bench.bench_ingest import to_markdown as ingest_markdown
    from bench.bench_measure import bench_measure
    from bench.bench_measure import to_markdown as measure_markdown
    from bench.bench_measure_accuracy import accuracy_markdown, bench_measure_accuracy
    from bench.bench_monai import run as bench_monai
    from bench.bench_monai import to_markdown as monai_markdown
    from bench.bench_peers import run as bench_peers
    from bench.bench_peers import to_markdown as peers_markdown
    from bench.bench_realct import REAL
    from bench.bench_realct import markdown as realct_markdown
    from bench.bench_realct import run as bench_realct
    from bench.bench_run import bench_run
    from bench.bench_run import to_markdown as run_markdown
    from bench.bench_scale import bench_scale
    from bench.bench_segmentation import bench_segmentation
    from bench.bench_segmentation import to_markdown as segmentation_markdown
    from bench.bench_split import markdown as split_markdown
    from bench.bench_split import run as bench_split
    from bench.bench_startup import bench_startup, startup_markdown
    from bench.bench_stats import markdown as stats_markdown
    from bench.bench_stats import run as bench_stats
    from bench.bench_store_codecs import bench_store_codecs, codecs_markdown
    from bench.bench_throughput import run as bench_throughput
    from bench.bench_throughput import to_markdown as throughput_markdown

    print("running: ingest ...", file=sys.stderr, flush=True)
    ingest = bench_ingest(quick)
    print("running: start-up (one-file ingest) ...", file=sys.stderr, flush=True)
    baseline = os.environ.get("SCREENING_BENCH_BASELINE")
    startup = bench_startup(2 if quick else 7, Path(baseline) if baseline else None)
    print("running: decoders (pylibjpeg vs GDCM) ...", file=sys.stderr, flush=True)
    decoders = bench_decoders(1 if quick else 7, 16)
    print("running: ingest side by side with dcm2niix ...", file=sys.stderr, flush=True)
    peers = bench_peers(8 if quick else 20, 48, 1 if quick else 3)
    print("running: store codecs ...", file=sys.stderr, flush=True)
    codecs = bench_store_codecs(quick=quick)
    print("running: segmentation (preprocess, U-Net, demo accuracy) ...", file=sys.stderr)
    segmentation = bench_segmentation(quick)
    print("running: measurement (measure_volume, overlay, baseline) ...", file=sys.stderr)
    measurement = bench_measure(quick)
    print("running: measurement accuracy (held-out cohort vs truth) ...", file=sys.stderr)
    accuracy = bench_measure_accuracy(n=12 if quick else 40, contrast_n=4 if quick else 20)
    realct = None
    if REAL.is_dir():
        print("running: real CT (shipped models vs reference masks) ...", file=sys.stderr)
        realct = bench_realct(repeats=1 if quick else 3, threads=2)
    print("running: segmentation side by side with MONAI's pipeline ...", file=sys.stderr)
    monai = bench_monai(1 if quick else 2, 1 if quick else 3, 2)
    print("running: distributed run (scaling, overhead, memory, scans/hour) ...", file=sys.stderr)
    distributed_run = bench_run(quick)
    print("running: scale simulation (1,000 and 100,000 scans) ...", file=sys.stderr, flush=True)
    scale = bench_scale("1000" if quick else "1000,100000", workers=2)
    print("running: cohort throughput (real-CT model, 1 and 2 workers) ...", file=sys.stderr)
    throughput = bench_throughput(2 if quick else 4, 1 if quick else 2)
    print("running: CPU and GPU workers (real-CT model, one scan's steps) ...", file=sys.stderr)
    split = bench_split("cpu", 1 if quick else 3, 1)
    print("running: statistics (vectorised bootstrap vs sklearn loop) ...", file=sys.stderr)
    stats = bench_stats(2 if quick else 5)
    return [
        _demote(ingest_markdown(ingest, cpu=cpu_model(), quick=quick, git=git_state())),
        _demote(startup_markdown(*startup)),
        _demote(decoders_markdown(decoders)),
        _demote(peers_markdown(peers)),
        _demote(codecs_markdown(codecs)),
        _demote(segmentation_markdown(segmentation, cpu_model(), quick)),
        _demote(measure_markdown(measurement, cpu_model(), git_state())),
        _demote(accuracy_markdown(accuracy, f"{cpu_model()}, {os.cpu_count()} logical CPUs")),
        _demote(realct_markdown(realct, cpu_model()))
        if realct
        else "## Real CT\n\nNot measured: ../shared/data/real is absent on this machine.",
        _demote(monai_markdown(monai)),
        _demote(run_markdown(distributed_run, cpu_model(), git_state())),
        _demote(throughput_markdown(throughput)),
        _demote(split_markdown(split, cpu_model())),
        _demote(scale),
        _demote(stats_markdown(stats)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few repeats (smoke test); default output under bench/out/",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="markdown to write (default: BENCHMARKS.md at the repository root; "
        "bench/out/BENCHMARKS-quick.md with --quick)",
    )
    args = parser.parse_args(argv)
    if "torch" in sys.modules:  # not needed here, but keep it to one core if something loads it
        sys.modules["torch"].set_num_threads(1)
    default_md = OUT_DIR / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md"
    md_path = args.out or default_md
    json_path = OUT_DIR / ("results-quick.json" if args.quick else "results.json")

    machine = machine_info()
    results = run_all(args.quick)
    print(text_table(results))
    extra_sections = run_stage_benchmarks(args.quick)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "quick": args.quick,
        "machine": machine,
        "ratios": ratios(results),
        "ratios_of_minima": ratios(results, "min"),
        "results": [r.to_dict() for r in results],
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(
        markdown(results, machine, args.quick) + "\n" + "\n\n".join(extra_sections) + "\n"
    )
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
