"""Training: a tiny network on a tiny store writes a loadable model, resumes, refuses mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from screening.errors import ConfigError, InputError
from screening.model import NetworkConfig, TrainConfig, load_model, train
from screening.model.data import (
    PatchSampler,
    labelled_store_paths,
    load_labelled_scan,
    split_train_val,
)
from screening.preprocess import PreprocessConfig

TINY = NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
COARSE = PreprocessConfig(spacing_mm=(10.0, 6.0, 6.0))
QUICK = TrainConfig(
    epochs=1,
    iters_per_epoch=2,
    batch_size=2,
    patch_zyx=(8, 32, 32),
    warmup_iters=1,
    val_fraction=0.3,
)


def test_patch_sampler_centres_on_organs(labelled_store: Path) -> None:
    rng = np.random.default_rng(0)
    scan = load_labelled_scan(labelled_store_paths(labelled_store)[0], COARSE, rng)
    assert scan.image.shape == scan.labels.shape and scan.image.dtype == np.float16
    sampler = PatchSampler(
        [scan],
        (8, 16, 16),
        fg_fraction=1.0,
        intensity_scale=0,
        intensity_shift=0,
        noise_sd=0,
        rng=rng,
    )
    x, y = sampler.batch(16)
    assert x.shape == (16, 1, 8, 16, 16) and y.shape == (16, 1, 8, 16, 16)
    assert all(int((y[i] > 0).sum()) > 0 for i in range(16))  # every patch holds an organ
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # no augmentation asked for


def test_split_is_deterministic_and_never_empty(tmp_path: Path) -> None:
    paths = [tmp_path / f"s{i}.zarr" for i in range(10)]
    train_a, val_a = split_train_val(paths, 0.2)
    _, val_b = split_train_val(list(reversed(paths)), 0.2)
    assert set(val_a) == set(val_b) and val_a and train_a
    assert set(train_a) | set(val_a) == set(paths) and not set(train_a) & set(val_a)
    with pytest.raises(InputError, match="at least 2"):
        split_train_val(paths[:1], 0.2)


def test_train_writes_a_model_and_resumes(tmp_path: Path, labelled_store: Path) -> None:
    out = tmp_path / "model"
    kwargs = {"network_cfg": TINY, "preprocess_cfg": COARSE, "device": "cpu", "threads": 1}
    first = train(labelled_store, out, cfg=QUICK, command="screening train --test", **kwargs)
    assert first.epochs_run == 1 and first.resumed_from == 0
    model = load_model(out)
    assert model.model_id == first.model_id
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["command"] == "screening train --test"
    assert card["training"]["n_train_scans"] + card["training"]["n_validation_scans"] == 3
    assert 0.0 <= card["validation"]["dice_liver"] <= 1.0
    assert card["preprocess"]["spacing_mm"] == [10.0, 6.0, 6.0]
    assert card["training_domain"] == "synthetic"  # every training scan is a synth phantom

    more = TrainConfig(**{**QUICK.to_dict(), "epochs": 2})
    second = train(labelled_store, out, cfg=more, **kwargs)
    assert second.resumed_from == 1 and second.epochs_run == 1
    history = json.loads((out / "training" / "state.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]

    other = TrainConfig(**{**more.to_dict(), "lr": 1e-4})
    with pytest.raises(ConfigError, match="other settings"):
        train(labelled_store, out, cfg=other, **kwargs)


def test_patch_must_fit_the_strides(tmp_path: Path, labelled_store: Path) -> None:
    bad = TrainConfig(**{**QUICK.to_dict(), "patch_zyx": [8, 30, 32]})
    with pytest.raises(ConfigError, match="multiples of 4"):
        train(labelled_store, tmp_path / "m", cfg=bad, network_cfg=TINY, preprocess_cfg=COARSE)
