"""Where a scan's seconds go between CPU and GPU workers with the default real-CT model.

``python -m bench.bench_split [--device cpu|cuda] [--repeats N] [--threads N] [--out PATH]
[--json PATH]``

With GPU workers a scan is three tasks: a CPU task writes ``prep``, the GPU task runs the
network and writes ``seg``, a CPU task measures. For ``liver3mm`` the CPU task's ``prep`` is
the model's own preprocessing (1.5 mm, 3 × 3 × 3 median, 3 mm: ``Liver3mmPrep``); before
2026-12-05 the GPU task did that itself. One full-size phantom scan store (300 × 512 × 512 at
1.25 × 0.7 × 0.7 mm), copied afresh for each run; the three task bodies are timed as the
workers run them, store reads and writes included, in a process with the Dask workers' glibc
settings (``ClusterConfig.malloc_threshold_mib``: CT-sized buffers are reused from the heap
rather than mapped and faulted in afresh, which moved ~0.3 s between tasks run in one plain
process) (median of ``--repeats`` runs after a warm-up, spread = max − min):

- ``write_prep`` (the CPU task), ``--threads`` torch threads;
- ``segment_store`` with that ``prep`` (the GPU task): its CPU side (reading ``prep``, which
  carries what the model needs of the CT, post-processing onto the native grid, writing ``seg``) and
  the network (``inference_s``: body box, windows and the network, on ``--device``);
- ``measure_store`` (the CPU task, no overlay).

From these: the most scans per hour one GPU worker can do (3600 ÷ its seconds per scan), the
cap its CPU side alone sets however fast the GPU, and the CPU workers that keep it busy
((prep + measure) ÷ GPU-task seconds). On ``--device cpu`` the network time is the CPU's, so
only the CPU-side figures and the cap apply to a GPU; ``bench/gpu.sh`` runs it on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run(device: str, repeats: int, threads: int) -> dict[str, Any]:
    """The timings, measured in a child process with the workers' environment unless this
    process has it already."""
    from screening.runtime.cluster import ClusterConfig, worker_environ

    env = {k: str(v) for k, v in worker_environ(ClusterConfig()).items()}
    if all(os.environ.get(k) == v for k, v in env.items()):
        return _run(device, repeats, threads)
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        out = Path(tmp) / "split.json"
        cmd = [sys.executable, "-m", "bench.bench_split", "--device", device]
        cmd += ["--repeats", str(repeats), "--threads", str(threads), "--json", str(out)]
        subprocess.run(cmd, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        res: dict[str, Any] = json.loads(out.read_text())
        return res


def _run(device: str, repeats: int, threads: int) -> dict[str, Any]:
    import torch

    from screening.measure import MeasureConfig
    from screening.measure.store import measure_store
    from screening.model.backends import load_backend
    from screening.model.segment import segment_store
    from screening.preprocess import write_prep
    from screening.store.scan import open_scan_store
    from screening.synthetic.stores import write_phantom_stores

    torch.set_num_threads(threads)
    backend = load_backend("liver3mm", device=device)
    spec = backend.preprocess_cfg
    assert spec is not None
    steps: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        write_phantom_stores(Path(tmp) / "pristine", 1, seed=0, size="full")
        pristine = next((Path(tmp) / "pristine" / "scans").glob("*.zarr"))
        shape = list(open_scan_store(pristine).read("ct").shape)
        for i in range(repeats + 1):
            work = Path(tmp) / f"run{i}" / pristine.name
            shutil.copytree(pristine, work)
            t0 = time.perf_counter()
            write_prep(work, spec, threads=threads)
            t1 = time.perf_counter()
            rec = segment_store(work, backend, device=device, threads=threads)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            measure_store(work, MeasureConfig())
            t3 = time.perf_counter()
            shutil.rmtree(work.parent)
            if i == 0:  # warm-up
                continue
            network = rec["seconds"]["inference_s"]
            for name, value in (
                ("prep_task_s", t1 - t0),
                ("gpu_task_s", t2 - t1),
                ("gpu_task_cpu_side_s", t2 - t1 - network),
                ("gpu_task_network_s", network),
                ("measure_task_s", t3 - t2),
            ):
                steps.setdefault(name, []).append(value)
    med = {k: statistics.median(v) for k, v in steps.items()}
    return {
        "device": device,
        "threads": threads,
        "repeats": repeats,
        "shape": shape,
        "steps": {k: {"median_s": med[k], "spread_s": max(v) - min(v)} for k, v in steps.items()},
        "gpu_worker_scans_per_hour": 3600.0 / med["gpu_task_s"],
        "cpu_side_cap_scans_per_hour": 3600.0 / med["gpu_task_cpu_side_s"],
        "cpu_side_cap_without_prep": 3600.0 / (med["gpu_task_cpu_side_s"] + med["prep_task_s"]),
        "cpu_workers_per_gpu": (med["prep_task_s"] + med["measure_task_s"]) / med["gpu_task_s"],
    }


def markdown(res: dict[str, Any], cpu: str = "") -> str:
    s = res["steps"]
    rows = [
        ("CPU task: `write_prep` (read `ct`; 1.5 mm, median, 3 mm; write `prep`)", "prep_task_s"),
        ("GPU task: `segment_store` with that `prep`", "gpu_task_s"),
        (
            "  of it, CPU side (read `prep`, post-processing, write `seg`)",
            "gpu_task_cpu_side_s",
        ),
        ("  of it, network (body box, windows, network)", "gpu_task_network_s"),
        ("CPU task: `measure_store` (no overlay)", "measure_task_s"),
    ]
    out = [
        "## CPU and GPU workers: one scan's tasks with the default model (`bench/bench_split.py`)",
        "",
        f"Machine: {cpu}; device {res['device']}, {res['threads']} torch thread(s); one "
        f"full-size phantom scan store ({' × '.join(map(str, res['shape']))}), a fresh copy per "
        f"run; median of {res['repeats']} runs after a warm-up (spread = max − min); store "
        "reads and writes included.",
        "",
        "| task | s (spread) |",
        "|---|---|",
        *(f"| {label} | {s[k]['median_s']:.2f} ({s[k]['spread_s']:.2f}) |" for label, k in rows),
        "",
        f"- The GPU task's CPU side alone caps one GPU worker at "
        f"**{res['cpu_side_cap_scans_per_hour']:.0f} scans/hour** however fast the GPU; "
        "with the model's preprocessing in the GPU task too (no `prep` hand-over) it would be "
        f"{res['cpu_side_cap_without_prep']:.0f}.",
        f"- On this device one GPU worker does {res['gpu_worker_scans_per_hour']:.0f} "
        f"scans/hour, and {res['cpu_workers_per_gpu']:.1f} CPU workers of {res['threads']} "
        "thread(s) (prep + measure) keep it busy.",
    ]
    if not res["device"].startswith("cuda"):
        out.append(
            "- Device cpu: the network ran on the CPU, so the last line is not a GPU figure; "
            "`bench/gpu.sh` runs this on CUDA."
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from bench.common import cpu_model, emit

    res = run(args.device, args.repeats, args.threads)
    emit(markdown(res, cpu_model()), res, args.out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
