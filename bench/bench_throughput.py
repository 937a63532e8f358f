"""Cohort throughput: full-size scans per hour with the shipped real-CT model, 1 and 2 workers.

``python -m bench.bench_throughput [--scans 4] [--repeats 2] [--out FILE]``

``--scans`` full-size synthetic phantoms (300 × 512 × 512, 1.25 × 0.7 × 0.7 mm) are written
once as pristine scan stores (untimed). Each timed run is one ``run_cohort`` with the default
``RunConfig()`` (the ``liver3mm`` model, overlays on: what ``screening run`` does) on a fresh
copy of the stores and a fresh results folder, on a ``LocalCluster`` that is already up with
the model loaded on its workers (one untimed warm-up scan per cluster). Clusters: 1 worker × 1
thread, 2 workers × 1 thread (the default on this 2-core machine) and 1 worker × 2 threads; the
repeats alternate between them. Scans per hour = scans / wall seconds × 3600. Use an even
number of scans: with 3 scans on 2 workers the third runs alone and the figure measures that
tail, not the throughput. Machine load
from other processes is recorded as in ``bench.bench_run``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.bench_run import Scratch, _open, _stage_medians, log, render, write_stores
from bench.common import cpu_model, emit, git_state

CLUSTERS = ((1, 1), (2, 1), (1, 2))  # (workers, threads per worker)


def run(n_scans: int, repeats: int) -> dict[str, Any]:
    from screening.pipeline import RunConfig

    cfg = RunConfig()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scratch = Scratch(work)
        scans = render("full", n_scans, seed=400)
        pristine, warm_root = work / "pristine", work / "warm"
        write_stores(pristine, scans)
        write_stores(warm_root, scans[:1])
        del scans
        runs: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in CLUSTERS}

        with ExitStack() as stack:
            clients = {c: _open(stack, *c) for c in CLUSTERS}
            for c, client in clients.items():  # the model loads on every worker
                log(f"warm-up {c}: {scratch.timed_run(client, warm_root, cfg)['wall_s']:.1f} s")
            for rep in range(repeats):
                order = CLUSTERS if rep % 2 == 0 else CLUSTERS[::-1]
                for c in order:
                    r = scratch.timed_run(clients[c], pristine, cfg)
                    runs[c].append(r)
                    log(f"rep {rep} {c}: {r['wall_s']:.1f} s {r['by_status']}")
    return {"runs": runs, "scans": n_scans, "repeats": repeats, "model": cfg.model}


def to_markdown(res: dict[str, Any]) -> str:
    n = res["scans"]
    base = statistics.median(r["wall_s"] for r in res["runs"][(1, 1)])
    lines = [
        "# Cohort throughput: full-size scans, shipped real-CT model (`bench/bench_throughput.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {git_state()}. {n} full-size "
        f"synthetic scans (300 × 512 × 512) per run, `run_cohort` with `RunConfig()` (model "
        f"`{res['model']}`, overlays on), {res['repeats']} runs per cluster, alternating; "
        "model loaded and one scan run on each cluster first (untimed).",
        "",
        "| workers × threads | runs | median s (min – max) | scans/hour | vs 1 × 1 "
        "| segment s/scan | measure s/scan | CPU s (client + workers) | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (w, t), runs in res["runs"].items():
        walls = [r["wall_s"] for r in runs]
        med = statistics.median(walls)
        stages = _stage_medians(runs)
        seg, mea = stages["segment_s"], stages["measure_s"]
        client_cpu = statistics.median(r["client_cpu_s"] for r in runs)
        worker_cpu = statistics.median(r["worker_cpu_s"] for r in runs)
        other = statistics.median(r["other_cores"] for r in runs)
        lines.append(
            f"| {w} × {t} | {len(runs)} | {med:.1f} ({min(walls):.1f} – {max(walls):.1f}) "
            f"| {n / med * 3600:.0f} | {base / med:.2f}× "
            f"| {seg if seg is None else format(seg, '.1f')} "
            f"| {mea if mea is None else format(mea, '.2f')} "
            f"| {client_cpu:.1f} + {worker_cpu:.1f} | {other:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scans", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    res = run(args.scans, args.repeats)
    res_json = {**res, "runs": {f"{w}x{t}": v for (w, t), v in res["runs"].items()}}
    emit(to_markdown(res), res_json, args.out, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
