"""nnU-Net v2 result folders as a segmentation backend (TotalSegmentator's task folders too).

A folder as nnU-Net writes it — ``plans.json``, ``dataset.json``, ``fold_*/checkpoint_final.pth``
(e.g. ``Dataset291_TotalSegmentator_part1_organs_1559subj/nnUNetTrainerNoMirroring__nnUNetPlans
__3d_fullres`` under ``~/.totalsegmentator/nnunet/results``) — is run through nnunetv2's own
predictor (``nnUNetPredictor.manual_initialization`` + ``predict_single_npy_array``): its
cropping, normalisation, resampling, sliding window with Gaussian weighting, fold ensemble and
mirroring, and its resampling of the logits back to the input grid. Only the loading is ours:

- **Safety.** nnunetv2 unpickles checkpoints with the default ``torch.load`` (code can run);
  here each checkpoint is read once, hashed and loaded with ``weights_only=True``, with numpy's
  scalar and dtype reconstructors allow-listed (nnU-Net's training log holds numpy floats; they
  rebuild data, never call code). ``model_id`` is the sha256 over ``plans.json``,
  ``dataset.json`` and every checkpoint used.
- **Orientation.** nnU-Net does not reorient: a model expects the axis directions of the
  arrays it was trained on, in nnU-Net's ``(z, y, x)`` order. ``NnUNetConfig.orientation``
  names them as axis codes for (x, y, z): ``RAS`` (the default) for models trained on
  nibabel-canonical images — TotalSegmentator, and any plans whose reader is
  ``NibabelIOWithReorient`` — or ``LPS`` for images read as DICOM stores them.
- **Labels** are mapped by name from ``dataset.json`` (``"liver"`` → 1, ``"spleen"`` → 2, the
  scan store's labels; every other structure → background). A folder without a ``liver``
  label, or trained on regions, is refused with the file named.

nnunetv2 is an optional extra (``pip install 'screening[nnunet]'``); without it loading a
folder says so before any scan is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.errors import ModelFileError, attempt_import
from screening.model.network import LABELS

if TYPE_CHECKING:
    from screening.model.inference import SegmentationResult
    from screening.preprocess import Prepared

__all__ = ["NnUNetBackend", "NnUNetConfig", "is_nnunet_folder", "load_nnunet"]

PLANS = "plans.json"
DATASET = "dataset.json"
EXTRA = "nnunet"
_AXIS_CODES = ("LR", "PA", "SI")  # our canonical direction first, then its flip
_FOLD_DIR = re.compile(r"^fold_(\d+|all)$")
LABELS_LIVER = next(v for v, name in LABELS.items() if name == "liver")


@dataclass(frozen=True, kw_only=True)
class NnUNetConfig(FrozenConfig):
    """How an nnU-Net v2 folder is run.

    Parameters
    ----------
    folds
        Folds to ensemble (``"0"``, ``"all"``); None: every ``fold_<n>`` holding the
        checkpoint, as nnU-Net itself picks them (``fold_all`` only when it is the only one).
    checkpoint
        Checkpoint file name inside each fold folder.
    orientation
        Axis codes for (x, y, z) of the arrays the model was trained on (see the module
        docstring); ``RAS`` for TotalSegmentator.
    use_mirroring
        nnU-Net's mirroring test-time augmentation, on the axes the checkpoint allows (up to
        8 passes: nnU-Net's default, slow on CPU).
    tile_step_size
        Sliding-window step as a fraction of the patch (nnU-Net's default 0.5).
    """

    folds: tuple[str, ...] | None = None
    checkpoint: str = "checkpoint_final.pth"
    orientation: str = "RAS"
    use_mirroring: bool = True
    tile_step_size: float = 0.5

    def __post_init__(self) -> None:
        code = self.orientation.upper()
        require(
            len(code) == 3 and all(c in pair for c, pair in zip(code, _AXIS_CODES, strict=True)),
            f"orientation must be axis codes for x, y, z such as RAS or LPS, got "
            f"{self.orientation!r}",
        )
        require(0.0 < self.tile_step_size <= 1.0, "tile_step_size must be in (0, 1]")
        require(
            self.folds is None or all(_FOLD_DIR.match(f"fold_{f}") for f in self.folds),
            f"folds must be fold numbers or 'all', got {self.folds!r}",
        )


def _flip_axes(orientation: str) -> tuple[int, ...]:
    """Axes of a canonical ``(z, y, x)`` LPS array to flip for ``orientation`` (x, y, z codes)."""
    flips = [c != pair[0] for c, pair in zip(orientation.upper(), _AXIS_CODES, strict=True)]
    return tuple(axis for axis, flip in zip((2, 1, 0), flips, strict=True) if flip)


def to_model_orientation(volume: NDArray[Any], orientation: str) -> NDArray[Any]:
    """Canonical ``(z, y, x)`` LPS → the model's axis directions (its own inverse)."""
    axes = _flip_axes(orientation)
    return np.flip(volume, axis=axes) if axes else volume


def _fold_dirs(root: Path, checkpoint: str) -> list[str]:
    found = sorted(
        (m.group(1) for d in root.iterdir() if (m := _FOLD_DIR.match(d.name))),
        key=lambda f: (f == "all", int(f) if f.isdigit() else 0),
    )
    found = [f for f in found if (root / f"fold_{f}" / checkpoint).is_file()]
    numbered = [f for f in found if f != "all"]
    return numbered or found


def is_nnunet_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like an nnU-Net v2 result folder (plans, dataset, a fold)."""
    root = Path(path)
    return (
        (root / PLANS).is_file()
        and (root / DATASET).is_file()
        and any(_FOLD_DIR.match(d.name) for d in root.iterdir() if d.is_dir())
    )


def _read_json(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        data = path.read_bytes()
        return json.loads(data), data
    except FileNotFoundError as e:
        raise ModelFileError(f"the nnU-Net folder has no {path.name}", path=path) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read {path.name}: {e}", path=path) from e


def _label_map(dataset: dict[str, Any], path: Path) -> dict[int, int]:
    """nnU-Net label value → the scan store's label, by name."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict):
        raise ModelFileError("dataset.json has no 'labels' mapping", path=path)
    if "regions_class_order" in dataset or any(
        isinstance(v, list | tuple) for v in labels.values()
    ):
        raise ModelFileError(
            "region-based nnU-Net models (labels given as lists, regions_class_order) are not "
            "supported: train on plain labels",
            path=path,
        )
    ours = {name: value for value, name in LABELS.items() if value != 0}
    out = {
        int(value): ours[str(name).strip().lower()]
        for name, value in labels.items()
        if str(name).strip().lower() in ours
    }
    if LABELS_LIVER not in out.values():
        raise ModelFileError(
            f"dataset.json has no 'liver' label (labels: {sorted(labels)[:12]}…): pick the "
            "folder of the task that segments the liver (TotalSegmentator: Dataset291, "
            "part1 organs)",
            path=path,
        )
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """nnunetv2 prints (missing nnUNet_raw paths, CPU notices): keep it off the worker's
    stdout; our own logging says what happened."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _import_nnunetv2() -> Any:
    with _quiet():
        attempt_import("nnunetv2", EXTRA)
        from nnunetv2.inference import predict_from_raw_data

    return predict_from_raw_data


def _numpy_reconstructors() -> list[Any]:
    """numpy's scalar / array / dtype rebuilders, under numpy 2's and numpy 1's module names
    (checkpoints saved under numpy 1, TotalSegmentator's among them, say ``numpy.core``)."""
    import importlib

    multiarray = importlib.import_module("numpy._core.multiarray")
    safe: list[Any] = [np.dtype, np.ndarray]
    safe += [type(np.dtype(t)) for t in ("f8", "f4", "f2", "i8", "i4", "i2", "u1", "b1")]
    for name in ("scalar", "_reconstruct"):
        fn = getattr(multiarray, name)
        safe += [fn, (fn, f"numpy.core.multiarray.{name}")]
    return safe


def _load_checkpoint(data: bytes, path: Path) -> dict[str, Any]:
    """A checkpoint unpickled as data only (numpy values allowed, nothing callable)."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_reconstructors()):
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(
            f"not a weights-only nnU-Net checkpoint (refused to unpickle code): {e}", path=path
        ) from e
    keys = ("network_weights", "trainer_name", "init_args")
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ModelFileError(f"not an nnU-Net checkpoint: no {missing}", path=path)
    return ckpt


@dataclass(frozen=True, eq=False)
class NnUNetBackend:
    """A loaded nnU-Net v2 folder; ``model_id`` hashes its plans, dataset and checkpoints."""

    root: Path
    predictor: Any
    label_map: dict[int, int]  # nnU-Net label value → our label
    config: NnUNetConfig
    digest: str
    configuration: str
    kind: str = field(default="nnunet", init=False)

    @property
    def model_id(self) -> str:
        return self.digest

    @property
    def organs(self) -> tuple[str, ...]:
        return tuple(LABELS[v] for v in sorted(set(self.label_map.values())))

    @property
    def training_domain(self) -> str:
        return "unknown"

    @property
    def preprocess_cfg(self) -> None:
        return None  # nnU-Net preprocesses itself

    def producer(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_id": self.model_id,
            "configuration": self.configuration,
            "labels": {str(k): v for k, v in sorted(self.label_map.items())},
            "config": self.config.to_dict(),
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
        import torch

        from screening.model.inference import SegmentationResult, need_ct, torch_threads

        ct_hu = need_ct(ct_hu)

        t0 = time.perf_counter()
        image = to_model_orientation(ct_hu, self.config.orientation).astype(np.float32)[None]
        self.predictor.device = torch.device(device)
        self.predictor.perform_everything_on_device = device.startswith("cuda")
        with torch_threads(threads), _quiet():
            values = self.predictor.predict_single_npy_array(
                np.ascontiguousarray(image), {"spacing": [float(s) for s in spacing_mm]}
            )
        values = to_model_orientation(np.asarray(values), self.config.orientation)
        if values.shape != ct_hu.shape:
            raise ModelFileError(
                f"nnU-Net returned a {values.shape} prediction for a {ct_hu.shape} scan",
                path=self.root,
            )
        labels = np.zeros(ct_hu.shape, dtype=np.uint8)
        for value, label in self.label_map.items():
            labels[values == value] = label
        return SegmentationResult(labels, {"inference_s": time.perf_counter() - t0}, device)


def load_nnunet(
    root: str | os.PathLike[str], *, device: str = "cpu", config: NnUNetConfig | None = None
) -> NnUNetBackend:
    """Load an nnU-Net v2 result folder as a backend; ModelFileError naming the file when a
    part is missing or unusable, MissingDependencyError naming the extra without nnunetv2."""
    import torch

    cfg = config or NnUNetConfig()
    base = Path(root)
    plans, plans_bytes = _read_json(base / PLANS)
    dataset, dataset_bytes = _read_json(base / DATASET)
    label_map = _label_map(dataset, base / DATASET)
    folds = list(cfg.folds) if cfg.folds is not None else _fold_dirs(base, cfg.checkpoint)
    if not folds:
        raise ModelFileError(f"the nnU-Net folder has no fold_*/{cfg.checkpoint}", path=base)
    predict = _import_nnunetv2()  # after the cheap checks: a broken folder fails fast

    digest = hashlib.sha256(plans_bytes + dataset_bytes)
    checkpoints = []
    for fold in folds:
        path = base / f"fold_{fold}" / cfg.checkpoint
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelFileError(
                f"cannot read the checkpoint of fold {fold}: {e}", path=path
            ) from e
        digest.update(hashlib.sha256(data).digest())
        checkpoints.append((path, _load_checkpoint(data, path)))

    first_path, first = checkpoints[0]
    trainer_name = str(first["trainer_name"])
    configuration = str(first["init_args"].get("configuration", ""))
    plans_manager = predict.PlansManager(plans)
    try:
        configuration_manager = plans_manager.get_configuration(configuration)
        label_manager = plans_manager.get_label_manager(dataset)
        n_inputs = predict.determine_num_input_channels(
            plans_manager, configuration_manager, dataset
        )
    except Exception as e:
        raise ModelFileError(
            f"plans.json does not describe configuration {configuration!r}: {e}", path=base / PLANS
        ) from e
    if n_inputs != 1:
        raise ModelFileError(
            f"the model takes {n_inputs} input channels; a CT scan is one", path=base / DATASET
        )
    import nnunetv2

    trainer = predict.recursive_find_python_class(
        os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"),
        trainer_name,
        "nnunetv2.training.nnUNetTrainer",
    )
    if trainer is None:
        raise ModelFileError(
            f"trainer {trainer_name!r} is not part of the installed nnunetv2", path=first_path
        )
    network = trainer.build_network_architecture(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        n_inputs,
        label_manager.num_segmentation_heads,
        enable_deep_supervision=False,
    )
    for path, ckpt in checkpoints:  # every fold must fit the network the plans describe
        try:
            network.load_state_dict(ckpt["network_weights"])
        except Exception as e:
            raise ModelFileError(f"weights do not fit the plans' network: {e}", path=path) from e
    decoder = getattr(network, "decoder", None)
    if decoder is not None and hasattr(decoder, "deep_supervision"):  # one output only
        decoder.deep_supervision = False
    network.eval()
    with _quiet():
        predictor = predict.nnUNetPredictor(
            tile_step_size=cfg.tile_step_size,
            use_gaussian=True,
            use_mirroring=cfg.use_mirroring,
            perform_everything_on_device=device.startswith("cuda"),
            device=torch.device(device),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        predictor.manual_initialization(
            network,
            plans_manager,
            configuration_manager,
            [ckpt["network_weights"] for _, ckpt in checkpoints],
            dataset,
            trainer_name,
            first.get("inference_allowed_mirroring_axes"),
        )
    return NnUNetBackend(base, predictor, label_map, cfg, digest.hexdigest(), configuration)
