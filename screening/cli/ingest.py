"""``screening keygen`` and ``screening ingest``: archives into scan stores."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from screening.cli.options import add_cluster_options, cluster_config


def _keygen(args: argparse.Namespace) -> int:
    from screening.ingest import generate_key_file

    path = generate_key_file(args.file)
    print(
        f"wrote a new pseudonymisation key to {path} (owner-readable only). Keep it outside the "
        "scan store and back it up: every run on a store must use the same key."
    )
    return 0


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
        cluster=cluster_config(args),
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(summary.describe())
    return 0


def add_commands(sub: Any) -> None:
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
    add_cluster_options(ing)
    ing.add_argument("--quiet", action="store_true", help="no progress bar")
    ing.set_defaults(func=_ingest)
