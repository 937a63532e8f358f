"""Check the PyTorch port against the original Keras graph (run in the project's venv).

    python scripts/liver3mm/verify_port.py inputs  INPUTS.npz     # network inputs to compare on
    <throwaway env> python scripts/liver3mm/keras_reference.py WHEEL INPUTS.npz KERAS.npz
    python scripts/liver3mm/verify_port.py compare INPUTS.npz KERAS.npz

The inputs are three full segments (189 × 162 × 162, the network's axes and scale): the
TotalSegmentator example CT and LiTS 117 from ``../shared/data/real`` prepared exactly as
``screening.model.liver3mm`` prepares a scan (when those fixtures exist), and uniform noise in
[-0.5, 0.5] (out of distribution; shows float32 round-off, amplified). ``compare`` runs the
shipped weights through the port and prints, per input, the largest and mean absolute
difference of the liver probability and the share of voxels whose 0.5 decision differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "real"


def _segment(ct_hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    from screening.model.liver3mm.inference import (
        Liver3mmConfig,
        body_box,
        cut_sides,
        network_input,
        segments,
    )

    cfg = Liver3mmConfig()
    image = network_input(ct_hu, spacing_mm)
    box = body_box(image, cfg.body_threshold_hu)
    assert box is not None
    cut = cut_sides(image, box, cfg.body_threshold_hu, cfg.cut_face_fraction)
    return next(iter(segments(image, box, cfg, cut)))[1]


def make_inputs(out: Path) -> None:
    from screening.model.real_cases import load_lits117, load_totalsegmentator_example

    arrays = {"noise": np.random.default_rng(0).uniform(-0.5, 0.5, (189, 162, 162))}
    if REAL.is_dir():
        for name, case in (
            ("totalsegmentator", load_totalsegmentator_example(REAL)),
            ("lits117", load_lits117(REAL)),
        ):
            arrays[name] = _segment(case.ct_hu, case.spacing_mm)
    np.savez_compressed(out, **{k: v.astype(np.float32) for k, v in arrays.items()})
    print(f"wrote {out}: {sorted(arrays)}")


def compare(inputs: Path, reference: Path) -> int:
    import torch

    from screening.model.liver3mm.model import load_liver3mm

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_liver3mm()
    x_all, ref_all = np.load(inputs), np.load(reference)
    worst = 0.0
    for name in x_all.files:
        x = torch.from_numpy(x_all[name])[None, None]
        with torch.inference_mode():
            y = model.network(x)[0, 0].numpy()
        ref = ref_all[name]
        diff = np.abs(y - ref)
        flips = float(np.mean((y > 0.5) != (ref > 0.5)))
        print(
            f"{name:18s} max |Δp| {diff.max():.2e}  mean |Δp| {diff.mean():.2e}  "
            f"decisions differing {flips:.2e}"
        )
        if name != "noise":
            worst = max(worst, float(diff.max()))
    print(f"largest difference on real CT inputs: {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "inputs":
        make_inputs(Path(argv[2]))
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        return compare(Path(argv[2]), Path(argv[3]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
