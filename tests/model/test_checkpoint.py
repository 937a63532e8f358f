"""Checkpoints: round trip, sha256 verification, weights-only loading, clear errors."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch

from screening.errors import ModelFileError
from screening.model import NetworkConfig, build_network, load_model, save_model
from screening.model.checkpoint import CARD_NAME, WEIGHTS_NAME
from screening.preprocess import PreprocessConfig

TINY = NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
PREP = PreprocessConfig(spacing_mm=(5.0, 3.0, 3.0))


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    save_model(tmp_path / "m", net, TINY, PREP, {"name": "tiny", "training": {"command": "x"}})
    return tmp_path / "m", net


def test_round_trip_gives_the_same_network_and_card(tmp_path: Path) -> None:
    path, net = _saved(tmp_path)
    loaded = load_model(path)
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), net(x))
    assert loaded.model_id == hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest()
    assert loaded.network_cfg == TINY and loaded.preprocess_cfg == PREP
    card = json.loads((path / CARD_NAME).read_text())
    assert card["weights"]["sha256"] == loaded.model_id
    assert {"torch", "monai", "screening"} <= set(card["versions"])
    assert card["labels"] == {"0": "background", "1": "liver", "2": "spleen"}


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    data = bytearray((path / WEIGHTS_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(path)


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_pickled_code_is_refused_even_with_a_matching_hash(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    evil = pickle.dumps({"w": _Payload()}, protocol=2)
    (path / WEIGHTS_NAME).write_bytes(evil)
    card = json.loads((path / CARD_NAME).read_text())
    card["weights"]["sha256"] = hashlib.sha256(evil).hexdigest()
    (path / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="weights-only"):
        load_model(path)


def test_unknown_architecture_is_a_clear_error(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    card = json.loads((path / CARD_NAME).read_text())
    card["architecture"]["architecture"] = "nnUNet"
    (path / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="unknown architecture"):
        load_model(path)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    card = json.loads((path / CARD_NAME).read_text())
    card["architecture"]["channels"] = [8, 16, 32]
    (path / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(path)


def test_missing_model_directory_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="screening train"):
        load_model(tmp_path / "nothing")
