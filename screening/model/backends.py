"""Segmentation backends: one registry of the model kinds a run can segment with.

A backend is a loaded, verified model behind one small interface (the way xarray registers
its I/O backends): what it records as the producer of a ``seg`` (folded into
``pipeline_id``), which organs it labels, the domain it was trained on, whether a CPU task can
prepare its input (``preprocess_cfg``), and how it segments a CT volume. The engine's worker
plugin loads one per worker and device; ``segment_store`` writes its masks.

Kinds:

- ``liver3mm`` — the shipped real-CT liver model (pyliverlesionseg's network, ported; liver
  only). The default of ``screening run`` and ``screening screen``.
- ``unet`` — a residual U-Net model directory written by ``screening train`` (liver and
  spleen); ``demo`` is the shipped one, trained on synthetic phantoms only.
- ``monai_bundle`` — a MONAI bundle folder (``configs/inference.json``, ``configs/metadata.json``,
  ``models/model.pt``), run with its own transforms (:mod:`screening.model.bundle`).
- ``nnunet`` — an nnU-Net v2 result folder (``plans.json``, ``dataset.json``,
  ``fold_*/checkpoint_final.pth``; TotalSegmentator's task folders), run by nnunetv2's own
  predictor (:mod:`screening.model.nnunet`; the ``nnunet`` extra).

``--model`` takes a kind's keyword (``liver3mm``, ``demo``) or a folder, which the kinds'
``detect`` recognise in registry order (:data:`BACKENDS`; a new kind is one more
:class:`BackendKind` entry: keyword, folder layout, detect, load). Every kind runs its network
on a GPU worker when the cluster has one; the ``reference`` and ``custom`` segmenters use none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from screening.errors import ModelFileError

if TYPE_CHECKING:
    from screening.model.checkpoint import LoadedModel
    from screening.model.inference import InferenceConfig, SegmentationResult
    from screening.model.liver3mm.inference import Liver3mmConfig
    from screening.model.liver3mm.model import Liver3mmModel
    from screening.model.nnunet import NnUNetConfig
    from screening.preprocess import Prepared, PreprocessConfig, PrepSpec

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "Backend",
    "BackendKind",
    "Liver3mmBackend",
    "LoadOptions",
    "UNetBackend",
    "load_backend",
    "model_kind",
    "segmentation_producer",
]

#: What ``screening run`` / ``screen`` segment with when no ``--model`` is given.
DEFAULT_MODEL = "liver3mm"


class Backend(Protocol):
    """A loaded segmentation model (see the module docstring)."""

    @property
    def kind(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def organs(self) -> tuple[str, ...]: ...

    @property
    def training_domain(self) -> str: ...

    @property
    def preprocess_cfg(self) -> PrepSpec | None: ...

    def producer(self) -> dict[str, Any]: ...

    def segment(
        self,
        ct_hu: NDArray[np.int16] | None,
        spacing_mm: tuple[float, float, float],
        *,
        device: str,
        threads: int | None,
        prep: Prepared | None = None,
    ) -> SegmentationResult: ...


def segmentation_producer(model: LoadedModel, cfg: InferenceConfig) -> dict[str, Any]:
    """What made a ``seg``: weights (fine and coarse), model-grid preprocessing, inference.

    Stored in the ``seg`` attributes and folded into ``pipeline_id``, so a run can name its
    pipeline before any scan is segmented and ``screening measure`` finds the same id later.
    """
    return {
        "model_id": model.model_id,
        "coarse_model_id": model.coarse.model_id if (cfg.cascade and model.coarse) else None,
        "preprocess": model.preprocess_cfg.to_dict(),
        "inference": cfg.to_dict(),
    }


@dataclass(frozen=True, eq=False)
class UNetBackend:
    """A ``screening train`` model directory (liver and spleen), with its inference settings."""

    model: LoadedModel
    inference: InferenceConfig
    kind: str = field(default="unet", init=False)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def organs(self) -> tuple[str, ...]:
        return ("liver", "spleen")

    @property
    def training_domain(self) -> str:
        # `screening train` records it; older cards (the demo's) say "synthetic" in their notes.
        card = self.model.card
        notes = str(card.get("notes", "")).lower()
        return str(card.get("training_domain") or ("synthetic" if "synthetic" in notes else "real"))

    @property
    def preprocess_cfg(self) -> PreprocessConfig:
        return self.model.preprocess_cfg

    def producer(self) -> dict[str, Any]:
        return segmentation_producer(self.model, self.inference)

    def segment(
        self,
        ct_hu: NDArray[np.int16] | None,
        spacing_mm: tuple[float, float, float],
        *,
        device: str,
        threads: int | None,
        prep: Prepared | None = None,
    ) -> SegmentationResult:
        from screening.model.inference import need_ct, segment_volume

        image = None if prep is None else prep.image
        return segment_volume(
            self.model, need_ct(ct_hu), spacing_mm, self.inference, device=device,
            threads=threads, prep=image,
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class Liver3mmBackend:
    """The shipped real-CT liver model (liver only; its own 3 mm preprocessing)."""

    model: Liver3mmModel
    config: Liver3mmConfig
    kind: str = field(default="liver3mm", init=False)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def organs(self) -> tuple[str, ...]:
        return ("liver",)

    @property
    def training_domain(self) -> str:
        return self.model.training_domain

    @property
    def preprocess_cfg(self) -> PrepSpec:
        return self.config.prep_spec()  # a CPU task writes the 3 mm image; the GPU runs the rest

    def producer(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_id": self.model_id, "config": self.config.to_dict()}

    def segment(
        self,
        ct_hu: NDArray[np.int16] | None,
        spacing_mm: tuple[float, float, float],
        *,
        device: str,
        threads: int | None,
        prep: Prepared | None = None,
    ) -> SegmentationResult:
        from screening.model.inference import SegmentationResult, torch_threads
        from screening.model.liver3mm.inference import segment_liver_3mm

        with torch_threads(threads):
            self.model.network.to(device)
            res = segment_liver_3mm(
                self.model.network, ct_hu, spacing_mm, self.config, device=device, prep=prep
            )
        labels = res.liver.astype(np.uint8)  # 1 = liver (network.LABELS); no spleen class
        return SegmentationResult(labels, res.seconds, device, res.body_box_zyx)


@dataclass(frozen=True)
class LoadOptions:
    """Everything a kind's loader may need (each takes what applies to it)."""

    device: str = "cpu"
    inference: InferenceConfig | None = None
    liver3mm: Liver3mmConfig | None = None
    nnunet: NnUNetConfig | None = None


@dataclass(frozen=True)
class BackendKind:
    """One registry entry: how to recognise a model of this kind and load it as a backend."""

    name: str
    #: The ``--model`` keyword of the model that ships with the package (None: folders only).
    keyword: str | None
    #: What a folder of this kind holds (for error messages and ``--help``).
    layout: str
    #: Whether ``path`` (a folder) holds a model of this kind; cheap (reads no weights).
    detect: Callable[[Path], bool]
    #: Load and verify; errors name the file.
    load: Callable[[str | os.PathLike[str], LoadOptions], Backend]


def _is_liver3mm(path: Path) -> bool:
    from screening.model.liver3mm.model import is_liver3mm_dir

    return is_liver3mm_dir(path)


def _load_liver3mm(model: str | os.PathLike[str], opts: LoadOptions) -> Backend:
    from screening.model.liver3mm.inference import Liver3mmConfig
    from screening.model.liver3mm.model import load_liver3mm

    ref = None if str(model) == "liver3mm" else Path(model)
    cfg = opts.liver3mm or Liver3mmConfig()
    return Liver3mmBackend(load_liver3mm(ref, device=opts.device), cfg)


def _is_unet(path: Path) -> bool:
    from screening.model.checkpoint import CARD_NAME

    return (path / CARD_NAME).is_file()


def _load_unet(model: str | os.PathLike[str], opts: LoadOptions) -> Backend:
    import dataclasses

    from screening.model.checkpoint import load_model
    from screening.model.inference import InferenceConfig

    cfg = opts.inference or InferenceConfig()
    loaded = load_model(model, device=opts.device, with_coarse=cfg.cascade)
    if cfg.cascade and loaded.coarse is None:  # no coarse sub-model: no cascade (in the id)
        cfg = dataclasses.replace(cfg, cascade=False)
    return UNetBackend(loaded, cfg)


def _is_bundle(path: Path) -> bool:
    from screening.model.bundle import is_monai_bundle

    return is_monai_bundle(path)


def _load_bundle(model: str | os.PathLike[str], opts: LoadOptions) -> Backend:
    from screening.model.bundle import load_bundle

    return load_bundle(model, device=opts.device)


def _is_nnunet(path: Path) -> bool:
    from screening.model.nnunet import is_nnunet_folder

    return path.is_dir() and is_nnunet_folder(path)


def _load_nnunet(model: str | os.PathLike[str], opts: LoadOptions) -> Backend:
    from screening.model.nnunet import load_nnunet

    return load_nnunet(model, device=opts.device, config=opts.nnunet)


#: The registry, in detection order (a liver3mm card is also a ``model_card.json``).
BACKENDS: dict[str, BackendKind] = {
    k.name: k
    for k in (
        BackendKind("liver3mm", "liver3mm", "a liver3mm model_card.json", _is_liver3mm,
                    _load_liver3mm),
        BackendKind("unet", "demo", "model_card.json + weights.pt (screening train)", _is_unet,
                    _load_unet),
        BackendKind("monai_bundle", None,
                    "a MONAI bundle (configs/inference.json + configs/metadata.json + "
                    "models/model.pt)", _is_bundle, _load_bundle),
        BackendKind("nnunet", None,
                    "an nnU-Net v2 result folder (plans.json + dataset.json + "
                    "fold_*/checkpoint_final.pth)", _is_nnunet, _load_nnunet),
    )
}  # fmt: skip


def model_kind(model: str | os.PathLike[str]) -> str:
    """The backend kind of a ``--model`` value: a kind's keyword, or what a folder holds."""
    from screening.model.checkpoint import CARD_NAME

    ref = str(model)
    for kind in BACKENDS.values():
        if kind.keyword == ref:
            return kind.name
    path = Path(ref)
    if path.is_file() and path.name == CARD_NAME:
        path = path.parent
    for kind in BACKENDS.values():
        if kind.detect(path):
            return kind.name
    keywords = ", ".join(k.keyword for k in BACKENDS.values() if k.keyword)
    layouts = "; ".join(k.layout for k in BACKENDS.values())
    raise ModelFileError(
        f"not a model: expected a keyword ({keywords}) or a folder holding one of: {layouts}",
        path=path,
    )


def load_backend(
    model: str | os.PathLike[str],
    *,
    device: str = "cpu",
    inference: InferenceConfig | None = None,
    liver3mm: Liver3mmConfig | None = None,
    nnunet: NnUNetConfig | None = None,
) -> Backend:
    """Load and verify the model ``model`` names, as a backend (errors name the file)."""
    opts = LoadOptions(device, inference, liver3mm, nnunet)
    return BACKENDS[model_kind(model)].load(model, opts)
