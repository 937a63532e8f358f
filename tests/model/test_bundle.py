"""MONAI bundles as a backend: a bundle folder built here in MONAI's real layout.

The bundle's network is a 1×1×1 convolution with hand-set weights, so its answer is known:
after the bundle's own ScaleIntensityRanged ([-200, 250] HU → [0, 1]) the liver channel wins
where the scaled intensity s exceeds 0.5 (25 HU), the spleen channel where s < 0.1 (-155 HU),
background in between. Its transforms reorient to RAS, so a wrong hand-over of orientation
would flip the answer and fail the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from screening.errors import ModelFileError
from screening.model.backends import load_backend, model_kind

INFERENCE = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 3,
                    "kernel_size": 1},
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 250,
             "b_min": 0.0, "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32],
                "sw_batch_size": 1, "overlap": 0.25},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
             "orig_keys": "image", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
             "output_postfix": "seg", "separate_folder": False},
        ],
    },
}  # fmt: skip
METADATA = {
    "version": "0.1.0",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "num_channels": 1}},
        "outputs": {"pred": {"type": "image", "num_channels": 3,
                             "channel_def": {"0": "background", "1": "liver", "2": "spleen"}}},
    },
}  # fmt: skip


def _bundle(root: Path) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(INFERENCE))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    conv = torch.nn.Conv3d(1, 3, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([0.0, 10.0, -100.0]).view(3, 1, 1, 1, 1)
        conv.bias[:] = torch.tensor([5.0, 0.0, 15.0])  # liver: 10 s > 5; spleen: 15 - 100 s > 5
    torch.save(conv.state_dict(), root / "models" / "model.pt")
    return root


def _scan() -> np.ndarray:
    """(z, y, x) int16: a left-right asymmetric layout, so a flip cannot pass."""
    ct = np.full((12, 20, 24), 0, dtype=np.int16)  # 0 HU: scaled 0.44, background
    ct[:, 5:15, 2:9] = 60  # 'liver' on the patient's right (low x), above 25 HU
    ct[:, 8:12, 16:22] = -180  # 'spleen' rule: scaled 0.044 < 0.1
    return ct


def test_bundle_backend_runs_the_bundle_and_maps_labels(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "bundle")
    assert model_kind(root) == "monai_bundle"
    backend = load_backend(root)
    assert backend.organs == ("liver", "spleen") and backend.kind == "monai_bundle"
    ct = _scan()
    res = backend.segment(ct, (3.0, 1.5, 1.2), device="cpu", threads=1)
    expected = np.zeros(ct.shape, dtype=np.uint8)
    expected[ct == 60] = 1
    expected[ct == -180] = 2
    np.testing.assert_array_equal(res.labels, expected)
    assert backend.producer()["model_id"] == backend.model_id
    assert not (root / "eval").exists()  # the bundle's SaveImaged wrote into a temp folder


def test_bundle_problems_are_clear_errors(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b1")
    (root / "models" / "model.pt").unlink()
    (root / "models" / "model.ts").write_bytes(b"torchscript")
    with pytest.raises(ModelFileError, match="TorchScript") as e:
        load_backend(root)
    assert "model.pt" in str(e.value)

    root = _bundle(tmp_path / "b2")
    (root / "models" / "model.pt").write_bytes(b"\x80\x04not a state dict")
    with pytest.raises(ModelFileError, match="weights-only"):
        load_backend(root)

    root = _bundle(tmp_path / "b3")
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "bg", "1": "kidney"}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="no 'liver' output channel"):
        load_backend(root)

    root = _bundle(tmp_path / "b4")
    torch.save(torch.nn.Conv3d(1, 2, 1).state_dict(), root / "models" / "model.pt")
    with pytest.raises(ModelFileError, match="does not load its weights"):
        load_backend(root)


def test_screening_run_with_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundle travels to a real Dask worker by reference and is loaded there."""
    from screening.cli import main
    from screening.store.scan import open_scan_store
    from screening.synthetic.stores import write_phantom_stores

    root = _bundle(tmp_path / "bundle")
    store = tmp_path / "store"
    ids = write_phantom_stores(store, 2, seed=4)
    argv = ["run", str(store), "--out", str(tmp_path / "r"), "--workers", "1", "--quiet"]
    assert main([*argv, "--model", str(root), "--no-overlays"]) == 0
    assert "2 of 2 scan(s) finished (2 ok)" in capsys.readouterr().out
    attrs = open_scan_store(store / "scans" / f"{ids[0]}.zarr").derived_attrs("seg")
    assert attrs is not None and attrs["backend"] == "monai_bundle"
    assert attrs["organs"] == ["liver", "spleen"] and attrs["training_domain"] == "unknown"
