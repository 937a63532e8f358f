"""Checkpoints: weights plus a model card, verified by sha256 and loaded with weights_only.

A model directory holds ``weights.pt`` (a plain PyTorch state dict of the network, the same
format MONAI writes) and ``model_card.json``: architecture, preprocessing grid and window,
labels, training data and command, validation metrics, library versions and the weights'
sha256. Loading reads the weights once, checks their sha256 against the card, then
deserialises them with ``torch.load(weights_only=True)``, which executes no pickled code.
``model_id`` is the weights' sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screening._version import __version__
from screening.errors import ConfigError, ModelFileError
from screening.fsutil import atomic_write_bytes, atomic_write_json
from screening.model.network import LABELS, NetworkConfig, build_network
from screening.preprocess import PreprocessConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "CARD_NAME",
    "DEMO_MODEL_DIR",
    "WEIGHTS_NAME",
    "LoadedModel",
    "library_versions",
    "load_model",
    "read_verified",
    "resolve_model_dir",
    "save_model",
]

CARD_NAME = "model_card.json"
WEIGHTS_NAME = "weights.pt"
CARD_FORMAT = "screening-model-card/1"
COARSE_DIR = "coarse"  # a model directory may hold the cascade's coarse model here
DEMO_MODEL_DIR = Path(__file__).parent / "weights" / "demo"


def library_versions() -> dict[str, str]:
    import monai
    import numpy
    import torch

    return {
        "screening": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_model(
    out_dir: str | os.PathLike[str],
    network: torch.nn.Module,
    network_cfg: NetworkConfig,
    preprocess_cfg: PreprocessConfig,
    card: dict[str, Any],
) -> str:
    """Write ``weights.pt`` and ``model_card.json`` into ``out_dir``; return the sha256.

    ``card`` holds the descriptive parts (name, intended use, training, validation); the
    architecture, preprocessing, labels, sha256 and library versions are filled in here.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    torch.save(state, buf)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    full = {
        "format": CARD_FORMAT,
        **card,
        "architecture": network_cfg.to_dict(),
        "preprocess": preprocess_cfg.to_dict(),
        "labels": {str(k): v for k, v in LABELS.items()},
        "weights": {"file": WEIGHTS_NAME, "sha256": sha, "bytes": len(data)},
        "versions": library_versions(),
    }
    atomic_write_bytes(out / WEIGHTS_NAME, data)
    atomic_write_json(out / CARD_NAME, full)
    return sha


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A verified network in eval mode with its card. ``model_id`` is the weights' sha256."""

    network: torch.nn.Module
    network_cfg: NetworkConfig
    preprocess_cfg: PreprocessConfig
    card: dict[str, Any]
    model_id: str
    path: Path
    coarse: LoadedModel | None = field(default=None)


def resolve_model_dir(model: str | os.PathLike[str]) -> Path:
    """``demo`` → the shipped demo weights; otherwise a model directory or its card file."""
    if str(model) == "demo":
        return DEMO_MODEL_DIR
    p = Path(model)
    if p.is_file() and p.name == CARD_NAME:
        p = p.parent
    if not (p / CARD_NAME).is_file():
        raise ModelFileError(
            f"{p} is not a model directory: expected {CARD_NAME} and {WEIGHTS_NAME} in it "
            "(make one with `screening train`, or pass --model demo)",
            path=p,
        )
    return p


def read_verified(weights: Path, expected_sha256: str) -> tuple[bytes, str]:
    """The file's bytes and sha256, read once; ModelFileError naming the file when it cannot
    be read or its sha256 is not the one its model card records."""
    try:
        data = weights.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read the weights: {e}", path=weights) from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ModelFileError(
            f"weights sha256 {actual[:16]}… does not match the model card's "
            f"{expected_sha256[:16]}…: the file was changed or belongs to another model; "
            "refusing to load it",
            path=weights,
        )
    return data, actual


def _read_card(model_dir: Path) -> dict[str, Any]:
    try:
        card = json.loads((model_dir / CARD_NAME).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read the model card: {e}", path=model_dir / CARD_NAME) from e
    found = card.get("format") if isinstance(card, dict) else None
    if found != CARD_FORMAT:
        raise ModelFileError(
            f"not a screening model card (format {found!r}, expected {CARD_FORMAT!r})",
            path=model_dir / CARD_NAME,
        )
    return card


def load_model(
    model: str | os.PathLike[str], *, device: str = "cpu", with_coarse: bool = True
) -> LoadedModel:
    """Load and verify a model directory (or ``"demo"``); ModelFileError on any mismatch.

    Checks, in order: the card's format, a known architecture with valid hyper-parameters, the
    weights' sha256 against the card, a weights-only unpickle, and a strict state-dict match.
    A ``coarse/`` sub-directory holding another model is loaded too, for the cascade.
    """
    import torch

    model_dir = resolve_model_dir(model)
    card = _read_card(model_dir)
    try:
        net_cfg = NetworkConfig.from_dict(card["architecture"])
        prep_cfg = PreprocessConfig.from_dict(card["preprocess"])
        expected = str(card["weights"]["sha256"])
        weights_file = model_dir / str(card["weights"].get("file", WEIGHTS_NAME))
    except (KeyError, TypeError, ConfigError) as e:
        raise ModelFileError(
            f"model card describes an unknown or invalid architecture/preprocessing: {e}",
            path=model_dir / CARD_NAME,
        ) from e
    data, actual = read_verified(weights_file, expected)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(
            f"weights are not a weights-only state dict: {e}", path=weights_file
        ) from e
    network = build_network(net_cfg)
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ModelFileError(
            f"weights do not fit the card's architecture {net_cfg.architecture} "
            f"channels={net_cfg.channels}: {e}",
            path=weights_file,
        ) from e
    network.eval().to(device)
    coarse = None
    if with_coarse and (model_dir / COARSE_DIR / CARD_NAME).is_file():
        coarse = load_model(model_dir / COARSE_DIR, device=device, with_coarse=False)
    return LoadedModel(network, net_cfg, prep_cfg, card, actual, model_dir, coarse)
