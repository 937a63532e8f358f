"""Where a scan's seconds go between CPU and GPU workers with the default real-CT model.

``python -m bench.bench_split [--device cpu|cuda] [--repeats N] [--threads N] [--out PATH]
[--json PATH]``

With GPU workers a scan is three tasks: a CPU task writes ``prep``, the GPU task runs the
network and writes ``seg``, a CPU task measures. For ``liver3mm`` the CPU task's ``prep`` is
the model's own preprocessing (1.5 mm, 3 × 3 × 3 median, 3 mm: ``Liver3mmPrep``); before
2026-12-05 the GPU task did that itself. One full-size phantom (300 × 512 × 512 at 1.25 × 0.7
× 0.7 mm, ``bench_segmentation.full_volume``), timed step by step (median of ``--repeats``
runs after a warm-up, spread = max − min):

- ``prepare``: ``Liver3mmPrep.prepare`` (the CPU task's work), ``--threads`` torch threads;
- the GPU task with that ``prep``: its CPU-side steps (the scan circle check, the float
  conversion, post-processing onto the native grid and the largest component) and the network
  (``inference_s``: body box, windows and the network, on ``--device``);
- ``measure``: ``measure_volume`` on the resulting mask.

From these: the most scans per hour one GPU worker can do (3600 ÷ its seconds per scan, with
and without the ``prep`` hand-over), and the CPU workers that keep it busy ((prepare +
measure) ÷ GPU-task seconds). On ``--device cpu`` the network time is the CPU's, so only the
CPU-side figures and the bound they set apply to a GPU; ``bench/gpu.sh`` runs it on CUDA.
Store reads and writes (the same with or without the hand-over) are not in these figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def run(device: str, repeats: int, threads: int) -> dict[str, Any]:
    import torch

    from bench.bench_segmentation import full_volume
    from screening.measure import MeasureConfig
    from screening.measure.volume import measure_volume
    from screening.model.liver3mm.inference import Liver3mmConfig, segment_liver_3mm
    from screening.model.liver3mm.model import load_liver3mm

    torch.set_num_threads(threads)
    ct, spacing = full_volume()
    network = load_liver3mm(device=device).network.to(device)
    cfg = Liver3mmConfig()
    spec = cfg.prep_spec()
    steps: dict[str, list[float]] = {}
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        prep = spec.prepare(ct, spacing, threads=threads)
        t1 = time.perf_counter()
        res = segment_liver_3mm(network, ct, spacing, cfg, device=device, prep=prep)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        labels = res.liver.astype(np.uint8)
        measure_volume(ct, labels, spacing, MeasureConfig())
        t3 = time.perf_counter()
        if i == 0:  # warm-up
            continue
        gpu_task_cpu = res.seconds["preprocess_s"] + res.seconds["postprocess_s"]
        for name, value in (
            ("prepare_s", t1 - t0),
            ("gpu_task_s", t2 - t1),
            ("gpu_task_cpu_side_s", gpu_task_cpu),
            ("gpu_task_network_s", res.seconds["inference_s"]),
            ("measure_s", t3 - t2),
        ):
            steps.setdefault(name, []).append(value)
    med = {k: statistics.median(v) for k, v in steps.items()}
    return {
        "device": device,
        "threads": threads,
        "repeats": repeats,
        "shape": list(ct.shape),
        "steps": {k: {"median_s": med[k], "spread_s": max(v) - min(v)} for k, v in steps.items()},
        "gpu_worker_scans_per_hour": 3600.0 / med["gpu_task_s"],
        "gpu_worker_scans_per_hour_without_prep": 3600.0 / (med["gpu_task_s"] + med["prepare_s"]),
        "cpu_side_bound_scans_per_hour": 3600.0 / med["gpu_task_cpu_side_s"],
        "cpu_side_bound_without_prep": 3600.0 / (med["gpu_task_cpu_side_s"] + med["prepare_s"]),
        "cpu_workers_per_gpu": (med["prepare_s"] + med["measure_s"]) / med["gpu_task_s"],
    }


def markdown(res: dict[str, Any], cpu: str = "") -> str:
    s = res["steps"]
    rows = [
        ("CPU task: `prepare` (1.5 mm, median, 3 mm → `prep`)", "prepare_s"),
        ("GPU task, whole (with `prep`)", "gpu_task_s"),
        (
            "  of it, CPU side (scan circle, post-processing to the native grid)",
            "gpu_task_cpu_side_s",
        ),
        ("  of it, network (body box, windows, network)", "gpu_task_network_s"),
        ("CPU task: `measure_volume`", "measure_s"),
    ]
    out = [
        "## CPU and GPU workers: one scan's steps with the default model (`bench/bench_split.py`)",
        "",
        f"Machine: {cpu}; device {res['device']}, {res['threads']} torch thread(s); one "
        f"full-size phantom {' × '.join(map(str, res['shape']))}; median of {res['repeats']} "
        "runs after a warm-up (spread = max − min); store I/O not included.",
        "",
        "| step | s (spread) |",
        "|---|---|",
        *(f"| {label} | {s[k]['median_s']:.2f} ({s[k]['spread_s']:.2f}) |" for label, k in rows),
        "",
        f"- The GPU task's CPU side alone caps one GPU worker at "
        f"**{res['cpu_side_bound_scans_per_hour']:.0f} scans/hour** however fast the GPU; "
        "with the model's preprocessing in the GPU task too (no `prep` hand-over) it would be "
        f"{res['cpu_side_bound_without_prep']:.0f}.",
        f"- On this device one GPU worker does {res['gpu_worker_scans_per_hour']:.0f} scans/hour "
        f"({res['gpu_worker_scans_per_hour_without_prep']:.0f} without the hand-over), and "
        f"{res['cpu_workers_per_gpu']:.1f} CPU workers of {res['threads']} thread(s) "
        "(prepare + measure) keep it busy.",
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
