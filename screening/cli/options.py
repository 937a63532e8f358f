"""Options several ``screening`` commands share, and how they become config objects.

An option whose default is :class:`FromConfig` takes the config dataclass's own default (one
home for every default); ``--help`` shows it."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from screening.measure import MeasureConfig
    from screening.model.nnunet import NnUNetConfig
    from screening.pipeline import RunProgress
    from screening.runtime import ClusterConfig

log = logging.getLogger("screening")


@dataclass(frozen=True)
class FromConfig:
    """An option's default: field ``name`` of the config dataclass ``owner``
    (``module:Class``), imported only when ``--help`` shows it."""

    owner: str
    name: str

    def value(self) -> Any:
        module, _, qualname = self.owner.partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        field = {f.name: f for f in dataclasses.fields(cls)}[self.name]
        if field.default is not dataclasses.MISSING:
            return field.default
        return field.default_factory()  # type: ignore[operator]

    def __str__(self) -> str:
        value = self.value()
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


#: Help text of an option whose default is a :class:`FromConfig`.
DEFAULT_HELP = "default %(default)s"


def given(args: argparse.Namespace, **fields: str) -> dict[str, Any]:
    """``{field: args.<dest>}`` for the options given on the command line (``field=dest``);
    those left at a :class:`FromConfig` default are omitted, so the dataclass decides."""
    out = {}
    for field, dest in fields.items():
        value = getattr(args, dest)
        if not isinstance(value, FromConfig):
            out[field] = value
    return out


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    from screening.runtime import ClusterConfig

    return ClusterConfig(
        scheduler=args.scheduler,
        workers=args.workers,
        gpu_workers=getattr(args, "gpu_workers", None),
        cluster_file=getattr(args, "cluster", None),
    )


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="worker processes of the local cluster (default: one per core)"
    )
    where.add_argument(
        "--scheduler", help="address of an existing Dask scheduler (tcp://host:8786)"
    )
    where.add_argument("--cluster", help="deployment file, e.g. cluster/slurm.yaml")


MODEL_HELP = (
    "'liver3mm' (default: the shipped real-CT liver model), 'demo' (U-Net trained on "
    "synthetic phantoms only: for `screening synth` cohorts), a model directory, a MONAI "
    "bundle, or an nnU-Net v2 result folder (e.g. a TotalSegmentator task folder)"
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when a GPU is visible, else CPU), cpu, or cuda[:N]",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def add_nnunet_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("nnU-Net folders (--model pointing at one)")
    group.add_argument(
        "--nnunet-folds",
        metavar="F[,F...]",
        help="folds to ensemble, e.g. 0 or 0,1,2,3,4 or all (default: every fold_<n> present)",
    )
    group.add_argument(
        "--nnunet-orientation",
        default=FromConfig("screening.model.nnunet:NnUNetConfig", "orientation"),
        help="axis directions (x, y, z) of the images the model was trained on: RAS "
        "(default; TotalSegmentator, nibabel-canonical data) or LPS (read as DICOM stores it)",
    )
    group.add_argument(
        "--nnunet-no-mirroring",
        action="store_true",
        help="skip nnU-Net's mirroring test-time augmentation (up to 8x faster on CPU)",
    )


def nnunet_config(args: argparse.Namespace) -> NnUNetConfig:
    from screening.model.nnunet import NnUNetConfig

    folds = None
    if args.nnunet_folds:
        folds = tuple(f.strip() for f in args.nnunet_folds.split(",") if f.strip())
    return NnUNetConfig(
        folds=folds,
        use_mirroring=not args.nnunet_no_mirroring,
        **given(args, orientation="nnunet_orientation"),
    )


def add_measure_options(parser: argparse.ArgumentParser) -> None:
    """What ``measure``, ``run`` and ``screen`` share: the MeasureConfig knobs, overlays."""
    parser.add_argument(
        "--grid",
        choices=["native", "model"],
        default=FromConfig("screening.measure.config:MeasureConfig", "grid"),
        help="native: stored HU (default); model: resampled to 0.7 x 0.7 x 2.5 mm as the paper",
    )
    parser.add_argument(
        "--threshold-hu",
        type=float,
        default=FromConfig("screening.measure.config:MeasureConfig", "steatosis_threshold_hu"),
        help="steatosis at or below; " + DEFAULT_HELP,
    )
    parser.add_argument(
        "--erosion-mm",
        type=float,
        default=FromConfig("screening.measure.config:MeasureConfig", "erosion_mm"),
        help="erosion for the eroded means; " + DEFAULT_HELP,
    )
    parser.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")


def measure_config(args: argparse.Namespace) -> MeasureConfig:
    from screening.measure import MeasureConfig

    return MeasureConfig(
        **given(args, grid="grid", steatosis_threshold_hu="threshold_hu", erosion_mm="erosion_mm")
    )


class ProgressBar:
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


# What the terminal already shows on stdout goes to the log file only.
FILE_ONLY = logging.getLogger("screening.logfile")
FILE_ONLY.propagate = False


def log_to_file(results: str) -> logging.FileHandler:
    """Also log this run (INFO and up) to RESULTS/logs/run-<UTC time>.log (for results in an
    object store: a local file first, copied there by :func:`close_log`)."""
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from screening.location import is_url

    local = Path(tempfile.gettempdir()) / "screening-logs" if is_url(results) else Path(results)
    folder = local / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    ours = logging.getLogger("screening")
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)
    FILE_ONLY.addHandler(handler)
    FILE_ONLY.setLevel(logging.INFO)
    return handler


def close_log(handler: logging.FileHandler, results: str) -> str:
    """Detach and close the run's log; where it now is (copied into an object-store RESULTS)."""
    from pathlib import Path

    from screening.location import Location, is_url

    logging.getLogger().removeHandler(handler)
    FILE_ONLY.removeHandler(handler)
    handler.close()
    if not is_url(results):
        return handler.baseFilename
    local = Path(handler.baseFilename)
    target = Location.of(results) / "logs" / local.name
    target.write_bytes(local.read_bytes())
    local.unlink()
    return target.url
