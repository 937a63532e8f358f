"""``screening run``, ``screening screen`` and ``screening compact``: the cohort run."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from screening.cli.options import (
    DEFAULT_HELP,
    FILE_ONLY,
    MODEL_HELP,
    FromConfig,
    ProgressBar,
    add_cluster_options,
    add_measure_options,
    add_nnunet_options,
    close_log,
    cluster_config,
    given,
    log_to_file,
    measure_config,
    nnunet_config,
)
from screening.errors import ConfigError, ScreeningError
from screening.model.backends import DEFAULT_MODEL

if TYPE_CHECKING:
    from screening.pipeline import RunConfig

log = logging.getLogger("screening")


def _run_config(args: argparse.Namespace) -> RunConfig:
    from screening.model import InferenceConfig
    from screening.pipeline import RunConfig
    from screening.reasons import Segmenter

    segment_fn = None
    if args.segment_fn:
        import importlib

        module, _, name = args.segment_fn.partition(":")
        try:
            segment_fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(
                f"--segment-fn {args.segment_fn!r}: expected MODULE:FUNCTION importable here "
                f"and on every worker ({e})"
            ) from e
    return RunConfig(
        segmenter=Segmenter.CUSTOM if segment_fn else Segmenter(str(args.segmenter)),
        model=args.model,
        inference=InferenceConfig(cascade=not args.no_cascade),
        measure=measure_config(args),
        nnunet=nnunet_config(args),
        overlays=not args.no_overlays,
        max_in_flight=args.max_in_flight,
        **given(args, device="device"),
        segment_fn=segment_fn,
        segment_fn_name=args.segment_fn,
    )


def _run_on_cluster(args: argparse.Namespace, store: str, results: str) -> int:
    """Shared by ``run`` and ``screen``: cluster, progress, summary, exit code."""
    from screening.pipeline import run_cohort
    from screening.runtime import open_client

    cfg = _run_config(args)
    handler = log_to_file(results)
    log_file = handler.baseFilename
    progress = ProgressBar(not args.quiet and sys.stderr.isatty())
    try:
        with open_client(cluster_config(args)) as client:
            summary = run_cohort(store, results, cfg, client, progress=progress)
        FILE_ONLY.info("summary: %s", summary.describe())
    finally:
        progress.close()
        log_file = close_log(handler, results)
    print(summary.describe())
    _print_prevalence(results, store, summary.pipeline_id)
    print(
        f"results: {results}/measurements, {results}/failures (Parquet), overlays under "
        f"{results}/overlays; log: {log_file}"
    )
    print(
        f'next: screening query {results} --store {store} "select ..." (screening query --examples)'
    )
    return 130 if summary.interrupted else 0


def _print_prevalence(results: str, store: str, pid: str) -> None:
    from screening.stats import format_prevalence, prevalence_table

    try:
        table = prevalence_table(results, store, by="site", pipeline_id=pid)
    except ScreeningError as e:  # e.g. nothing measured yet
        log.info("no prevalence table: %s", e)
        return
    print(format_prevalence(table, "site", "ai_roi"))


def _run(args: argparse.Namespace) -> int:
    return _run_on_cluster(args, args.store, args.out)


def _screen(args: argparse.Namespace) -> int:
    """Ingest SOURCE... into OUT/store, run into OUT/results, then OUT/stats and
    OUT/report.html (statistics with --reference reads when given)."""
    import os
    from pathlib import Path

    from screening.ingest import ingest, load_key, read_manifest

    out = Path(args.out)
    store, results = str(out / "store"), str(out / "results")
    key = load_key(args.key_file, os.environ.get("SCREENING_KEY"))
    manifest = read_manifest(args.manifest, args.cohort) if args.manifest else []
    summary = ingest(
        args.sources,
        store,
        cohort=args.cohort,
        manifest=manifest,
        key=key,
        cluster=cluster_config(args),
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(summary.describe())
    code = _run_on_cluster(args, store, results)
    if code != 0:
        return code
    from screening.stats.compute import compute_stats
    from screening.stats.report import render_report

    stats = compute_stats(results, out / "stats", reference=args.reference)
    print(stats.describe())
    report = render_report(out / "stats", results, out / "report.html")
    print(f"report: {report}")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from screening.store import compact_results

    dropped = compact_results(args.results)
    print(
        "compacted "
        + ", ".join(f"{name}: {n} superseded row(s) dropped" for name, n in dropped.items())
    )
    return 0


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    parser.add_argument(
        "--segmenter",
        choices=("unet", "reference"),
        default=FromConfig("screening.pipeline.run:RunConfig", "segmenter"),
        help="unet: segment with --model; reference: measure masks given at ingest; "
        + DEFAULT_HELP,
    )
    parser.add_argument(
        "--segment-fn",
        metavar="MODULE:FUNCTION",
        help="your own segmentation function (ct_hu, spacing_mm) -> labels; importable on "
        "every worker",
    )
    parser.add_argument("--no-cascade", action="store_true", help="skip the coarse pass")
    parser.add_argument(
        "--device",
        default=FromConfig("screening.pipeline.run:RunConfig", "device"),
        help="auto, cpu or cuda; " + DEFAULT_HELP,
    )
    add_measure_options(parser)
    parser.add_argument(
        "--max-in-flight", type=int, help="scans submitted at once (default: 4 per worker)"
    )
    parser.add_argument(
        "--gpu-workers", type=int, help="local GPU workers (default: one per visible GPU)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_nnunet_options(parser)
    add_cluster_options(parser)


def add_commands(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run every scan of a store through segment + measure on Dask, into RESULTS",
        description="Preprocess (CPU) -> segment (GPU workers when present) -> measure, one "
        "scan at a time per worker, streaming rows into RESULTS/measurements and "
        "RESULTS/failures (Parquet). Re-running resumes: scans already committed for the "
        "same pipeline are skipped. Exit code 0 even when some scans fail (see the summary); "
        "130 when interrupted; 2 when the run itself cannot proceed.",
    )
    run.add_argument("store", help="scan store folder (from screening ingest)")
    run.add_argument("--out", required=True, help="results folder")
    add_run_options(run)
    run.set_defaults(func=_run)

    scr = sub.add_parser(
        "screen",
        help="one shot for small cohorts: ingest SOURCE... and run, into OUT/store, OUT/results",
    )
    scr.add_argument("sources", nargs="*", metavar="SOURCE", help="folder, NIfTI file or archive")
    scr.add_argument("--out", required=True, help="output folder (store/ and results/ inside)")
    scr.add_argument("--cohort", default="default", help="cohort name (default: 'default')")
    scr.add_argument("--manifest", help="CSV: image[, liver_mask, spleen_mask, cohort, site, ...]")
    scr.add_argument("--key-file", help="pseudonymisation key file (else $SCREENING_KEY)")
    scr.add_argument("--reference", help="expert reads (reader, roi_hu, key) for the statistics")
    add_run_options(scr)
    scr.set_defaults(func=_screen)

    cmp = sub.add_parser(
        "compact",
        help="merge RESULTS' small Parquet part files, keeping the latest row per scan+pipeline",
    )
    cmp.add_argument("results", help="results folder")
    cmp.set_defaults(func=_compact)
