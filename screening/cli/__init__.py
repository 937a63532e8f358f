"""The ``screening`` command: parse arguments into config objects and call the library.

One small module per group of commands (each has ``add_commands``); :mod:`.options` holds
what they share."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from screening._version import __version__
from screening.cli import ingest, measure, model, results, run, synth
from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.errors import ScreeningError

__all__ = ["build_parser", "main"]

#: Command modules, in the order ``screening --help`` lists them.
COMMAND_MODULES = (synth, ingest, model, measure, run, results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="screening",
        description="Screen CT archives for hepatic steatosis "
        f"(liver attenuation <= {STEATOSIS_THRESHOLD_HU:g} HU).",
    )
    parser.add_argument("--version", action="version", version=f"screening {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
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
    except KeyboardInterrupt:
        print(f"screening {args.command}: interrupted", file=sys.stderr)
        return 130
    except ScreeningError as e:
        print(f"screening {args.command}: error: {e}", file=sys.stderr)
        return 2
