"""``screening train`` and ``screening segment``: the models, one machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from screening.cli.options import (
    DEFAULT_HELP as D,
)
from screening.cli.options import (
    MODEL_HELP,
    FromConfig,
    add_model_options,
    add_nnunet_options,
    floats,
    given,
    ints,
    nnunet_config,
)
from screening.model.backends import DEFAULT_MODEL


def _train(args: argparse.Namespace) -> int:
    import shlex

    from screening.model import NetworkConfig, TrainConfig, train
    from screening.pipeline.training import training_store
    from screening.preprocess import PreprocessConfig

    net = NetworkConfig(
        **given(args, channels="channels", strides="strides", num_res_units="res_units")
    )
    prep = PreprocessConfig(**given(args, spacing_mm="spacing_mm", window_hu="window_hu"))
    cfg = TrainConfig(
        **given(
            args,
            epochs="epochs",
            iters_per_epoch="iters_per_epoch",
            batch_size="batch_size",
            patch_zyx="patch",
            lr="lr",
            seed="seed",
        )
    )
    command = "screening " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    progress = not args.quiet and sys.stderr.isatty()
    result = train(
        training_store(args.data, Path(args.out), progress=progress),
        args.out,
        cfg=cfg,
        network_cfg=net,
        preprocess_cfg=prep,
        device=args.device,
        threads=args.threads,
        progress=progress,
        command=command,
        card_notes=args.notes,
    )
    print(result.describe())
    return 0


def _segment(args: argparse.Namespace) -> int:
    from screening.model import InferenceConfig, load_backend, resolve_device, segment_stores

    device = resolve_device(args.device)
    cfg = InferenceConfig(cascade=not args.no_cascade, **given(args, overlap="overlap"))
    backend = load_backend(args.model, device=device, inference=cfg, nnunet=nnunet_config(args))
    summary = segment_stores(
        args.store,
        backend,
        device=device,
        threads=args.threads,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(summary.describe())
    return 0


def add_commands(sub: Any) -> None:
    tr = sub.add_parser(
        "train",
        help="train the residual 3-D U-Net (liver, spleen) on labelled scans",
        description="Train on a scan store whose scans carry seg_reference masks, or on a "
        "manifest CSV (ingested first into OUT/data-store). OUT becomes a model directory "
        "(weights.pt + model_card.json) holding the best validation checkpoint; re-running the "
        "same command resumes an interrupted run.",
    )
    tr.add_argument("--data", required=True, help="scan store folder or manifest .csv")
    tr.add_argument("--out", required=True, help="model directory to write")
    tr.add_argument(
        "--epochs",
        type=int,
        default=FromConfig("screening.model.train:TrainConfig", "epochs"),
        help=D,
    )
    tr.add_argument(
        "--iters-per-epoch",
        type=int,
        default=FromConfig("screening.model.train:TrainConfig", "iters_per_epoch"),
        help=D,
    )
    tr.add_argument(
        "--batch-size",
        type=int,
        default=FromConfig("screening.model.train:TrainConfig", "batch_size"),
        help=D,
    )
    tr.add_argument(
        "--patch",
        type=ints,
        default=FromConfig("screening.model.train:TrainConfig", "patch_zyx"),
        help="z,y,x voxels; " + D,
    )
    tr.add_argument(
        "--lr", type=float, default=FromConfig("screening.model.train:TrainConfig", "lr"), help=D
    )
    tr.add_argument(
        "--seed", type=int, default=FromConfig("screening.model.train:TrainConfig", "seed"), help=D
    )
    tr.add_argument(
        "--spacing-mm",
        type=floats,
        default=FromConfig("screening.preprocess:PreprocessConfig", "spacing_mm"),
        help="model grid z,y,x in mm; " + D,
    )
    tr.add_argument(
        "--window-hu",
        type=floats,
        default=FromConfig("screening.preprocess:PreprocessConfig", "window_hu"),
        help="low,high HU; " + D,
    )
    tr.add_argument(
        "--channels",
        type=ints,
        default=FromConfig("screening.model.network:NetworkConfig", "channels"),
        help=D,
    )
    tr.add_argument(
        "--strides",
        type=ints,
        default=FromConfig("screening.model.network:NetworkConfig", "strides"),
        help=D,
    )
    tr.add_argument(
        "--res-units",
        type=int,
        default=FromConfig("screening.model.network:NetworkConfig", "num_res_units"),
        help=D,
    )
    tr.add_argument("--notes", default="", help="free text for the model card")
    add_model_options(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_train)

    seg = sub.add_parser(
        "segment",
        help="segment every scan of a store with a model (writes `seg` into each scan store)",
        description="Run the U-Net on every complete scan store under STORE, one after another "
        "on this machine (the distributed run is `screening run`).",
    )
    seg.add_argument("store", help="scan store folder")
    seg.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    seg.add_argument(
        "--no-cascade", action="store_true", help="skip the coarse pass (on by default: faster)"
    )
    seg.add_argument(
        "--overlap",
        type=float,
        default=FromConfig("screening.model.inference:InferenceConfig", "overlap"),
        help="sliding-window overlap; " + D,
    )
    add_model_options(seg)
    add_nnunet_options(seg)
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_segment)
