"""Convert pyliverlesionseg 0.3's whole-liver HDF5 weights (Keras 2.2.2) to safetensors.

    pip download --no-deps pyliverlesionseg==0.3 -d wheel/
    unzip -q wheel/pyliverlesionseg-0.3-py3-none-any.whl -d wheel/unpacked
    python convert_weights.py wheel/unpacked OUT_DIR

Needs only numpy, h5py and safetensors (a throwaway virtual environment; see README.md beside
this file). Writes ``OUT_DIR/weights.safetensors`` (float32, PyTorch layout) and prints its
sha256 and the source file's, which the model card records. The mapping is positional, as
Keras' own ``load_weights`` does it: the file's convolution layers in graph order
(``layer_names``) are ``conv1`` … ``conv15`` of ``screening.model.liver3mm.network``; a kernel
``(kx, ky, kz, in, out)`` becomes ``(out, in, kx, ky, kz)``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np
from safetensors.numpy import save_file

WEIGHTS = (
    "pyliverlesionseg/trained_models/model_unet_ct_mr_liv_seg_resize_1.5mm_med_3_resize_3mm_"
    "20201011_dice_loss_val_binary_dice_mean.hdf5"
)
N_CONVS = 15


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def convert(h5_path: Path) -> tuple[dict[str, np.ndarray], list[float]]:
    tensors: dict[str, np.ndarray] = {}
    with h5py.File(h5_path, "r") as f:
        voxel_size = [float(v) for v in f["header/voxel_size"][()]]
        layers = [_text(n) for n in f.attrs["layer_names"]]
        with_weights = [n for n in layers if len(f[n].attrs.get("weight_names", [])) > 0]
        if len(with_weights) != N_CONVS or not all(n.startswith("conv3d") for n in with_weights):
            raise SystemExit(f"{h5_path}: expected {N_CONVS} conv3d layers, got {with_weights}")
        for i, layer in enumerate(with_weights, start=1):
            names = [_text(w) for w in f[layer].attrs["weight_names"]]
            kernel = np.asarray(f[layer][names[0]], dtype=np.float32)
            bias = np.asarray(f[layer][names[1]], dtype=np.float32)
            tensors[f"conv{i}.weight"] = np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))
            tensors[f"conv{i}.bias"] = bias
    return tensors, voxel_size


def main(argv: list[str]) -> int:
    wheel_dir, out_dir = Path(argv[1]), Path(argv[2])
    h5_path = wheel_dir / WEIGHTS
    tensors, voxel_size = convert(h5_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "weights.safetensors"
    save_file(tensors, str(out), metadata={"source": h5_path.name, "voxel_size_mm": "3,3,3"})
    n_params = sum(int(t.size) for t in tensors.values())
    print(f"source        {h5_path.name}")
    print(f"source sha256 {hashlib.sha256(h5_path.read_bytes()).hexdigest()}")
    print(f"voxel size    {voxel_size} mm")
    print(f"parameters    {n_params}")
    print(f"wrote         {out}")
    print(f"sha256        {hashlib.sha256(out.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
