"""Segmentation per scan side by side with MONAI's standard pipeline, same network and weights.

``python -m bench.bench_monai [--scans 2] [--rounds 3] [--threads 2] [--out FILE]``

The network is the demo model (MONAI's residual ``UNet``, weights and coarse sub-model shipped
in ``screening/model/weights/demo``; its grid 4 × 2.5 × 2.5 mm, window [-200, 250] HU, patch
32 × 96 × 96): the one model both pipelines run without translation. The real-CT model has a
fixed-size valid-convolution input (no same-size output for ``sliding_window_inference``) and
its own field-of-view handling, so MONAI's pipeline cannot express it; its cohort throughput is
in ``bench.bench_run``.

Scans: ``--scans`` full-size synthetic phantoms (300 × 512 × 512, 1.25 × 0.7 × 0.7 mm), each
written once, untimed, as an uncompressed NIfTI (MONAI's input: its best case, no gzip) and as
a scan store (ours). Per scan, end to end, one process, ``--threads`` torch threads:

* **MONAI**: ``LoadImaged → EnsureChannelFirstd → Orientationd("SPL") → Spacingd(4, 2.5, 2.5
  mm, bilinear, scale_extent) → ScaleIntensityRanged(-200, 250 → 0, 1, clip)``, then
  ``sliding_window_inference`` (the same patch, overlap 0.25, 4 windows a batch, gaussian
  blending as ours), softmax, ``Invertd`` (probabilities back to the native grid, bilinear),
  ``AsDiscreted(argmax)``, ``KeepLargestConnectedComponentd`` (liver, spleen) and
  ``SaveImaged`` (uint8 NIfTI). ``"SPL"`` orders the array (z, y, x) toward S, P, L: the
  network's training orientation, so the network sees what it was trained on.
* **ours**: ``segment_store`` (read ``ct`` from the store, preprocess, network, back to the
  native grid, largest components, write ``seg``), once with the cascade (the default: the
  coarse model finds the organs' box and the network runs only there) and once without (the
  like-for-like of MONAI's whole-volume window).

Each pipeline runs in its own child process (model loaded and one warm-up scan untimed), the
children interleaved over ``--rounds`` rounds; per scan: wall seconds and peak RSS (Linux
``VmHWM``, reset before each scan through ``/proc/self/clear_refs``). Masks: the Dice of each
of ours against MONAI's for liver and spleen (the same scans, the last round's outputs).
"""

from __future__ import annotations

import argparse
import contextlib
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

import numpy as np

from bench.common import ROOT, cpu_model, emit, git_state

PIPELINES = ("monai", "ours (cascade)", "ours (no cascade)")


def _write_inputs(work: Path, n_scans: int) -> list[str]:
    """``n_scans`` phantoms as ``work/nii/<id>.nii`` and ``work/stores/scans/<id>.zarr``."""
    from screening.ingest.nifti import read_nifti_ct
    from screening.store.scan import StoreConfig, write_scan_store
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
    from screening.synthetic.writers import write_nifti

    ids = []
    for i in range(n_scans):
        scan_id = f"scan{i:02d}"
        ph = make_phantom(PhantomSpec(), ScanGeometry.preset("full"), seed=300 + i)
        nii = write_nifti(ph.hu.astype(np.int16), ph, work / "nii" / f"{scan_id}.nii")
        volume = read_nifti_ct(str(nii), 10**9)
        write_scan_store(work / "stores", scan_id, volume, {}, StoreConfig())
        ids.append(scan_id)
    return ids


def _peak_reset() -> None:
    with contextlib.suppress(OSError):  # not Linux: the peak then spans the process
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _monai_segmenter(threads: int, device: str) -> Any:
    """A per-scan function running MONAI's standard pipeline with the demo network."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        KeepLargestConnectedComponentd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    from screening.model.checkpoint import DEMO_MODEL_DIR, load_model

    torch.set_num_threads(threads)
    model = load_model(DEMO_MODEL_DIR, device=device)
    (lo, hi), spacing = model.preprocess_cfg.window_hu, model.preprocess_cfg.spacing_mm
    roi = tuple(int(r) for r in model.card["inference"]["roi_size_zyx"])
    pre = Compose(
        [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="SPL"),
            Spacingd(keys="image", pixdim=spacing, mode="bilinear", scale_extent=True),
            ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
        ]
    )

    post = Compose(
        [
            Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False),
            AsDiscreted(keys="pred", argmax=True),
            KeepLargestConnectedComponentd(keys="pred", applied_labels=[1, 2]),
        ]
    )

    def segment(nii: Path, out_dir: Path) -> dict[str, float]:
        t0 = time.perf_counter()
        data = pre({"image": str(nii)})
        t1 = time.perf_counter()
        with torch.no_grad():
            logits = sliding_window_inference(
                data["image"][None].to(device),
                roi_size=roi,
                sw_batch_size=4,
                predictor=model.network,
                overlap=0.25,
                mode="gaussian",
            )
        assert isinstance(logits, torch.Tensor)
        data["pred"] = torch.softmax(logits, dim=1)[0].cpu()
        t2 = time.perf_counter()
        data = post(data)
        t3 = time.perf_counter()
        SaveImaged(
            keys="pred",
            output_dir=str(out_dir),
            output_postfix="seg",
            output_dtype=np.uint8,
            separate_folder=False,
            print_log=False,
        )(data)
        t4 = time.perf_counter()
        return {
            "load + preprocess": t1 - t0,
            "network": t2 - t1,
            "invert + post-process": t3 - t2,
            "save": t4 - t3,
        }

    return segment


def _ours_segmenter(threads: int, cascade: bool, device: str) -> Any:
    from screening.model.backends import load_backend
    from screening.model.checkpoint import DEMO_MODEL_DIR
    from screening.model.inference import InferenceConfig
    from screening.model.segment import segment_store

    backend = load_backend(
        str(DEMO_MODEL_DIR), device=device, inference=InferenceConfig(cascade=cascade)
    )

    def segment(store: Path, out_dir: Path) -> dict[str, float]:
        sec = segment_store(store, backend, device=device, threads=threads)["seconds"]
        return {
            "load + preprocess": sec["read_s"] + sec.get("preprocess_s", 0.0),
            "network": sec.get("cascade_s", 0.0) + sec["inference_s"],
            "invert + post-process": sec["postprocess_s"],
            "save": sec["write_s"],
        }

    return segment


def child(
    pipeline: str, work: Path, ids: list[str], threads: int, out_dir: Path, device: str
) -> None:
    """Segment every scan (the first also as an untimed warm-up); print one JSON line."""
    _peak_reset()
    ours = pipeline.startswith("ours")
    if ours:
        segment = _ours_segmenter(threads, "no cascade" not in pipeline, device)
    else:
        segment = _monai_segmenter(threads, device)
    loaded_mib = _peak_mib()
    seconds, peaks = [], []
    phases: dict[str, list[float]] = {}
    for i, scan_id in enumerate([ids[0], *ids]):
        if ours:  # a fresh copy of the pristine store: no seg to reuse
            target = out_dir / f"{scan_id}.zarr"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(work / "stores" / "scans" / f"{scan_id}.zarr", target)
        else:
            target = work / "nii" / f"{scan_id}.nii"
        _peak_reset()
        t0 = time.perf_counter()
        phase = segment(target, out_dir)
        if i:  # scan 0 is the warm-up
            seconds.append(time.perf_counter() - t0)
            peaks.append(_peak_mib())
            for k, v in phase.items():
                phases.setdefault(k, []).append(v)
    rec = {"seconds": seconds, "peak_mib": peaks, "loaded_mib": loaded_mib, "phases": phases}
    print(json.dumps(rec))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _compare(outs: dict[str, Path], ids: list[str]) -> dict[str, dict[str, float]]:
    """Dice of each of ours against MONAI's masks, per organ, the worst scan."""
    from screening.ingest.nifti import read_nifti_labels
    from screening.store.scan import open_scan_store

    dice: dict[str, dict[str, float]] = {}
    for name in PIPELINES[1:]:
        worst = {"liver": 1.0, "spleen": 1.0}
        for scan_id in ids:
            ours = open_scan_store(outs[name] / f"{scan_id}.zarr").read("seg")
            theirs = outs["monai"] / f"{scan_id}_seg.nii.gz"
            for label, organ in ((1, "liver"), (2, "spleen")):
                mask, _ = read_nifti_labels(str(theirs), (label,), 10**9)
                worst[organ] = min(worst[organ], _dice(ours == label, mask))
        dice[name] = worst
    return dice


def run(n_scans: int, rounds: int, threads: int, device: str = "cpu") -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {
        p: {"seconds": [], "peak_mib": [], "loaded_mib": [], "phases": {}} for p in PIPELINES
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        ids = _write_inputs(work, n_scans)
        setup_s = time.perf_counter() - t0
        outs = {p: work / f"out-{i}" for i, p in enumerate(PIPELINES)}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
        for r in range(rounds):
            order = PIPELINES if r % 2 == 0 else PIPELINES[::-1]
            for p in order:
                shutil.rmtree(outs[p], ignore_errors=True)
                outs[p].mkdir()
                cmd = [sys.executable, "-m", "bench.bench_monai", "--child", p, "--work"]
                cmd += [str(work), "--ids", ",".join(ids), "--threads", str(threads)]
                cmd += ["--child-out", str(outs[p]), "--device", device]
                proc = subprocess.run(
                    cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env
                )
                rec = json.loads(proc.stdout.strip().splitlines()[-1])
                results[p]["seconds"] += rec["seconds"]
                results[p]["peak_mib"] += rec["peak_mib"]
                results[p]["loaded_mib"].append(rec["loaded_mib"])
                for k, v in rec["phases"].items():
                    results[p]["phases"].setdefault(k, []).extend(v)
        dice = _compare(outs, ids)
    return {
        "results": results,
        "dice": dice,
        "scans": n_scans,
        "rounds": rounds,
        "threads": threads,
        "device": device,
        "setup_s": setup_s,
    }


def to_markdown(res: dict[str, Any]) -> str:
    import monai
    import torch

    results = res["results"]
    monai_s = statistics.median(results["monai"]["seconds"])
    lines = [
        "# Side by side: segmentation against MONAI's pipeline (`bench/bench_monai.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {git_state()}; torch "
        f"{torch.__version__}, MONAI {monai.__version__}; device {res.get('device', 'cpu')}, "
        f"{res['threads']} torch CPU threads. {res['scans']} full-size synthetic scans "
        f"(300 × 512 × 512, 1.25 × 0.7 × 0.7 mm) × {res['rounds']} rounds, each pipeline in "
        "its own process (model load and one warm-up scan untimed), interleaved. Demo model "
        "(MONAI `UNet`, 4 × 2.5 × 2.5 mm grid). Seconds and peak RSS per scan: median "
        "(min – max); RSS after loading the model, before any scan, beside it.",
        "",
        "| pipeline | scans timed | s/scan | speed vs MONAI | peak RSS MiB/scan | RSS after "
        "load MiB | liver Dice vs MONAI | spleen Dice vs MONAI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in PIPELINES:
        s, m = results[p]["seconds"], results[p]["peak_mib"]
        med = statistics.median(s)
        d = res["dice"].get(p)
        lines.append(
            f"| {p} | {len(s)} | {med:.2f} ({min(s):.2f} – {max(s):.2f}) "
            f"| {monai_s / med:.2f}× | {statistics.median(m):.0f} ({min(m):.0f} – {max(m):.0f}) "
            f"| {statistics.median(results[p]['loaded_mib']):.0f} "
            f"| {'—' if d is None else format(d['liver'], '.4f')} "
            f"| {'—' if d is None else format(d['spleen'], '.4f')} |"
        )
    phase_names = list(results["monai"]["phases"])
    lines += [
        "",
        "Where the time goes (median seconds per scan; ours' network includes the cascade's "
        "coarse pass):",
        "",
        "| pipeline | " + " | ".join(phase_names) + " |",
        "|---|" + "---:|" * len(phase_names),
    ]
    for p in PIPELINES:
        ph = results[p]["phases"]
        cells = [f"{statistics.median(ph[k]):.2f}" for k in phase_names]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Dice: the worst scan's, ours against MONAI's mask of the same scan. Ours reads the "
        "scan store (blosc-compressed zarr) and writes `seg` into it; MONAI reads an "
        "uncompressed NIfTI and writes a gzip NIfTI.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scans", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        ids = args.ids.split(",")
        child(args.child, args.work, ids, args.threads, args.child_out, args.device)
        return 0
    res = run(args.scans, args.rounds, args.threads, args.device)
    emit(to_markdown(res), res, args.out, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
