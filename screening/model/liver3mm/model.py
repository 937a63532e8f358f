"""The shipped real-CT liver model: converted safetensors weights plus a model card.

A model directory holds ``weights.safetensors`` (converted by
``scripts/liver3mm/convert_weights.py``) and ``model_card.json`` (source, licence, training
domain, preprocessing, measured Dice, the weights' sha256). Loading reads the file once, checks
its sha256 against the card, and parses it with ``safetensors`` (tensors only: no code runs),
then loads it strictly into the ported network. ``model_id`` is the weights' sha256.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from screening.errors import ModelFileError
from screening.model.checkpoint import read_verified
from screening.model.liver3mm.network import build_liver3mm_network

if TYPE_CHECKING:
    import torch

__all__ = [
    "LIVER3MM_CARD_FORMAT",
    "LIVER3MM_DIR",
    "Liver3mmModel",
    "is_liver3mm_dir",
    "load_liver3mm",
]

LIVER3MM_DIR = Path(__file__).resolve().parents[1] / "weights" / "liver3mm"
LIVER3MM_CARD_FORMAT = "screening-liver3mm-card/1"
CARD_NAME = "model_card.json"
WEIGHTS_NAME = "weights.safetensors"


@dataclass(frozen=True, eq=False)
class Liver3mmModel:
    """A verified network in eval mode with its card. ``model_id`` is the weights' sha256."""

    network: torch.nn.Module
    card: dict[str, Any]
    model_id: str
    path: Path

    @property
    def training_domain(self) -> str:
        return str(self.card.get("training_domain", "real"))


def is_liver3mm_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a card of this model family (cheap: reads the card only)."""
    card = Path(path) / CARD_NAME
    try:
        return bool(json.loads(card.read_text()).get("format") == LIVER3MM_CARD_FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def _read_card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CARD_NAME
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ModelFileError(
            f"no {CARD_NAME} in the model directory (expected {CARD_NAME} and {WEIGHTS_NAME})",
            path=model_dir,
        ) from e
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read the model card: {e}", path=path) from e
    found = card.get("format") if isinstance(card, dict) else None
    if found != LIVER3MM_CARD_FORMAT:
        raise ModelFileError(
            f"not a liver3mm model card (format {found!r}, expected {LIVER3MM_CARD_FORMAT!r})",
            path=path,
        )
    return card


def load_liver3mm(
    model_dir: str | os.PathLike[str] | None = None, *, device: str = "cpu"
) -> Liver3mmModel:
    """Load and verify a liver3mm model directory (default: the shipped one).

    Raises ModelFileError naming the file when the card is missing or foreign, the weights are
    missing, their sha256 differs from the card's, they are not a safetensors file, or their
    tensors do not fit the network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    root = Path(model_dir) if model_dir is not None else LIVER3MM_DIR
    card = _read_card(root)
    try:
        expected = str(card["weights"]["sha256"])
        weights = root / str(card["weights"].get("file", WEIGHTS_NAME))
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"model card has no weights entry: {e}", path=root / CARD_NAME) from e
    data, actual = read_verified(weights, expected)
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError) as e:
        raise ModelFileError(f"weights are not a safetensors file: {e}", path=weights) from e
    network = build_liver3mm_network()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"weights do not fit the liver3mm network: {e}", path=weights) from e
    network.eval().to(device)
    return Liver3mmModel(network, card, actual, root)
