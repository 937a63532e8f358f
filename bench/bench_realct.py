"""Real CT: every shipped model on every real scan with a reference mask.

``python -m bench.bench_realct [--out PATH] [--repeats N] [--threads N] [--device D]`` prints a
markdown
section (and writes it to PATH). Needs ``../shared/data/real`` (the project machines); says so
and stops without it.

Cases (``screening.model.real_cases``): the TotalSegmentator example (non-contrast
abdomen-pelvis CT, 3 mm; liver and spleen masks made by TotalSegmentator), the same scan with
its liver made fatty (27 HU lower inside the reference mask, ≈ 20 HU: a simulated steatotic
liver on real anatomy; 47 HU lower, ≈ 0 HU: severe), its top 32 slices (96 mm: the liver cut
below by the field of view, as in chest CT), its top 20 slices with the liver 37 HU lower (a
chest-CT field of view with a steatotic liver), its top 96 mm reconstructed in a 230 mm
scan circle centred on the body (padding outside, as LIDC-IDRI's tight chest reconstructions:
the circle cuts the body and the liver; the reference is the liver inside the circle), the
whole scan with seeded noise of SD 30 HU (about 140 HU at 0.7 × 0.7 × 2.5 mm: a sharp-kernel
low-dose chest CT) and of SD 50 HU (about 230 HU there: where liver3mm's stronger median,
``Liver3mmConfig.denoise_above_hu``, takes over) and LiTS 117 (portal-venous, a tight box
that cuts the liver; manual liver mask).

Models: ``liver3mm`` (the default, real-CT) and ``demo`` (the U-Net trained on synthetic
phantoms, with its cascade), plus any ``--model`` given (a model directory, a MONAI bundle, an
nnU-Net v2 folder such as TotalSegmentator's ``Dataset291…/nnUNetTrainerNoMirroring__
nnUNetPlans__3d_fullres``: none ships, nothing is downloaded), each through its backend's
``segment`` on the stored grid, in this process with ``--threads`` torch threads. Per model and
case: liver Dice, HD95 and volume error against the reference, the AI-3D / AI-2D / AI-ROI
values measured on the predicted mask minus the same measured on the reference mask
(``measure_volume``, 3 mm erosion for the eroded means), spleen Dice where the model has a
spleen, and seconds per scan (median of ``--repeats`` runs after one warm-up; the spread is max
- min).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
MODELS = ("liver3mm", "demo")


def _cases() -> list[Any]:
    from screening.model.real_cases import (
        RealCase,
        chest_reconstruction,
        load_lits117,
        load_totalsegmentator_example,
        with_noise,
    )

    ts = load_totalsegmentator_example(REAL)

    def variant(name: str, first_z: int, liver_shift_hu: int, note: str) -> RealCase:
        ct = ts.ct_hu[first_z:].copy()
        liver = np.ascontiguousarray(ts.liver[first_z:])
        ct[liver] += liver_shift_hu
        spleen = None if first_z else ts.spleen
        return RealCase(name, ct, ts.spacing_mm, liver, spleen, note)

    return [
        ts,
        variant("totalsegmentator-example, liver −27 HU", 0, -27, "simulated steatosis, ≈ 20 HU"),
        variant("totalsegmentator-example, liver −47 HU", 0, -47, "severe steatosis, ≈ 0 HU"),
        variant("totalsegmentator-example, top 96 mm only", 80, 0, "liver cut below, as chest CT"),
        variant(
            "totalsegmentator-example, top 60 mm, liver −37 HU",
            92,
            -37,
            "chest-CT field of view with a steatotic liver (≈ 10 HU)",
        ),
        chest_reconstruction(ts, 80, 230.0),
        # 30 HU on these 3 mm voxels is about 140 HU on 0.7 × 0.7 × 2.5 mm ones.
        with_noise(ts, 30.0),
        with_noise(ts, 50.0),
        load_lits117(REAL),
    ]


def _labels(liver: np.ndarray, spleen: np.ndarray | None) -> np.ndarray:
    out = liver.astype(np.uint8)
    if spleen is not None:
        out[spleen & ~liver] = 2
    return out


def _attenuation(ct: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...]) -> dict[str, Any]:
    from screening.measure import MeasureConfig
    from screening.measure.volume import measure_volume

    m = measure_volume(ct, labels, spacing, MeasureConfig())
    return {k: getattr(m, k) for k in ("liver_hu_3d", "liver_hu_2d", "liver_hu_roi")}


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def run(
    repeats: int, threads: int, device: str = "cpu", models: tuple[str, ...] = MODELS
) -> dict[str, Any]:
    import torch

    from screening.model.backends import load_backend
    from screening.model.inference import InferenceConfig
    from screening.stats.segmentation import segmentation_metrics

    torch.set_num_threads(threads)
    cases = _cases()
    rows: list[dict[str, Any]] = []
    for ref in models:
        backend = load_backend(ref, device=device, inference=InferenceConfig(cascade=True))
        name = ref if ref in MODELS else f"{backend.kind}:{Path(ref).name}"
        for case in cases:
            seconds: list[float] = []
            result = None
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                result = backend.segment(
                    case.ct_hu, case.spacing_mm, device=device, threads=threads
                )
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i:  # the first run is the warm-up
                    seconds.append(time.perf_counter() - t0)
            assert result is not None
            liver = result.labels == 1
            m = segmentation_metrics(liver, case.liver, case.spacing_mm)
            voxel_ml = float(np.prod(case.spacing_mm)) / 1000.0
            pred_ml, ref_ml = liver.sum() * voxel_ml, case.liver.sum() * voxel_ml
            ref_hu = _attenuation(case.ct_hu, _labels(case.liver, None), case.spacing_mm)
            got_hu = _attenuation(case.ct_hu, _labels(liver, None), case.spacing_mm)
            spleen_dice = None
            if case.spleen is not None and "spleen" in backend.organs:
                spleen_dice = segmentation_metrics(
                    result.labels == 2, case.spleen, case.spacing_mm
                ).dice
            rows.append(
                {
                    "model": name,
                    "case": case.name,
                    "dice": m.dice,
                    "hd95_mm": m.hd95_mm,
                    "volume_error_pct": 100.0 * (pred_ml - ref_ml) / ref_ml,
                    "ref_hu_3d": ref_hu["liver_hu_3d"],
                    **{f"d_{k}": _diff(got_hu[k], ref_hu[k]) for k in ref_hu},
                    "spleen_dice": spleen_dice,
                    "seconds": seconds,
                }
            )
            print(f"  {name:9s} {case.name:45s} Dice {m.dice:.3f}", file=sys.stderr, flush=True)
    return {"rows": rows, "repeats": repeats, "threads": threads, "device": device}


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def markdown(res: dict[str, Any], cpu: str = "") -> str:
    from screening.model.real_cases import LITS117_SPACING_MM

    out = [
        "## Real CT: shipped models against reference masks (`bench/bench_realct.py`)",
        "",
        f"Machine: {cpu}; device {res.get('device', 'cpu')}, {res['threads']} torch CPU "
        "thread(s); seconds per scan are "
        f"the median of {res['repeats']} run(s) after a warm-up (spread = max − min), "
        "segmentation only (preprocessing, network, post-processing; no store I/O). "
        "ΔAI-x = the attenuation measured on the model's mask minus the same on the reference "
        "mask (HU).",
        "",
        "| model | case | liver Dice | HD95 mm | volume error % | ΔAI-3D | ΔAI-2D | ΔAI-ROI "
        "| spleen Dice | s/scan (spread) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        s = r["seconds"]
        spread = max(s) - min(s) if len(s) > 1 else 0.0
        out.append(
            f"| {r['model']} | {r['case']} | {_f(r['dice'], '.3f')} | {_f(r['hd95_mm'], '.1f')} "
            f"| {_f(r['volume_error_pct'], '+.1f')} | {_f(r['d_liver_hu_3d'], '+.1f')} "
            f"| {_f(r['d_liver_hu_2d'], '+.1f')} | {_f(r['d_liver_hu_roi'], '+.1f')} "
            f"| {_f(r['spleen_dice'], '.3f')} "
            f"| {statistics.median(s):.1f} ({spread:.1f}) |"
        )
    out += [
        "",
        "References: TotalSegmentator example — TotalSegmentator's own masks (a model, not "
        "manual); LiTS 117 — manual (LiTS), voxel size estimated from anatomy "
        f"({' × '.join(f'{v:g}' for v in LITS117_SPACING_MM)} mm, z × y × x). "
        "`liver3mm` has no spleen class (its rows leave spleen "
        "empty, as `screening run` does with SPLEEN_NOT_SEGMENTED). The demo model was trained "
        "on synthetic phantoms only; it is here as the figure the real model replaces.",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="also write the markdown section here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--shipped",
        action="append",
        choices=MODELS,
        help="which shipped models to measure (repeatable; default: all)",
    )
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        help="another model to measure beside the shipped ones (a folder; repeatable)",
    )
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"real CT fixtures not found at {REAL}: nothing to measure", file=sys.stderr)
        return 0
    from bench.common import cpu_model

    models = (*(args.shipped or MODELS), *args.model)
    md = markdown(run(args.repeats, args.threads, args.device, models), cpu_model())
    print(md)
    if args.out:
        args.out.write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
