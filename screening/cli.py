"""The ``screening`` command: parse arguments into config objects and call the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from screening._version import __version__
from screening.cli_results import add_results_commands
from screening.errors import ConfigError, ScreeningError
from screening.model.backends import DEFAULT_MODEL

if TYPE_CHECKING:
    from screening.engine import ClusterConfig, RunConfig, RunProgress
    from screening.measure import MeasureConfig
    from screening.model.nnunet import NnUNetConfig

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
        n_corrupt=args.corrupt,
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

    return ClusterConfig(
        scheduler=args.scheduler,
        workers=args.workers,
        gpu_workers=getattr(args, "gpu_workers", None),
        cluster_file=getattr(args, "cluster", None),
    )


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


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _train(args: argparse.Namespace) -> int:
    import shlex

    from screening.model import NetworkConfig, TrainConfig, train
    from screening.preprocess import PreprocessConfig

    net = NetworkConfig(channels=args.channels, strides=args.strides, num_res_units=args.res_units)
    prep = PreprocessConfig(spacing_mm=args.spacing_mm, window_hu=args.window_hu)
    cfg = TrainConfig(
        epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch,
        batch_size=args.batch_size,
        patch_zyx=args.patch,
        lr=args.lr,
        seed=args.seed,
    )
    command = "screening " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = train(
        args.data,
        args.out,
        cfg=cfg,
        network_cfg=net,
        preprocess_cfg=prep,
        device=args.device,
        threads=args.threads,
        progress=not args.quiet and sys.stderr.isatty(),
        command=command,
        card_notes=args.notes,
    )
    print(result.describe())
    return 0


def _segment(args: argparse.Namespace) -> int:
    from screening.model import InferenceConfig, load_backend, resolve_device, segment_stores

    device = resolve_device(args.device)
    cfg = InferenceConfig(cascade=args.cascade, overlap=args.overlap)
    backend = load_backend(args.model, device=device, inference=cfg, nnunet=_nnunet_config(args))
    summary = segment_stores(
        args.store,
        backend,
        device=device,
        threads=args.threads,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(summary.describe())
    return 0


def _measure(args: argparse.Namespace) -> int:
    from screening.measure import measure_stores
    from screening.reasons import Segmenter

    cfg = _measure_config(args)
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


def _run_config(args: argparse.Namespace) -> RunConfig:
    from screening.engine import RunConfig
    from screening.model import InferenceConfig
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
        segmenter=Segmenter.CUSTOM if segment_fn else Segmenter(args.segmenter),
        model=args.model,
        inference=InferenceConfig(cascade=not args.no_cascade),
        measure=_measure_config(args),
        nnunet=_nnunet_config(args),
        overlays=not args.no_overlays,
        device=args.device,
        max_in_flight=args.max_in_flight,
        segment_fn=segment_fn,
        segment_fn_name=args.segment_fn,
    )


class _ProgressBar:
    """done / failed / in flight / scans per minute: a tqdm bar on a terminal, else a log line
    every 30 s (log files and CI)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.last_log = 0.0

    def __call__(self, state: RunProgress) -> None:
        import time

        text = (
            f"{state.done} done, {state.failed} failed, {state.in_flight} in flight, "
            f"{state.scans_per_minute():.1f} scans/min"
        )
        if self.enabled:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=state.total, desc="run", unit="scan")
            self.bar.n = state.done + state.failed
            self.bar.set_postfix_str(text, refresh=True)
        elif time.monotonic() - self.last_log > 30 or state.in_flight == 0:
            self.last_log = time.monotonic()
            log.info("progress: %d/%d: %s", state.done + state.failed, state.total, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _log_to_file(results: str) -> logging.FileHandler:
    """Also log this run (INFO and up) to RESULTS/logs/run-<UTC time>.log."""
    from datetime import UTC, datetime
    from pathlib import Path

    folder = Path(results) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    ours = logging.getLogger("screening")
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)
    _FILE_ONLY.addHandler(handler)
    _FILE_ONLY.setLevel(logging.INFO)
    return handler


# What the terminal already shows on stdout goes to the log file only.
_FILE_ONLY = logging.getLogger("screening.logfile")
_FILE_ONLY.propagate = False


def _run_on_cluster(args: argparse.Namespace, store: str, results: str) -> int:
    """Shared by ``run`` and ``screen``: cluster, progress, summary, exit code."""
    from screening.engine import open_client, run_cohort

    cfg = _run_config(args)
    handler = _log_to_file(results)
    log_file = handler.baseFilename
    progress = _ProgressBar(not args.quiet and sys.stderr.isatty())
    try:
        with open_client(_cluster_config(args)) as client:
            summary = run_cohort(store, results, cfg, client, progress=progress)
        _FILE_ONLY.info("summary: %s", summary.describe())
    finally:
        progress.close()
        logging.getLogger().removeHandler(handler)
        _FILE_ONLY.removeHandler(handler)
        handler.close()
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
        cluster=_cluster_config(args),
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
    from screening.engine import compact_results

    dropped = compact_results(args.results)
    print(
        "compacted "
        + ", ".join(f"{name}: {n} superseded row(s) dropped" for name, n in dropped.items())
    )
    return 0


_MODEL_HELP = (
    "'liver3mm' (default: the shipped real-CT liver model), 'demo' (U-Net trained on "
    "synthetic phantoms only: for `screening synth` cohorts), a model directory, a MONAI "
    "bundle, or an nnU-Net v2 result folder (e.g. a TotalSegmentator task folder)"
)


def _add_nnunet_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("nnU-Net folders (--model pointing at one)")
    group.add_argument(
        "--nnunet-folds",
        metavar="F[,F...]",
        help="folds to ensemble, e.g. 0 or 0,1,2,3,4 or all (default: every fold_<n> present)",
    )
    group.add_argument(
        "--nnunet-orientation",
        default="RAS",
        help="axis directions (x, y, z) of the images the model was trained on: RAS "
        "(default; TotalSegmentator, nibabel-canonical data) or LPS (read as DICOM stores it)",
    )
    group.add_argument(
        "--nnunet-no-mirroring",
        action="store_true",
        help="skip nnU-Net's mirroring test-time augmentation (up to 8x faster on CPU)",
    )


def _nnunet_config(args: argparse.Namespace) -> NnUNetConfig:
    from screening.model.nnunet import NnUNetConfig

    folds = None
    if args.nnunet_folds:
        folds = tuple(f.strip() for f in args.nnunet_folds.split(",") if f.strip())
    return NnUNetConfig(
        folds=folds, orientation=args.nnunet_orientation, use_mirroring=not args.nnunet_no_mirroring
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when a GPU is visible, else CPU), cpu, or cuda[:N]",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="worker processes of the local cluster (default: one per core)"
    )
    where.add_argument(
        "--scheduler", help="address of an existing Dask scheduler (tcp://host:8786)"
    )
    where.add_argument("--cluster", help="deployment file, e.g. cluster/slurm.yaml")


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
    synth.add_argument(
        "--corrupt", type=int, default=0, help="DICOM series to damage on purpose (default 0)"
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
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--iters-per-epoch", type=int, default=50)
    tr.add_argument("--batch-size", type=int, default=2)
    tr.add_argument("--patch", type=_ints, default=(32, 96, 96), help="z,y,x voxels")
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--spacing-mm", type=_floats, default=(2.5, 0.7, 0.7), help="model grid z,y,x in mm"
    )
    tr.add_argument("--window-hu", type=_floats, default=(-200.0, 250.0), help="low,high HU")
    tr.add_argument("--channels", type=_ints, default=(16, 32, 64, 128))
    tr.add_argument("--strides", type=_ints, default=(2, 2, 2))
    tr.add_argument("--res-units", type=int, default=2)
    tr.add_argument("--notes", default="", help="free text for the model card")
    _add_model_options(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=_train)

    seg = sub.add_parser(
        "segment",
        help="segment every scan of a store with a model (writes `seg` into each scan store)",
        description="Run the U-Net on every complete scan store under STORE, one after another "
        "on this machine (the distributed run is `screening run`).",
    )
    seg.add_argument("store", help="scan store folder")
    seg.add_argument("--model", default=DEFAULT_MODEL, help=_MODEL_HELP)
    seg.add_argument("--cascade", action="store_true", help="coarse pass first (faster)")
    seg.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap")
    _add_model_options(seg)
    _add_nnunet_options(seg)
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_segment)

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
    _add_measure_options(mea)
    mea.add_argument("--quiet", action="store_true", help="no progress bar")
    mea.set_defaults(func=_measure)

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
    _add_run_options(run)
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
    _add_run_options(scr)
    scr.set_defaults(func=_screen)

    cmp = sub.add_parser(
        "compact",
        help="merge RESULTS' small Parquet part files, keeping the latest row per scan+pipeline",
    )
    cmp.add_argument("results", help="results folder")
    cmp.set_defaults(func=_compact)

    add_results_commands(sub)
    return parser


def _add_measure_options(parser: argparse.ArgumentParser) -> None:
    """What ``measure``, ``run`` and ``screen`` share: the MeasureConfig knobs, overlays."""
    parser.add_argument(
        "--grid",
        choices=["native", "model"],
        default="native",
        help="native: stored HU (default); model: resampled to 0.7 x 0.7 x 2.5 mm as the paper",
    )
    parser.add_argument(
        "--threshold-hu", type=float, default=40.0, help="steatosis at or below (default 40)"
    )
    parser.add_argument(
        "--erosion-mm", type=float, default=3.0, help="erosion for the eroded means (default 3)"
    )
    parser.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")


def _measure_config(args: argparse.Namespace) -> MeasureConfig:
    from screening.measure import MeasureConfig

    return MeasureConfig(
        grid=args.grid, steatosis_threshold_hu=args.threshold_hu, erosion_mm=args.erosion_mm
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=_MODEL_HELP)
    parser.add_argument(
        "--segmenter",
        choices=("unet", "reference"),
        default="unet",
        help="unet: segment with --model (default); reference: measure masks given at ingest",
    )
    parser.add_argument(
        "--segment-fn",
        metavar="MODULE:FUNCTION",
        help="your own segmentation function (ct_hu, spacing_mm) -> labels; importable on "
        "every worker",
    )
    parser.add_argument("--no-cascade", action="store_true", help="skip the coarse pass")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    _add_measure_options(parser)
    parser.add_argument(
        "--max-in-flight", type=int, help="scans submitted at once (default: 4 per worker)"
    )
    parser.add_argument(
        "--gpu-workers", type=int, help="local GPU workers (default: one per visible GPU)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_nnunet_options(parser)
    _add_cluster_options(parser)


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
    except KeyboardInterrupt:
        print(f"screening {args.command}: interrupted", file=sys.stderr)
        return 130
    except ScreeningError as e:
        print(f"screening {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
