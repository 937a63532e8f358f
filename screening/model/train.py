"""``screening train``: fit the residual U-Net to labelled scans, resumable, best checkpoint kept.

Data is a scan store whose scans carry ``seg_reference`` (masks given in the ingest manifest),
or a manifest CSV, which is first ingested into ``OUT/data-store``. Each epoch runs
``iters_per_epoch`` steps of Dice + cross-entropy on foreground-weighted random patches, then
sliding-window inference on the validation scans; when their mean Dice (liver and spleen)
improves, ``OUT/weights.pt`` + ``OUT/model_card.json`` are replaced, so ``OUT`` is always a
loadable model directory. The full training state is saved after every epoch under
``OUT/training/``; re-running the same command resumes from the last finished epoch.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from screening.config import FrozenConfig, require
from screening.errors import ConfigError, InputError
from screening.fsutil import atomic_write_bytes, atomic_write_json
from screening.model.checkpoint import save_model
from screening.model.data import PatchSampler, iter_loaded, labelled_store_paths, split_train_val
from screening.model.inference import (
    InferenceConfig,
    dice_per_label,
    predict_probabilities,
    resolve_device,
)
from screening.model.network import LABELS, NetworkConfig, build_network
from screening.preprocess import PreprocessConfig
from screening.store.scan import open_scan_store

__all__ = ["TrainConfig", "TrainResult", "train"]

log = logging.getLogger(__name__)

STATE_DIR = "training"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(FrozenConfig):
    """Optimisation and sampling settings (everything but ``epochs`` must match to resume)."""

    epochs: int = 40
    iters_per_epoch: int = 50
    batch_size: int = 2
    patch_zyx: tuple[int, int, int] = (32, 96, 96)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    fg_fraction: float = 0.67
    val_fraction: float = 0.15
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    noise_sd: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.iters_per_epoch >= 1, "iters_per_epoch must be >= 1")
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(
            len(self.patch_zyx) == 3 and min(self.patch_zyx) >= 1,
            f"patch_zyx must be three positive ints, got {self.patch_zyx}",
        )
        require(self.lr > 0, "lr must be > 0")
        require(0.0 <= self.fg_fraction <= 1.0, "fg_fraction must be in [0, 1]")
        require(0.0 < self.val_fraction < 1.0, "val_fraction must be in (0, 1)")

    def resume_digest(self) -> str:
        return replace(self, epochs=1).digest()


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_dice: dict[str, float]
    epochs_run: int
    resumed_from: int
    seconds: float
    model_id: str | None

    def describe(self) -> str:
        dice = ", ".join(f"{k} {v:.3f}" for k, v in self.best_dice.items())
        resumed = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        return (
            f"trained {self.epochs_run} epoch(s){resumed} in {self.seconds:.0f} s; best epoch "
            f"{self.best_epoch}: validation Dice {dice}\n  model: {self.out_dir} "
            f"(model_id {str(self.model_id)[:16]}…)"
        )


def _store_root(data: str | os.PathLike[str]) -> Path:
    p = Path(data)
    if not p.is_dir():
        raise InputError(
            f"training data must be a scan store folder, got {p} (a manifest .csv is ingested "
            "first by `screening train`)",
            path=p,
        )
    return p


def _lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / cfg.warmup_iters
    frac = (step - cfg.warmup_iters) / max(1, total - cfg.warmup_iters)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def _validate(
    network: Any, scans: Sequence[Any], roi: Sequence[int], device: str
) -> dict[str, float]:
    network.eval()
    per: dict[int, list[float]] = {1: [], 2: []}
    cfg = InferenceConfig(overlap=0.25)
    for scan in scans:
        probs = predict_probabilities(network, scan.image, roi, cfg, device)
        pred = np.argmax(probs, axis=0)
        for label, d in dice_per_label(pred, scan.labels).items():
            if (scan.labels == label).any():
                per[label].append(d)
    network.train()
    out = {LABELS[k]: float(np.mean(v)) if v else float("nan") for k, v in per.items()}
    out["mean"] = float(np.nanmean([out["liver"], out["spleen"]]))
    return out


def _training_domain(paths: Any) -> str:
    """``synthetic`` when every training scan was made by ``screening synth`` (ingest's
    ``source.synthetic``), else ``real``: what the card says the model knows."""
    marks = [bool(open_scan_store(p).attrs.get("source", {}).get("synthetic")) for p in paths]
    return "synthetic" if marks and all(marks) else "real"


def train(
    store_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    cfg: TrainConfig,
    network_cfg: NetworkConfig,
    preprocess_cfg: PreprocessConfig,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
    command: str = "",
    card_notes: str = "",
) -> TrainResult:
    """Train (or resume training) and keep the best checkpoint in ``out_dir``."""
    import torch
    from monai.losses import DiceCELoss

    started = time.perf_counter()
    out = Path(out_dir)
    div = network_cfg.size_divisor
    require(
        all(p % div == 0 for p in cfg.patch_zyx),
        f"patch_zyx {cfg.patch_zyx} must be multiples of {div} (the product of the strides)",
    )
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    store = _store_root(store_root)
    paths = labelled_store_paths(store)
    domain = _training_domain(paths)
    train_paths, val_paths = split_train_val(paths, cfg.val_fraction)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    log.info("loading %d training and %d validation scans", len(train_paths), len(val_paths))
    train_scans = iter_loaded(train_paths, preprocess_cfg, rng)
    val_scans = iter_loaded(val_paths, preprocess_cfg, rng)

    network = build_network(network_cfg).to(dev)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    sampler = PatchSampler(
        train_scans,
        cfg.patch_zyx,
        fg_fraction=cfg.fg_fraction,
        intensity_scale=cfg.intensity_scale,
        intensity_shift=cfg.intensity_shift,
        noise_sd=cfg.noise_sd,
        rng=rng,
    )
    identity = {
        "train": cfg.resume_digest(),
        "network": network_cfg.digest(),
        "preprocess": preprocess_cfg.digest(),
    }
    state_dir = out / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    meta_path, weights_path = state_dir / "state.json", state_dir / "state.pt"
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "dice": {}, "score": -1.0, "model_id": None}
    start_epoch = 0
    if meta_path.is_file() and weights_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["identity"] != identity:
            raise ConfigError(
                f"{out} holds a training run with other settings; resume it with the same "
                "options (only --epochs may change) or choose another --out"
            )
        state = torch.load(weights_path, map_location=dev, weights_only=True)
        if int(state["epoch"]) == meta["epoch"]:
            network.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            rng.bit_generator.state = meta["numpy_rng"]
            history, best, start_epoch = meta["history"], meta["best"], meta["epoch"]
            log.info("resuming after epoch %d (best so far: epoch %s)", start_epoch, best["epoch"])
    total_iters = cfg.epochs * cfg.iters_per_epoch
    network.train()
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        steps = range(cfg.iters_per_epoch)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it", leave=False)
            steps = bar
        losses = []
        for i in steps:
            step = epoch * cfg.iters_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_iters, cfg)
            x, y = sampler.batch(cfg.batch_size)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x.to(dev)), y.to(dev))
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        dice = _validate(network, val_scans, cfg.patch_zyx, dev)
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "val_dice_liver": dice["liver"],
            "val_dice_spleen": dice["spleen"],
            "seconds": time.perf_counter() - t_epoch,
        }
        history.append(record)
        log.info(
            "epoch %d/%d: loss %.4f, validation Dice liver %.3f spleen %.3f (%.0f s)",
            epoch + 1, cfg.epochs, record["loss"], dice["liver"], dice["spleen"], record["seconds"],
        )  # fmt: skip
        if dice["mean"] > best["score"]:
            card = {
                "name": out.name,
                "notes": card_notes,
                "training_domain": domain,
                "inference": {"roi_size_zyx": list(cfg.patch_zyx)},
                "training": {
                    "command": command,
                    "data": str(store_root),
                    "n_train_scans": len(train_scans),
                    "n_validation_scans": len(val_scans),
                    "config": cfg.to_dict(),
                    "epoch": epoch + 1,
                    "device": dev,
                },
                "validation": {
                    "metric": "mean Dice on the model grid over validation scans",
                    "dice_liver": dice["liver"],
                    "dice_spleen": dice["spleen"],
                    "n_scans": len(val_scans),
                },
            }
            sha = save_model(out, network, network_cfg, preprocess_cfg, card)
            best = {"epoch": epoch + 1, "dice": dice, "score": dice["mean"], "model_id": sha}
        state = {
            "epoch": epoch + 1,
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(weights_path, buf.getvalue())
        atomic_write_json(
            meta_path,
            {
                "identity": identity,
                "epoch": epoch + 1,
                "numpy_rng": rng.bit_generator.state,
                "history": history,
                "best": best,
            },
        )
    return TrainResult(
        out_dir=out,
        best_epoch=int(best["epoch"]),
        best_dice={k: float(v) for k, v in dict(best["dice"]).items() if k != "mean"},
        epochs_run=cfg.epochs - start_epoch,
        resumed_from=start_epoch,
        seconds=time.perf_counter() - started,
        model_id=best["model_id"],
    )
