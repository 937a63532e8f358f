"""GPU segmentation at the paper's grid: precision, memory layout and window batch size, and how
many CPU workers one GPU needs.

``python -m bench.bench_gpu [--device cuda] [--repeats N] [--out PATH] [--json PATH]``

One full-size phantom (``bench_segmentation.full_volume``: 300 x 512 x 512 at 1.25 x 0.7 x
0.7 mm). The scan is preprocessed once to the paper's grid (2.5 x 0.7 x 0.7 mm, window
[-200, 250] HU), then the paper-grid network (the default ``NetworkConfig``, 16-32-64-128
channels, 2 residual units; untrained weights: timing only) runs through
``predict_probabilities`` for every combination of precision (float32 / bf16 autocast),
layout (contiguous / channels-last) and sliding-window batch (1, 2, 4, 8, 16, 32). Per case:
the median seconds of ``--repeats`` runs after a warm-up (spread = max - min), windows per
second, and the peak GPU memory (``torch.cuda.max_memory_allocated``).

**CPU workers per GPU.** A GPU worker only segments; preprocess and measure run on CPU workers.
The CPU seconds per scan of preprocessing (1 torch thread, as one CPU worker thread runs it)
and of measuring (``measure_volume`` on the phantom's true labels) divided by the fastest GPU
seconds per scan is the number of single-threaded CPU workers that keep one GPU busy.

Without CUDA it says so and exits 0 (``--device cpu --quick`` runs a 40-slice slab with batches
1 and 2 on the CPU, to check the script).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 2, 4, 8, 16, 32)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(
    device: str, repeats: int, batches: tuple[int, ...] = BATCHES, slices: int | None = None
) -> dict[str, Any]:
    import torch

    from bench.bench_segmentation import _paper_grid_model, full_volume
    from screening.measure import MeasureConfig
    from screening.measure.volume import measure_volume
    from screening.model.inference import InferenceConfig, predict_probabilities
    from screening.preprocess import PreprocessConfig, preprocess_volume
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom

    ct, spacing = full_volume()
    labels = make_phantom(PhantomSpec(), ScanGeometry.preset("full"), seed=0).labels
    if slices is not None:  # --quick: a slab, to check the script
        ct, labels = ct[:slices], labels[:slices]
    t0 = time.perf_counter()
    prep = preprocess_volume(ct, spacing, PreprocessConfig(), threads=1)
    preprocess_cpu_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    measure_volume(ct, labels, spacing, MeasureConfig())
    measure_cpu_s = time.perf_counter() - t0

    model = _paper_grid_model(device)
    x = np.asarray(prep, dtype=np.float32)
    roi = tuple(model.card["inference"]["roi_size_zyx"])

    def predict(volume: np.ndarray, cfg: InferenceConfig) -> Any:
        return predict_probabilities(model.network, volume, roi, cfg, device)

    rows = []
    for bf16 in (False, True):
        for channels_last in (False, True):
            for batch in batches:
                cfg = InferenceConfig(sw_batch_size=batch, bf16=bf16, channels_last=channels_last)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                try:
                    predict(x, cfg)  # warm-up
                    _sync(device)
                    times = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        predict(x, cfg)
                        _sync(device)
                        times.append(time.perf_counter() - t0)
                except torch.OutOfMemoryError:
                    rows.append({"bf16": bf16, "channels_last": channels_last, "batch": batch,
                                 "error": "out of memory"})  # fmt: skip
                    continue
                peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
                rows.append(
                    {
                        "bf16": bf16,
                        "channels_last": channels_last,
                        "batch": batch,
                        "median_s": statistics.median(times),
                        "spread_s": max(times) - min(times),
                        "peak_gib": peak / 2**30,
                    }
                )
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    best = min((r for r in rows if "median_s" in r), key=lambda r: r["median_s"])
    cpu_s = preprocess_cpu_s + measure_cpu_s
    return {
        "device": device,
        "gpu_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "input_shape": list(ct.shape),
        "model_grid_shape": list(x.shape),
        "repeats": repeats,
        "rows": rows,
        "best": best,
        "preprocess_cpu_s": preprocess_cpu_s,
        "measure_cpu_s": measure_cpu_s,
        "cpu_workers_per_gpu": cpu_s / best["median_s"],
    }


def markdown(res: dict[str, Any]) -> str:
    out = [
        "## GPU: paper-grid segmentation, precision x layout x window batch (`bench/bench_gpu.py`)",
        "",
        f"Device {res['gpu_name']} (torch {res['torch']}); one full-size phantom "
        f"{res['input_shape']} → model grid {res['model_grid_shape']} (2.5 × 0.7 × 0.7 mm); "
        f"untrained paper-grid network; median of {res['repeats']} run(s) after a warm-up.",
        "",
        "| precision | layout | batch | s/scan (spread) | peak GiB |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        precision = "bf16" if r["bf16"] else "fp32"
        layout = "channels-last" if r["channels_last"] else "contiguous"
        if "error" in r:
            out.append(f"| {precision} | {layout} | {r['batch']} | {r['error']} | — |")
            continue
        out.append(
            f"| {precision} | {layout} | {r['batch']} | {r['median_s']:.3f} "
            f"({r['spread_s']:.3f}) | {r['peak_gib']:.1f} |"
        )
    b = res["best"]
    out += [
        "",
        f"Fastest: {'bf16' if b['bf16'] else 'fp32'}, "
        f"{'channels-last' if b['channels_last'] else 'contiguous'}, batch {b['batch']}: "
        f"{b['median_s']:.3f} s/scan. CPU per scan: preprocess {res['preprocess_cpu_s']:.1f} s "
        f"+ measure {res['measure_cpu_s']:.2f} s (1 thread) → about "
        f"{res['cpu_workers_per_gpu']:.1f} single-threaded CPU workers keep one GPU busy.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="also write the markdown here")
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--quick", action="store_true", help="40 slices, batches 1-2: a script check")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run bench/gpu.sh on a GPU machine)")
        return 0
    batches = (1, 2) if args.quick else BATCHES
    res = run(args.device, args.repeats, batches, 40 if args.quick else None)
    md = markdown(res)
    print(md)
    if args.out:
        args.out.write_text(md + "\n")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
