"""The ``screening`` command: parse arguments into config objects and call the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from screening._version import __version__
from screening.errors import ScreeningError

if TYPE_CHECKING:
    from screening.engine import ClusterConfig

log = logging.getLogger("screening")


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
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(summary.describe())
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from screening.ingest import generate_key_file

    path = generate_key_file(args.file)
    print(
        f"wrote a new pseudonymisation key to {path} (owner-readable only). Keep it outside the "
        "scan store and back it up: every run on a store must use the same key."
    )
    return 0


def _cluster_config(args: argparse.Namespace) -> ClusterConfig:
    from screening.engine import ClusterConfig

    return ClusterConfig(scheduler=args.scheduler, workers=args.workers)


def _ingest(args: argparse.Namespace) -> int:
    import os

    from screening.ingest import ingest, load_key, read_manifest

    key = load_key(args.key_file, os.environ.get("SCREENING_KEY"))
    manifest = read_manifest(args.manifest, args.cohort) if args.manifest else []
    summary = ingest(
        args.sources,
        args.store,
        cohort=args.cohort,
        manifest=manifest,
        key=key,
        cluster=_cluster_config(args),
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(summary.describe())
    return 0


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="worker processes of the local cluster (default: one per core)"
    )
    where.add_argument(
        "--scheduler", help="address of an existing Dask scheduler (tcp://host:8786)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="screening",
        description="Screen CT archives for hepatic steatosis (liver attenuation <= 40 HU).",
    )
    parser.add_argument("--version", action="version", version=f"screening {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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
        help="share of subjects with steatosis (liver <= 40 HU), default 0.25",
    )
    synth.add_argument("--cohort", default="synthetic", help="cohort name in manifest.csv")
    synth.add_argument(
        "--repeat-fraction",
        type=float,
        default=0.0,
        help="share of cases that rescan the previous subject (repeatability)",
    )
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    keygen = sub.add_parser(
        "keygen",
        help="write a new pseudonymisation key file (HMAC-SHA256 key for scan and patient ids)",
        description="Write 256 random bits as hex to FILE (mode 600). Refuses to overwrite.",
    )
    keygen.add_argument("file", help="key file to create")
    keygen.set_defaults(func=_keygen)

    ing = sub.add_parser(
        "ingest",
        help="DICOM/NIfTI folders, archives and manifests -> validated zarr scan stores",
        description="Discover CT series under each SOURCE (DICOM folder trees of any depth, "
        "NIfTI files, .zip/.tar archives) and/or the rows of a manifest CSV; validate them, "
        "convert to HU in canonical LPS orientation and write one zarr scan store per series "
        "under STORE/scans/, plus the scans table (Parquet) under STORE/catalog/. Rejected "
        "series are rows with a reason code. Re-running skips complete stores. DICOM needs a "
        "pseudonymisation key (--key-file or $SCREENING_KEY; make one with `screening keygen`).",
    )
    ing.add_argument("sources", nargs="*", metavar="SOURCE", help="folder, NIfTI file or archive")
    ing.add_argument("--store", required=True, help="scan store folder (created if missing)")
    ing.add_argument("--cohort", default="default", help="cohort name (default: 'default')")
    ing.add_argument(
        "--manifest",
        help="CSV with 'image' and optional liver_mask, spleen_mask, liver_label, spleen_label, "
        "cohort, site, patient_id; other columns pass through to the scans table",
    )
    ing.add_argument("--key-file", help="pseudonymisation key file (else $SCREENING_KEY)")
    _add_cluster_options(ing)
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.set_defaults(func=_ingest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # Dask's own start/stop chatter; warnings still show
        import os

        # distributed sets its loggers' levels from its config when first imported
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for name in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ScreeningError as e:
        print(f"screening {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
