"""Inference: post-processing pieces against direct computations; the demo model on phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from screening.errors import ConfigError
from screening.model import (
    InferenceConfig,
    dice_per_label,
    keep_largest_component,
    load_model,
    resolve_device,
    segment_store,
    segment_volume,
)
from screening.model.inference import probs_to_native
from screening.preprocess import preprocess_volume, resample_linear
from screening.reasons import ContrastPhase
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom


def test_largest_component_is_kept_per_label() -> None:
    labels = np.zeros((10, 20, 20), dtype=np.uint8)
    labels[1:8, 1:10, 1:10] = 1  # big liver
    labels[1:3, 15:18, 15:18] = 1  # stray liver island
    labels[5:9, 12:19, 12:19] = 2  # spleen
    labels[0, 0, 19] = 2  # stray spleen voxel
    keep_largest_component(labels)
    assert labels[1:3, 15:18, 15:18].max() == 0 and labels[0, 0, 19] == 0
    assert (labels == 1).sum() == 7 * 9 * 9 and (labels == 2).sum() == 4 * 7 * 7


def test_dice_known_values() -> None:
    a = np.zeros((4, 4, 4), dtype=np.uint8)
    b = np.zeros_like(a)
    a[:2] = 1
    b[1:3] = 1
    d = dice_per_label(a, b)
    assert d[1] == pytest.approx(0.5) and d[2] == 1.0  # spleen empty in both


@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (1.3, 0.6, 2.2)])
def test_probabilities_map_back_slab_by_slab_like_the_whole_volume(offset: tuple) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((3, 9, 11, 10)).astype(np.float32)
    native_shape, native_sp, model_sp = (37, 20, 26), (1.25, 1.4, 1.1), (5.0, 2.5, 2.9)
    step = [n / m for n, m in zip(native_sp, model_sp, strict=True)]
    whole = np.argmax(resample_linear(probs, step, native_shape, offset_zyx=offset), axis=0)
    slabbed = probs_to_native(
        probs, model_sp, native_shape, native_sp, offset_zyx=offset, slab_voxels=3 * 20 * 26
    )
    np.testing.assert_array_equal(slabbed, whole)


def test_device_choice() -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


@pytest.mark.parametrize(
    "kwargs", [{"overlap": 1.0}, {"sw_batch_size": 0}, {"roi_size_zyx": (0, 8, 8)}]
)
def test_bad_inference_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        InferenceConfig(**kwargs)


# Held-out phantoms (seeds not in the demo model's training cohort) covering the variants.
HELD_OUT = [
    (PhantomSpec(liver_hu=12.0), ((48, 128, 128), (5.0, 3.2, 3.2)), "chest_abdomen", 901),
    (
        PhantomSpec(liver_hu=60.0, contrast_phase=ContrastPhase.PORTAL_VENOUS),
        ((60, 128, 128), (4.0, 2.7, 2.7)),
        "chest_abdomen",
        902,
    ),
    (PhantomSpec(liver_hu=55.0, patient_sex="F"), ((40, 128, 128), (6.0, 3.7, 3.7)), "chest", 903),
]


@pytest.fixture(scope="module")
def demo_model():  # type: ignore[no-untyped-def]
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def held_out() -> list:
    out = []
    for spec, (shape, spacing), fov, seed in HELD_OUT:
        z_bottom = -215.0 if fov == "chest_abdomen" else -100.0
        geom = ScanGeometry(shape=shape, spacing_mm=spacing, fov=fov, z_bottom_mm=z_bottom)
        out.append(make_phantom(spec, geom, seed=seed))
    return out


def test_demo_model_segments_held_out_phantoms(demo_model, held_out: list) -> None:  # type: ignore[no-untyped-def]
    liver, spleen = [], []
    for ph in held_out:
        ct = np.maximum(ph.hu, -1024).astype(np.int16)
        result = segment_volume(
            demo_model, ct, ph.spacing_mm, InferenceConfig(cascade=False), device="cpu", threads=2
        )
        assert result.labels.shape == ph.hu.shape and result.labels.dtype == np.uint8
        d = dice_per_label(result.labels, ph.labels)
        liver.append(d[1])
        spleen.append(d[2])
    assert np.mean(liver) >= 0.95, liver
    assert np.mean(spleen) >= 0.90, spleen


def test_cascade_looks_at_a_box_and_keeps_the_result(demo_model, held_out: list) -> None:  # type: ignore[no-untyped-def]
    ph = held_out[0]
    ct = np.maximum(ph.hu, -1024).astype(np.int16)
    full = segment_volume(
        demo_model, ct, ph.spacing_mm, InferenceConfig(cascade=False), device="cpu"
    )
    fast = segment_volume(
        demo_model, ct, ph.spacing_mm, InferenceConfig(cascade=True), device="cpu"
    )
    assert fast.box_zyx is not None and "cascade_s" in fast.seconds
    box_voxels = np.prod([hi - lo for lo, hi in fast.box_zyx])
    assert box_voxels < 0.8 * ct.size
    d_full, d_fast = dice_per_label(full.labels, ph.labels), dice_per_label(fast.labels, ph.labels)
    assert d_fast[1] >= d_full[1] - 0.01 and d_fast[2] >= d_full[2] - 0.02
    # With the whole volume's prep given (as the distributed run does), the box is cropped
    # from it instead of preprocessed again: the same segmentation up to interpolation.
    prep = preprocess_volume(ct, ph.spacing_mm, demo_model.preprocess_cfg)
    cfg = InferenceConfig(cascade=True)
    given = segment_volume(demo_model, ct, ph.spacing_mm, cfg, device="cpu", prep=prep)
    agree = dice_per_label(given.labels, fast.labels)
    assert agree[1] > 0.98 and agree[2] > 0.95


def test_segment_store_writes_seg_once(demo_model, labelled_store: Path) -> None:  # type: ignore[no-untyped-def]
    from screening.store.scan import open_scan_store

    path = labelled_store / "scans" / "scan1.zarr"
    first = segment_store(path, demo_model, InferenceConfig(cascade=False), device="cpu")
    assert not first["reused"]
    store = open_scan_store(path)
    seg = store.read("seg")
    assert seg.shape == store.array("ct").shape
    attrs = store.derived_attrs("seg")
    assert attrs is not None and attrs["model_id"] == demo_model.model_id
    assert dice_per_label(seg, store.read("seg_reference"))[1] > 0.9
    assert segment_store(path, demo_model, InferenceConfig(cascade=False), device="cpu")["reused"]
