"""CUDA paths (bf16 autocast, channels-last, training step); skipped where torch sees no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from screening.model import (
    InferenceConfig,
    NetworkConfig,
    TrainConfig,
    dice_per_label,
    load_model,
    segment_volume,
    train,
)
from screening.preprocess import PreprocessConfig
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]


def test_cuda_bf16_channels_last_agrees_with_cpu() -> None:
    ph = make_phantom(PhantomSpec(), ScanGeometry.preset("small"), seed=77)
    ct = np.maximum(ph.hu, -1024).astype(np.int16)
    cpu = segment_volume(
        load_model("demo", device="cpu"), ct, ph.spacing_mm, InferenceConfig(), device="cpu"
    )
    gpu = segment_volume(
        load_model("demo", device="cuda"), ct, ph.spacing_mm, InferenceConfig(), device="cuda"
    )
    assert gpu.device == "cuda"
    agreement = dice_per_label(gpu.labels, cpu.labels)
    assert agreement[1] > 0.99 and agreement[2] > 0.98  # bf16 moves only boundary voxels
    assert dice_per_label(gpu.labels, ph.labels)[1] > 0.93


def test_training_runs_on_cuda(tmp_path: Path, labelled_store: Path) -> None:
    cfg = TrainConfig(
        epochs=1, iters_per_epoch=3, patch_zyx=(8, 32, 32), warmup_iters=1, val_fraction=0.3
    )
    net = NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    result = train(
        labelled_store, tmp_path / "m", cfg=cfg, network_cfg=net,
        preprocess_cfg=PreprocessConfig(spacing_mm=(10.0, 6.0, 6.0)), device="cuda",
    )  # fmt: skip
    assert result.model_id is not None
    assert load_model(tmp_path / "m", device="cuda").card["training"]["device"] == "cuda"


@pytest.mark.real_data
def test_liver3mm_on_cuda_agrees_with_cpu_on_real_ct(real_data: Path) -> None:
    """The shipped real-CT model on a GPU (bf16, channels-last) against the CPU path."""
    from screening.model.backends import load_backend
    from screening.model.real_cases import load_totalsegmentator_example

    case = load_totalsegmentator_example(real_data)
    cpu = load_backend("liver3mm", device="cpu").segment(
        case.ct_hu, case.spacing_mm, device="cpu", threads=None
    )
    gpu = load_backend("liver3mm", device="cuda").segment(
        case.ct_hu, case.spacing_mm, device="cuda", threads=None
    )
    assert gpu.device == "cuda"
    assert dice_per_label(gpu.labels, cpu.labels, (1,))[1] > 0.99
    liver = gpu.labels == 1
    assert 2 * (liver & case.liver).sum() / (liver.sum() + case.liver.sum()) > 0.94
