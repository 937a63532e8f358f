"""``screening synth``: a synthetic cohort with known truth."""

from __future__ import annotations

import argparse
from typing import Any

from screening.constants import STEATOSIS_THRESHOLD_HU


def _synth(args: argparse.Namespace) -> int:
    from screening.synthetic.cohort import generate_cohort

    summary = generate_cohort(
        args.out,
        n=args.n,
        seed=args.seed,
        prevalence=args.prevalence,
        size=args.size,
        cohort=args.cohort,
        repeat_fraction=args.repeat_fraction,
        n_corrupt=args.corrupt,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(summary.describe())
    return 0


def add_commands(sub: Any) -> None:
    synth = sub.add_parser(
        "synth",
        help="write a synthetic CT cohort with known truth (DICOM + NIfTI, masks, truth, reads)",
        description="Generate synthetic torso CT scans across simulated sites and scanners, with "
        "liver/spleen masks, truth.csv (true HU, volumes, labels) and simulated expert reads.",
    )
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--n", type=int, default=24, help="number of scans (default 24)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--size",
        choices=("small", "full"),
        default="small",
        help="small: ~128x128x48 at ~3 mm (tests, demo); full: 512x512 thin-slice",
    )
    synth.add_argument(
        "--prevalence",
        type=float,
        default=0.25,
        help=f"share of subjects with steatosis (liver <= {STEATOSIS_THRESHOLD_HU:g} HU), "
        "default 0.25",
    )
    synth.add_argument("--cohort", default="synthetic", help="cohort name in manifest.csv")
    synth.add_argument(
        "--repeat-fraction",
        type=float,
        default=0.0,
        help="share of cases that rescan the previous subject (repeatability)",
    )
    synth.add_argument(
        "--corrupt", type=int, default=0, help="DICOM series to damage on purpose (default 0)"
    )
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)
