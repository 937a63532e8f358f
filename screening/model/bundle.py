"""MONAI bundles as a segmentation backend (``configs/inference.json``, ``models/model.pt``).

A bundle is run the way its authors wrote it: its own ``preprocessing`` (``LoadImaged`` …
``Orientationd``, ``Spacingd``, intensity transforms), ``inferer`` and ``postprocessing``
(activation, ``Invertd`` back to the input grid, arg-max) from ``configs/inference.json``,
and its network from ``network_def``. The scan is handed over as a NIfTI file written from the
scan store's canonical array with its LPS geometry, so the bundle's own orientation and spacing
transforms see a real affine; the prediction comes back on that file's grid, which is the
store's. Labels are mapped by name from ``configs/metadata.json``
(``network_data_format.outputs.pred.channel_def``): ``liver`` → 1, ``spleen`` → 2, anything
else → background.

Safety: the weights are read once, hashed (``model_id``) and unpickled with
``torch.load(weights_only=True)``; TorchScript files (``model.ts``) are refused. A bundle's
config is code all the same (MONAI evaluates its ``$`` expressions): run bundles you trust.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from screening.constants import ORGAN_LABELS
from screening.errors import ModelFileError

if TYPE_CHECKING:
    from screening.model.inference import SegmentationResult
    from screening.preprocess import Prepared

__all__ = ["BundleBackend", "is_monai_bundle", "load_bundle"]

_CONFIGS = ("configs/inference.json", "configs/inference.yaml")
_METADATA = "configs/metadata.json"
_WEIGHTS = "models/model.pt"
#: Our label values for the organ names a bundle's ``channel_def`` may use.


def _config_file(root: Path) -> Path | None:
    return next((root / c for c in _CONFIGS if (root / c).is_file()), None)


def is_monai_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a MONAI bundle (an inference config and metadata)."""
    root = Path(path)
    return _config_file(root) is not None and (root / _METADATA).is_file()


@dataclass(frozen=True, eq=False)
class BundleBackend:
    """A loaded MONAI bundle; ``model_id`` is the sha256 of ``models/model.pt``."""

    root: Path
    parser: Any
    network: Any
    channel_labels: dict[int, int]  # network output channel → our label
    weights_sha256: str
    kind: str = field(default="monai_bundle", init=False)

    @property
    def model_id(self) -> str:
        return self.weights_sha256

    @property
    def organs(self) -> tuple[str, ...]:
        names = {v: k for k, v in ORGAN_LABELS.items()}
        return tuple(
            sorted({names[v] for v in self.channel_labels.values()}, key=list(names.values()).index)
        )

    @property
    def training_domain(self) -> str:
        return "unknown"

    @property
    def preprocess_cfg(self) -> None:
        return None  # the bundle preprocesses itself

    def producer(self) -> dict[str, Any]:
        config = _config_file(self.root)
        assert config is not None
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
            "channels": {str(k): v for k, v in sorted(self.channel_labels.items())},
        }

    def segment(
        self,
        ct_hu: NDArray[np.int16] | None,
        spacing_mm: tuple[float, float, float],
        *,
        device: str,
        threads: int | None,
        prep: Prepared | None = None,  # never given: this model preprocesses itself
    ) -> SegmentationResult:
        import time

        import nibabel as nib
        import torch

        from screening.geometry import nifti_affine_from_canonical
        from screening.model.inference import SegmentationResult, need_ct, torch_threads

        ct_hu = need_ct(ct_hu)

        t0 = time.perf_counter()
        with torch_threads(threads), tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
            image = Path(tmp) / "image.nii.gz"
            affine = nifti_affine_from_canonical(spacing_mm, (0.0, 0.0, 0.0))
            nib.save(nib.Nifti1Image(np.ascontiguousarray(ct_hu.transpose(2, 1, 0)), affine), image)
            # A SaveImaged in the bundle's postprocessing writes here, then is discarded.
            # Parsed afresh per scan, once: Invertd's @preprocessing must be the very
            # object that transformed the input.
            self.parser["output_dir"] = tmp
            self.parser.parse(reset=True)
            pre = self.parser.get_parsed_content("preprocessing")
            inferer = self.parser.get_parsed_content("inferer")
            post = self.parser.get_parsed_content("postprocessing")
            data = pre({"image": str(image)})
            self.network.to(device)
            with torch.inference_mode():
                x = data["image"][None].to(device)
                data["pred"] = inferer(x, self.network)[0].cpu()
            out = post(data)
            pred = np.asarray(
                out["pred"].detach().cpu().numpy()
                if hasattr(out["pred"], "detach")
                else out["pred"]
            )
        channels = pred[0] if pred.ndim == 4 and pred.shape[0] == 1 else None
        if channels is None:  # one-hot / per-channel output: arg-max it here
            channels = np.argmax(pred, axis=0) if pred.ndim == 4 else pred
        index = np.rint(channels).astype(np.int64).transpose(2, 1, 0)  # back to (z, y, x)
        if index.shape != ct_hu.shape:
            raise ModelFileError(
                f"the bundle's postprocessing returned a {index.shape} prediction for a "
                f"{ct_hu.shape} scan: it must invert its spatial transforms (Invertd)",
                path=_config_file(self.root),
            )
        labels = np.zeros(ct_hu.shape, dtype=np.uint8)
        for channel, label in self.channel_labels.items():
            labels[index == channel] = label
        seconds = {"inference_s": time.perf_counter() - t0}
        return SegmentationResult(labels, seconds, device)


def _channel_labels(metadata: dict[str, Any], path: Path) -> dict[int, int]:
    try:
        channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError) as e:
        raise ModelFileError(
            "metadata has no network_data_format.outputs.pred.channel_def: cannot tell which "
            "output is the liver",
            path=path,
        ) from e
    out = {}
    for channel, name in channel_def.items():
        label = ORGAN_LABELS.get(str(name).strip().lower())
        if label is not None:
            out[int(channel)] = label
    if 1 not in out.values():
        raise ModelFileError(
            f"the bundle has no 'liver' output channel (channel_def: {channel_def})", path=path
        )
    return out


def load_bundle(root: str | os.PathLike[str], *, device: str = "cpu") -> BundleBackend:
    """Load a MONAI bundle folder as a backend; ModelFileError naming the file when a part is
    missing or unusable."""
    import torch
    from monai.bundle import ConfigParser

    base = Path(root)
    config = _config_file(base)
    if config is None:
        raise ModelFileError(f"not a MONAI bundle: no {' or '.join(_CONFIGS)}", path=base)
    try:
        metadata = json.loads((base / _METADATA).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read the bundle metadata: {e}", path=base / _METADATA) from e
    channels = _channel_labels(metadata, base / _METADATA)
    weights = base / _WEIGHTS
    if not weights.is_file():
        ts = weights.with_suffix(".ts")
        hint = " (TorchScript models are not loaded: they carry code)" if ts.is_file() else ""
        raise ModelFileError(f"the bundle has no {_WEIGHTS}{hint}", path=weights)
    data = weights.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"weights are not a weights-only state dict: {e}", path=weights) from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # CheckpointSaver's {"model": ...} layout
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.read_meta(str(base / _METADATA))
    parser["bundle_root"] = str(base)
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
        network.load_state_dict(state, strict=True)
    except Exception as e:
        raise ModelFileError(
            f"the bundle's network_def does not load its weights: {e}", path=config
        ) from e
    network.eval().to(device)
    return BundleBackend(base, parser, network, channels, hashlib.sha256(data).hexdigest())
