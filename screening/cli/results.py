"""The ``screening`` commands that read results: ``query``, ``stats`` and ``report``
(split from cli.py to keep each module small; same thin style: parse, call the library)."""

from __future__ import annotations

import argparse
from typing import Any

from screening.cli.options import DEFAULT_HELP, FromConfig, given
from screening.errors import ConfigError

__all__ = ["add_commands"]


def _read_standard(path: str) -> dict[str, float]:
    """A standard population CSV: ``age_band,weight`` (bands as in the prevalence table)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"age_band", "weight"} <= set(rows[0]):
        raise ConfigError(f"{path}: expected a CSV with columns age_band,weight")
    return {r["age_band"]: float(r["weight"]) for r in rows}


def _stats(args: argparse.Namespace) -> int:
    from screening.stats.compute import StatsConfig, compute_stats

    cfg = StatsConfig(
        segmentation=not args.no_segmentation,
        **given(
            args,
            threshold_hu="threshold_hu",
            n_boot="n_boot",
            seed="seed",
            prevalence_unit="unit",
        ),
    )
    standard = _read_standard(args.standard) if args.standard else None
    kwargs = dict(store=args.store, reference=args.reference, pipeline_id=args.pipeline)
    if cfg.segmentation and (args.workers or args.scheduler or args.cluster):
        # Segmentation metrics read every scan's masks: spread them over the cluster.
        from screening.runtime import ClusterConfig, open_client

        cluster = ClusterConfig(
            workers=args.workers, scheduler=args.scheduler, cluster_file=args.cluster
        )
        with open_client(cluster) as client:
            summary = compute_stats(
                args.results, args.out, cfg=cfg, standard_population=standard, client=client,
                **kwargs,
            )  # fmt: skip
    else:
        summary = compute_stats(
            args.results, args.out, cfg=cfg, standard_population=standard, **kwargs
        )
    print(summary.describe())
    print(f"next: screening report {args.results} --stats {args.out} --out report.html")
    return 0


def _report(args: argparse.Namespace) -> int:
    import tempfile

    from screening.stats.compute import compute_stats
    from screening.stats.report import render_report

    if args.stats:
        path = render_report(args.stats, args.results, args.out)
    else:  # compute into a temporary folder first
        with tempfile.TemporaryDirectory(prefix="screening-stats-") as tmp:
            compute_stats(args.results, tmp, reference=args.reference, pipeline_id=args.pipeline)
            path = render_report(tmp, args.results, args.out)
    print(f"wrote {path} (self-contained HTML: open it in a browser)")
    return 0


class _PrintExamples(argparse.Action):
    """``--examples``: print and exit, like ``--version`` (no positionals needed)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from screening.query import EXAMPLE_QUERIES

        text = "".join(f"-- {title}\n{sql};\n\n" for title, sql in EXAMPLE_QUERIES.items())
        parser.exit(message=text)


def _query(args: argparse.Namespace) -> int:
    import duckdb

    from screening.query import run_query

    table = run_query(args.results, args.sql, store=args.store)
    con = duckdb.connect()
    con.register("result", table)
    rel = con.sql("select * from result")
    if args.csv:  # DuckDB writes list columns (qc_flags, roi_hu) as text; pyarrow cannot
        rel.write_csv(args.csv, header=True)
        print(f"wrote {table.num_rows} row(s) to {args.csv}")
        return 0
    rel.show(max_rows=args.max_rows, max_width=200)
    return 0


def add_commands(sub: Any) -> None:
    """Add ``query``, ``stats`` and ``report`` to the ``screening`` sub-parsers."""
    qry = sub.add_parser(
        "query",
        help="SQL over the results with DuckDB (tables: measurements, failures, scans)",
        description="Run a DuckDB SQL query over RESULTS/measurements and RESULTS/failures "
        "(and the store's scans table with --store). `screening query --examples` prints "
        "example queries.",
    )
    qry.add_argument("results", help="results folder")
    qry.add_argument("sql", help="the SQL query (quote it)")
    qry.add_argument("--store", help="scan store folder: adds the `scans` table")
    qry.add_argument("--csv", help="write the result to this CSV file instead of printing")
    qry.add_argument("--max-rows", type=int, default=40, help="rows to print (default 40)")
    qry.add_argument(
        "--examples", action=_PrintExamples, nargs=0, help="print example queries and exit"
    )
    qry.set_defaults(func=_query)

    sta = sub.add_parser(
        "stats",
        help="prevalence, agreement with readers, ROC + bootstrap CIs, segmentation metrics",
        description="Statistics of one pipeline's results into STATS/*.parquet (prevalence, "
        "classification, roc, agreement, agreement_matrix, paired, segmentation, "
        "segmentation_summary, repeatability) and STATS/summary.json.",
    )
    sta.add_argument("results", help="results folder of a run")
    sta.add_argument("--out", required=True, help="statistics folder to write")
    sta.add_argument(
        "--reference", help="expert reads: CSV/Parquet with reader, roi_hu and a key column"
    )
    sta.add_argument("--store", help="scan store (default: the one the run recorded)")
    sta.add_argument("--pipeline", help="pipeline id or prefix (default: the latest run)")
    sta.add_argument(
        "--threshold-hu",
        type=float,
        default=FromConfig("screening.stats.compute:StatsConfig", "threshold_hu"),
        help="steatosis at or below; " + DEFAULT_HELP,
    )
    sta.add_argument(
        "--n-boot",
        type=int,
        default=FromConfig("screening.stats.compute:StatsConfig", "n_boot"),
        help="bootstrap resamples; " + DEFAULT_HELP,
    )
    sta.add_argument(
        "--seed",
        type=int,
        default=FromConfig("screening.stats.compute:StatsConfig", "seed"),
        help="bootstrap seed; " + DEFAULT_HELP,
    )
    sta.add_argument(
        "--unit",
        choices=("scan", "patient"),
        default=FromConfig("screening.stats.compute:StatsConfig", "prevalence_unit"),
        help="prevalence per scan, or per patient (each patient once, by the earliest decided "
        "scan: repeat screens and several reconstructions weigh once); " + DEFAULT_HELP,
    )
    sta.add_argument(
        "--standard", help="standard population CSV (age_band,weight) for age standardisation"
    )
    sta.add_argument(
        "--no-segmentation", action="store_true", help="skip Dice/Hausdorff (reads every mask)"
    )
    where = sta.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="compute segmentation metrics on a local cluster of N workers"
    )
    where.add_argument("--scheduler", help="... or on an existing Dask scheduler")
    where.add_argument("--cluster", help="... or on a cluster from a deployment file")
    sta.set_defaults(func=_stats)

    rep = sub.add_parser("report", help="self-contained HTML report with figures")
    rep.add_argument("results", help="results folder of a run")
    rep.add_argument("--out", required=True, help="HTML file to write")
    rep.add_argument("--stats", help="statistics folder from `screening stats` (else computed)")
    rep.add_argument("--reference", help="expert reads, when the statistics are computed here")
    rep.add_argument("--pipeline", help="pipeline id or prefix (default: the latest run)")
    rep.set_defaults(func=_report)
