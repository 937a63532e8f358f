"""``screening measure``: attenuation of segmented scans, one machine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from screening.cli.options import add_measure_options, measure_config


def _measure(args: argparse.Namespace) -> int:
    from screening.measure import measure_stores
    from screening.reasons import Segmenter

    cfg = measure_config(args)
    summary = measure_stores(
        args.store,
        args.out,
        cfg,
        segmenter=Segmenter(args.segmenter),
        overlays=not args.no_overlays,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(summary.describe())
    print(f"results: {args.out}/measurements (Parquet), overlays under {args.out}/overlays")
    return 0


def add_commands(sub: Any) -> None:
    mea = sub.add_parser(
        "measure",
        help="measure liver/spleen attenuation of every segmented scan (Parquet + QC overlays)",
        description="AI-3D, AI-2D and AI-ROI liver attenuation, spleen, PDFF estimate, grade and "
        "QC flags for every complete scan store under STORE, one after another on this "
        "machine, from the U-Net's `seg` or the masks given at ingest (`seg_reference`). "
        "Writes RESULTS/measurements (Parquet) and RESULTS/overlays (PNG). Scans already "
        "measured with the same settings are skipped.",
    )
    mea.add_argument("store", help="scan store folder")
    mea.add_argument("--out", required=True, help="results folder")
    mea.add_argument(
        "--segmenter",
        choices=["unet", "reference"],
        default="unet",
        help="unet: the masks `screening segment` wrote; reference: masks given at ingest",
    )
    add_measure_options(mea)
    mea.add_argument("--quiet", action="store_true", help="no progress bar")
    mea.set_defaults(func=_measure)
