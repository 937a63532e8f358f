"""The distributed run: ``run_cohort`` on a real ``LocalCluster`` (worker processes).

``python -m bench.bench_run [--quick] [--out PATH] [--json PATH]`` prints a markdown report.

Every timing is one call of ``run_cohort(store, results, RunConfig(...), client)`` on a client
from ``open_client(ClusterConfig(workers=N, dashboard=False))``, started (and warmed up with one
untimed run, so the workers have imported torch and the engine) before the clock starts. Each
timed run gets a fresh results folder and a fresh copy of pristine scan stores (copied untimed),
so no run finds an earlier run's ``prep`` / ``seg`` and skips work. Clusters of 1 and 2 workers
are held open together and the repeats alternate between them (``Client.as_current``), so noise
on the shared machine hits both alike; medians are quoted. Every run also records the CPU of the
client process (client + scheduler), of the workers, and of the whole machine (``/proc/stat``):
what the machine spent beyond this benchmark is reported as *other load*.

1. Scaling 1 -> 2 workers: 16 small synthetic scans (``make_phantom``, ``small`` preset,
   48 x 128 x 128, stores written directly with catalog rows), ``RunConfig()`` (U-Net,
   shipped demo weights, cascade) and the measure-only path (``segmenter="reference"``).
   Efficiency = (median 1-worker wall / median 2-worker wall) / 2; goal >= 0.85.
2. Scheduler overhead per scan: 1,000 tiny stores (8 x 32 x 32 int16), a trivial box
   segmenter (``box_liver``; workers import it from this module, or get it by value when this
   module runs as ``__main__``), ``overlays=False``, 1 worker. Baseline, same process and run,
   repeats interleaved: the same three task functions (``preprocess_task`` ->
   ``segment_task`` -> ``measure_task``) called one after another in-process on fresh copies
   of the same stores, rows committed through the same ``ResultSink``. Overhead per scan =
   (median run_cohort wall - median baseline wall) / n; goal <= 10 ms. ``run_cohort``'s
   planning (catalog read, completeness checks) is inside the overhead and also timed alone.
   Context rows: ``max_in_flight=8``, and Dask alone (three chained no-op tasks per scan with
   the run's arguments, streamed 2 in flight like ``run_cohort``).
3. Peak memory, one full-size scan (``full`` preset, 300 x 512 x 512) through ``run_cohort`` on
   the 1-worker cluster (U-Net demo, cascade): the worker's and the client's (which hosts the
   scheduler) ``VmHWM`` after resetting it (``/proc/self/clear_refs``; freed heap trimmed
   first), against ``VmRSS`` before, and as multiples of the int16 CT.
4. Scans per hour, 2 workers, U-Net demo: the small scans of (1), and 3 full-size scans;
   per-stage seconds are the medians of the rows' ``preprocess_s`` / ``segment_s`` /
   ``measure_s`` over all timed runs.

Repeats: 5 alternating rounds for (1), 3 for (2) and for the full-size runs of (4); ``--quick``
runs 1 of each, with 200 tiny scans and 2 full-size scans.

Diagnostic: ``write_prep`` + ``segment_store`` in two fresh subprocesses, with glibc's default
allocator and with the ``MALLOC_TRIM_THRESHOLD_`` Dask's nanny sets for every worker.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cloudpickle  # type: ignore[import-untyped]  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from bench.common import emit  # noqa: E402

# Workers need not import this module: ship its functions (segmenter, probes) by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parent.parent
EFFICIENCY_GOAL = 0.85
OVERHEAD_GOAL_MS = 10.0
SMALL_N = 16
WIDE_IN_FLIGHT = 8
LARGE_THRESHOLD = 256 * 2**20  # bytes: a candidate allocator setting for U-Net workers
TINY_SHAPE = (8, 32, 32)
TINY_SPACING_MM = (30.0, 11.2, 11.2)  # the small preset's field of view
EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
CT_FULL_MIB = 300 * 512 * 512 * 2 / 2**20
STAGES = ("preprocess_s", "segment_s", "measure_s")

Scan = tuple[str, NDArray[np.int16], tuple[float, float, float], Any, NDArray[np.uint8] | None]


def log(msg: str) -> None:
    print(f"[bench_run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- scan stores


def box_liver(ct: NDArray[np.int16], spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
    """A trivial segmenter: a fixed liver box and a smaller spleen box."""
    labels = np.zeros(ct.shape, dtype=np.uint8)
    nz, ny, nx = ct.shape
    labels[nz // 4 : nz // 2, ny // 3 : 2 * ny // 3, nx // 5 : nx // 2] = 1
    labels[nz // 4 : nz // 2, ny // 3 : ny // 2, 3 * nx // 4 : 7 * nx // 8] = 2
    return labels


def render(size: str, n: int, seed: int, *, labels: bool = True) -> list[Scan]:
    """``n`` phantoms (liver 20-65 HU) of the ``small`` / ``full`` preset or ``tiny``."""
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom

    geometry = (
        ScanGeometry.preset("small", shape=TINY_SHAPE, spacing_mm=TINY_SPACING_MM)
        if size == "tiny"
        else ScanGeometry.preset(size)  # type: ignore[arg-type]
    )
    out: list[Scan] = []
    for i in range(n):
        liver_hu = 20.0 + (45.0 * i) / max(1, n - 1)
        ph = make_phantom(PhantomSpec(liver_hu=liver_hu), geometry, seed + i)
        out.append((f"{size}{seed:03d}x{i:04d}", ph.hu, ph.spacing_mm, ph.origin_mm, None))
        if labels:
            out[-1] = (*out[-1][:4], ph.labels)
    return out


def write_stores(root: Path, scans: list[Scan], n: int | None = None) -> list[str]:
    """Complete scan stores with ``ok`` catalog rows, written directly (as the engine tests
    do; ingest is benchmarked on its own). With ``n``, the scans are cycled to ``n`` stores."""
    from screening._version import __version__
    from screening.store.catalog import CatalogWriter
    from screening.store.scan import StoreConfig, write_scan_store
    from screening.store.volume import ScanVolume

    writer = CatalogWriter(root)
    ids = []
    for i in range(len(scans) if n is None else n):
        name, hu, spacing, origin, labels = scans[i % len(scans)]
        scan_id = name if n is None else f"{name}-{i:05d}"
        volume = ScanVolume(hu, spacing, origin, EYE, {"format": "synthetic"})
        attrs = {"scan_id": scan_id, "cohort": "bench", "site": f"site-{i % 2}"}
        write_scan_store(root, scan_id, volume, attrs, StoreConfig(), labels)
        writer.add(
            {
                "scan_id": scan_id,
                "cohort": "bench",
                "site": f"site-{i % 2}",
                "status": "ok",
                "engine_version": __version__,
                "ingested_at": datetime.now(UTC),
            }
        )
        ids.append(scan_id)
    writer.flush()
    return ids


class Scratch:
    """Fresh copies of pristine stores and fresh results folders under one temp folder."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.n = 0
        self.copy_s: list[float] = []

    def fresh(self, pristine: Path) -> tuple[Path, Path]:
        self.n += 1
        store, results = self.base / f"store-{self.n}", self.base / f"results-{self.n}"
        t0 = time.perf_counter()
        shutil.copytree(pristine, store)
        self.copy_s.append(time.perf_counter() - t0)
        return store, results

    def drop(self, *paths: Path) -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    def timed_run(self, client: Any, pristine: Path, cfg: Any) -> dict[str, Any]:
        """:func:`timed_run` on a fresh copy of ``pristine`` and a fresh results folder."""
        store, results = self.fresh(pristine)
        try:
            return timed_run(client, store, results, cfg)
        finally:
            self.drop(store, results)


# --------------------------------------------------------------------------- probes


def _status_kib(field: str) -> int:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(ln.split()[1]) for ln in lines if ln.startswith(field + ":"))


def reset_peak() -> dict[str, Any]:
    """Collect, trim freed heap, reset ``VmHWM``; return ``VmRSS`` now (run in any process)."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    return {"reset": reset, "rss_kib": _status_kib("VmRSS")}


def read_peak() -> dict[str, Any]:
    import resource

    return {
        "hwm_kib": _status_kib("VmHWM"),
        "rss_kib": _status_kib("VmRSS"),
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def cpu_seconds() -> float:
    return time.process_time()


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle and iowait)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except (OSError, IndexError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def workers_cpu(client: Any) -> float:
    return float(sum(client.run(cpu_seconds).values()))


# --------------------------------------------------------------------------- timed runs


def timed_run(client: Any, store: Path, results: Path, cfg: Any) -> dict[str, Any]:
    """One ``run_cohort``: wall, client CPU (client + scheduler threads), worker CPU, rows."""
    from screening.pipeline import run_cohort
    from screening.schemas import load_table_schema
    from screening.store.results import MEASUREMENTS_DIR
    from screening.tables import read_dataset

    with client.as_current():
        w0, c0, m0 = workers_cpu(client), time.process_time(), machine_busy_s()
        t0 = time.perf_counter()
        summary = run_cohort(store, results, cfg, client)
        wall = time.perf_counter() - t0
        busy = machine_busy_s() - m0
        cpu, wcpu = time.process_time() - c0, workers_cpu(client) - w0
    table = read_dataset(results / MEASUREMENTS_DIR, load_table_schema("measurements"))
    rows = {k: table[k].to_pylist() for k in ("status", *STAGES)}
    return {
        "wall_s": wall,
        "client_cpu_s": cpu,
        "worker_cpu_s": wcpu,
        "other_cores": (busy - cpu - wcpu) / wall,
        "n": summary.n_finished,
        "by_status": summary.by_status,
        "rows": rows,
    }


def in_process(store: Path, results: Path, cfg: Any) -> dict[str, Any]:
    """The baseline: the same three tasks called in this process, rows into a ResultSink."""
    from screening.pipeline.run import plan_run, stage_settings
    from screening.pipeline.tasks import measure_task, preprocess_task, segment_task
    from screening.store.results import MEASUREMENTS_DIR, ResultSink

    t0 = time.perf_counter()
    settings = stage_settings(cfg, results)
    plan = plan_run(store, results, settings.pipeline_id, retry_failed=cfg.retry_failed)
    plan_s = time.perf_counter() - t0
    c0, m0, t1 = time.process_time(), machine_busy_s(), time.perf_counter()
    sink = ResultSink(results, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds)
    n_ok = 0
    for scan in plan.todo:
        rec = measure_task(
            scan, segment_task(scan, preprocess_task(scan, settings), settings), settings
        )
        n_ok += bool(rec["ok"])
        if rec["ok"]:
            sink.add(MEASUREMENTS_DIR, rec["row"])
    sink.flush()
    wall, cpu = time.perf_counter() - t1, time.process_time() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "other_cores": (machine_busy_s() - m0 - cpu) / wall,
        "plan_s": plan_s,
        "n": len(plan.todo),
        "n_ok": n_ok,
    }


def _noop_first(scan: Any, settings: Any) -> dict[str, Any]:
    return {"ok": True, "stage": "preprocess", "seconds": {}}


def _noop(scan: Any, upstream: dict[str, Any], settings: Any) -> dict[str, Any]:
    return upstream


def dask_floor(client: Any, store: Path, results: Path, cfg: Any, limit: int) -> dict[str, Any]:
    """Dask alone: per scan, three chained no-op tasks with the run's arguments (ScanRef and
    StageSettings), streamed as ``run_cohort`` streams them (``limit`` scans in flight)."""
    from distributed import as_completed

    from screening.pipeline.run import plan_run, stage_settings

    settings = stage_settings(cfg, results)
    todo = plan_run(store, results, settings.pipeline_id, retry_failed=True).todo
    with client.as_current():
        w0, c0, m0 = workers_cpu(client), time.process_time(), machine_busy_s()
        t0 = time.perf_counter()
        pending = iter(todo)
        held: dict[str, list[Any]] = {}
        ac = as_completed()

        def submit_next() -> None:
            scan = next(pending, None)
            if scan is None:
                return
            a = client.submit(_noop_first, scan, settings, pure=False)
            b = client.submit(_noop, scan, a, settings, pure=False)
            c = client.submit(_noop, scan, b, settings, pure=False, priority=1)
            held[c.key] = [a, b, c]
            ac.add(c)

        for _ in range(limit):
            submit_next()
        n = 0
        for fut in ac:
            n += bool(fut.result()["ok"])
            for f in held.pop(fut.key):
                f.release()
            submit_next()
        wall = time.perf_counter() - t0
        busy = machine_busy_s() - m0
        cpu, wcpu = time.process_time() - c0, workers_cpu(client) - w0
    return {
        "wall_s": wall,
        "client_cpu_s": cpu,
        "worker_cpu_s": wcpu,
        "other_cores": (busy - cpu - wcpu) / wall,
        "n": n,
        "rows": {k: [] for k in ("status", *STAGES)},
    }


def _med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _summ(runs: list[dict[str, Any]], key: str = "wall_s") -> dict[str, float]:
    xs = [r[key] for r in runs]
    return {"median": _med(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "client_cpu_s": _med([r["client_cpu_s"] for r in runs]),
        "worker_cpu_s": _med([r["worker_cpu_s"] for r in runs]),
        "other_cores": _med([r["other_cores"] for r in runs]),
    }


def _stage_medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in STAGES:
        xs = [x for r in runs for x in r["rows"][k] if x is not None]
        out[k] = _med(xs) if xs else None
    return out


def _failed(runs: list[dict[str, Any]]) -> int:
    return sum(1 for r in runs for s in r["rows"]["status"] if s != "ok")


# --------------------------------------------------------------------------- malloc diagnostic


def _malloc_child(pristine: str, n_scans: int = 8, passes: int = 3) -> dict[str, Any]:
    """In this process: ``write_prep`` + ``segment_store`` (demo, cascade, one thread) on the
    first ``n_scans`` stores of fresh copies of ``pristine``; the first pass is a warm-up."""
    import torch

    from screening.model.checkpoint import load_model
    from screening.model.inference import InferenceConfig
    from screening.model.segment import segment_store
    from screening.preprocess import write_prep

    torch.set_num_threads(1)
    model = load_model("demo", device="cpu", with_coarse=True)
    cfg = InferenceConfig(cascade=True)
    per_scan: list[float] = []
    user = system = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-run-malloc-") as tmp:
        for k in range(passes):
            store = Path(tmp) / f"store-{k}"
            shutil.copytree(pristine, store)
            c0 = os.times()
            for path in sorted((store / "scans").glob("*.zarr"))[:n_scans]:
                t0 = time.perf_counter()
                write_prep(path, model.preprocess_cfg, threads=1)
                segment_store(path, model, cfg, device="cpu", threads=1)
                if k:
                    per_scan.append(time.perf_counter() - t0)
            c1 = os.times()
            if k:
                user, system = user + c1.user - c0.user, system + c1.system - c0.system
    return {
        "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "median_s": _med(per_scan),
        "n": len(per_scan),
        "user_s": user,
        "sys_s": system,
    }


def malloc_diagnostic(pristine: Path) -> dict[str, Any] | None:
    """The U-Net stage in-process (fresh subprocesses) with glibc's default allocator, with
    the ``MALLOC_TRIM_THRESHOLD_`` that Dask's nanny gives every worker, and with both the trim
    and the mmap threshold set large."""
    import dask

    dask_value = dask.config.get("distributed.nanny.pre-spawn-environ", {}).get(
        "MALLOC_TRIM_THRESHOLD_"
    )
    if dask_value is None:
        return None
    out: dict[str, Any] = {"dask_value": dask_value, "large": LARGE_THRESHOLD}
    variants: dict[str, dict[str, str]] = {
        "default": {},
        "dask": {"MALLOC_TRIM_THRESHOLD_": str(dask_value)},
        "large": {
            "MALLOC_TRIM_THRESHOLD_": str(LARGE_THRESHOLD),
            "MALLOC_MMAP_THRESHOLD_": str(LARGE_THRESHOLD),
        },
    }
    for label, extra in variants.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra
        cmd = [sys.executable, "-m", "bench.bench_run", "--malloc-child", str(pristine)]
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True
            )
            out[label] = json.loads(done.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.CalledProcessError, ValueError, IndexError) as e:
            log(f"malloc diagnostic ({label}) failed: {e}")
            return None
    return out


# --------------------------------------------------------------------------- the benchmark


def _open(stack: ExitStack, workers: int, threads: int = 1) -> Any:
    from screening.runtime import ClusterConfig, open_client

    t0 = time.perf_counter()
    cfg = ClusterConfig(workers=workers, threads_per_worker=threads, dashboard=False)
    client = stack.enter_context(open_client(cfg))
    client.wait_for_workers(workers, timeout=120)
    log(f"{workers}-worker cluster up in {time.perf_counter() - t0:.1f} s")
    return client


def bench_scaling_memory(quick: bool, work: Path) -> dict[str, Any]:
    """(1) scaling and (4) throughput on small and full scans, (3) memory of one full scan."""
    from screening.pipeline import RunConfig
    from screening.reasons import Segmenter

    repeats, full_repeats, n_full = (1, 1, 2) if quick else (5, 3, 3)
    scratch = Scratch(work)
    small = render("small", SMALL_N, seed=100)
    small_root, warm_root = work / "pristine-small", work / "pristine-warm"
    write_stores(small_root, small)
    write_stores(warm_root, small[:2])
    del small
    full = render("full", n_full, seed=200)
    full_root, one_root = work / "pristine-full", work / "pristine-full1"
    write_stores(full_root, full)
    write_stores(one_root, full[:1])
    del full
    log(f"wrote {SMALL_N} small and {n_full} full-size scan stores")

    cases = {"unet": RunConfig(model="demo"), "reference": RunConfig(segmenter=Segmenter.REFERENCE)}
    runs: dict[str, list[dict[str, Any]]] = {f"{c}_{w}": [] for c in cases for w in (1, 2)}

    once = scratch.timed_run

    with ExitStack() as stack:
        clients = {w: _open(stack, w) for w in (1, 2)}
        warm: dict[int, float] = {}
        for w, client in clients.items():  # imports torch and the engine on every worker
            warm[w] = once(client, warm_root, cases["unet"])["wall_s"]
        log("warm-up runs (2 scans): " + ", ".join(f"{w}w {s:.1f} s" for w, s in warm.items()))
        for rep in range(repeats):
            for name, cfg in cases.items():
                for w, client in clients.items():
                    r = once(client, small_root, cfg)
                    runs[f"{name}_{w}"].append(r)
                    log(
                        f"rep {rep} {name} {w}w: {r['wall_s']:.2f} s {r['by_status']}, "
                        f"other load {r['other_cores']:.2f} cores"
                    )
        # (3) one full-size scan on the 1-worker cluster: peak RSS of worker and client
        client = clients[1]
        store, results = scratch.fresh(one_root)
        (before_w,) = client.run(reset_peak).values()
        before_c = reset_peak()
        mem_run = timed_run(client, store, results, cases["unet"])
        (after_w,) = client.run(read_peak).values()
        after_c = read_peak()
        scratch.drop(store, results)
        log(f"full-size memory run: {mem_run['wall_s']:.1f} s, worker {after_w}, client {after_c}")
        # (4) full-size scans on 2 workers
        full_runs = []
        for rep in range(full_repeats):
            r = once(clients[2], full_root, cases["unet"])
            full_runs.append(r)
            log(f"rep {rep} full x{n_full} 2w: {r['wall_s']:.2f} s {r['by_status']}")
    log("malloc diagnostic (U-Net stage in-process, 2 subprocesses) ...")
    malloc = malloc_diagnostic(small_root)

    res: dict[str, Any] = {"n_small": SMALL_N, "n_full": n_full, "repeats": repeats}
    res["warmup_s"] = warm
    res["scaling"] = {}
    for name in cases:
        one, two = runs[f"{name}_1"], runs[f"{name}_2"]
        speedup = _summ(one)["median"] / _summ(two)["median"]
        res["scaling"][name] = {
            "1": _summ(one) | _cpu(one),
            "2": _summ(two) | _cpu(two),
            "speedup": speedup,
            "efficiency": speedup / 2,
            "speedup_of_minima": _summ(one)["min"] / _summ(two)["min"],
            "stages_1": _stage_medians(one),
            "stages_2": _stage_medians(two),
            "failed_rows": _failed(one + two),
            "walls_1": [r["wall_s"] for r in one],
            "walls_2": [r["wall_s"] for r in two],
        }
    res["memory"] = {
        "worker_before_kib": before_w["rss_kib"],
        "worker_peak_kib": after_w["hwm_kib"],
        "worker_maxrss_kib": after_w["maxrss_kib"],
        "worker_reset": before_w["reset"],
        "client_before_kib": before_c["rss_kib"],
        "client_peak_kib": after_c["hwm_kib"],
        "client_reset": before_c["reset"],
        "ct_mib": CT_FULL_MIB,
        "run_s": mem_run["wall_s"],
        "stages": _stage_medians([mem_run]),
        "failed_rows": _failed([mem_run]),
    }
    res["full"] = _summ(full_runs) | _cpu(full_runs)
    res["full"] |= {"stages": _stage_medians(full_runs), "failed_rows": _failed(full_runs)}
    res["malloc"] = malloc
    return res


def bench_overhead(quick: bool, work: Path) -> dict[str, Any]:
    """(2) per-scan overhead of the distributed run over the same tasks called in-process."""
    from screening.pipeline import RunConfig
    from screening.reasons import Segmenter

    n, repeats = (200, 1) if quick else (1000, 3)
    scratch = Scratch(work)
    tiny = render("tiny", 10, seed=300, labels=False)
    pristine, warm_root = work / "pristine-tiny", work / "pristine-tiny-warm"
    t0 = time.perf_counter()
    write_stores(pristine, tiny, n)
    write_s = time.perf_counter() - t0
    write_stores(warm_root, tiny, 20)
    log(f"wrote {n} tiny stores in {write_s:.1f} s")
    cfg = RunConfig(
        segmenter=Segmenter.CUSTOM,
        segment_fn=box_liver,
        segment_fn_name="bench.bench_run:box_liver",
        overlays=False,
    )
    wide = dataclasses.replace(cfg, max_in_flight=WIDE_IN_FLIGHT)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ("run", "base", "wide", "floor")}
    with ExitStack() as stack:
        client = _open(stack, 1)
        cases: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
            "run": lambda s, r: timed_run(client, s, r, cfg),
            "base": lambda s, r: in_process(s, r, cfg),
            "wide": lambda s, r: timed_run(client, s, r, wide),
            "floor": lambda s, r: dask_floor(client, s, r, cfg, limit=2),
        }
        for fn in cases.values():  # warm-up, every case
            store, results = scratch.fresh(warm_root)
            fn(store, results)
            scratch.drop(store, results)
        for rep in range(repeats):
            for name, fn in cases.items():
                store, results = scratch.fresh(pristine)
                r = fn(store, results)
                assert r.get("n_ok", r["n"]) == n, (name, r.get("by_status"))
                runs[name].append(r)
                scratch.drop(store, results)
                log(
                    f"rep {rep} {name}: {r['wall_s']:.2f} s, "
                    f"other load {r['other_cores']:.2f} cores"
                )

    out: dict[str, Any] = {"n": n, "repeats": repeats, "write_s": write_s}
    out["copy_s_median"] = _med(scratch.copy_s)
    base = runs["base"]
    out["base"] = _summ(base) | {
        "cpu_s": _med([r["cpu_s"] for r in base]),
        "other_cores": _med([r["other_cores"] for r in base]),
    }
    out["plan_s"] = _med([r["plan_s"] for r in base])
    base_cpu = out["base"]["cpu_s"]
    for name in ("run", "wide", "floor"):
        rs = runs[name]
        out[name] = _summ(rs) | _cpu(rs)
        out[name]["cpu_s"] = _med([r["client_cpu_s"] + r["worker_cpu_s"] for r in rs])
        out[name]["failed_rows"] = _failed(rs)
    for name in ("run", "wide"):
        o = out[name]
        o["overhead_ms"] = 1e3 * (o["median"] - out["base"]["median"]) / n
        o["overhead_ms_min"] = 1e3 * (o["min"] - out["base"]["min"]) / n
        o["cpu_overhead_ms"] = 1e3 * (o["cpu_s"] - base_cpu) / n
    out["run"]["overhead_ms_no_plan"] = out["run"]["overhead_ms"] - 1e3 * out["plan_s"] / n
    return out


def bench_run(quick: bool = False) -> dict[str, Any]:
    import dask
    import distributed

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        work = Path(tmp)
        (work / "a").mkdir()
        (work / "b").mkdir()
        log("scaling, memory, throughput ...")
        res = bench_scaling_memory(quick, work / "a")
        log("scheduler overhead ...")
        res["overhead"] = bench_overhead(quick, work / "b")
    res |= {"quick": quick, "total_s": time.perf_counter() - t0}
    res |= {"dask": dask.__version__, "distributed": distributed.__version__}
    res["threads_env"] = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return res


# --------------------------------------------------------------------------- report


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _cpu_cells(r: dict[str, Any]) -> str:
    return f"{r['client_cpu_s']:.2f} + {r['worker_cpu_s']:.2f} | {r['other_cores']:.2f}"


def to_markdown(res: dict[str, Any], cpu: str, git: str) -> str:
    sc, ov, mem, full = res["scaling"], res["overhead"], res["memory"], res["full"]
    n, nf, reps = res["n_small"], res["n_full"], res["repeats"]
    eff = sc["unet"]["efficiency"]
    run, base, wide, floor = ov["run"], ov["base"], ov["wide"], ov["floor"]
    on = ov["n"]
    lines = [
        "# Distributed run (`bench/bench_run.py`)",
        "",
        f"Machine: {cpu}, {os.cpu_count()} logical CPUs, shared and noisy (medians quoted); "
        f"dask / distributed {res['distributed']}; `LocalCluster` worker processes with one "
        f"thread each (OMP/MKL = 1); commit {git}"
        + (" (quick run: too few repeats to quote)" if res["quick"] else "")
        + ". Produced by `.venv/bin/python -m bench.bench_run` (also run by `make bench`) in "
        f"{res['total_s'] / 60:.1f} min; method in its docstring.",
        "",
        "**Method.** Every timing is one `run_cohort(store, results, RunConfig(...), client)` "
        "on `open_client(ClusterConfig(workers=N, dashboard=False))`; cluster start-up and one "
        "untimed warm-up run per cluster (torch and the engine imported on every worker) are "
        "outside the clock. Each timed run gets a fresh results folder and a fresh copy of "
        "pristine scan stores (copied untimed), so no `prep` / `seg` is reused. The 1- and "
        f"2-worker clusters are open together and the {reps} repeats alternate between them. "
        "A run's time includes what `run_cohort` does besides the tasks: the client loads and "
        "verifies the model to name the pipeline, the plan is read, and rows are committed to "
        "Parquet (the model plugin is idempotent, so each worker loaded the weights once, in "
        "the warm-up run). Baselines: for scaling, the same run on 1 worker; for the overhead, the "
        "same three task functions called one after another in the client process on fresh "
        "copies of the same stores, rows through the same `ResultSink`, in the same run with "
        "the repeats interleaved. CPU columns: client process (client, the `LocalCluster` "
        "scheduler, the Parquet sink) + worker processes, seconds per run; *other load* is the "
        "machine's busy CPU (`/proc/stat`) not spent by this benchmark's processes, in cores "
        "(out of 2), median over the runs: the noise the run competed with (±0.05 is "
        "accounting granularity).",
        "",
        f"## Scaling 1 → 2 workers: {n} small scans (48 × 128 × 128)",
        "",
        "| path | workers | runs | median s | min s | scans/hour | CPU s (client + workers) "
        "| other load | speed-up | efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "unet": "U-Net demo, cascade (`RunConfig()`)",
        "reference": "measure only (`segmenter=reference`)",
    }
    for name, desc in labels.items():
        s = sc[name]
        for w in ("1", "2"):
            r = s[w]
            tail = f"{s['speedup']:.2f}× | **{s['efficiency']:.3f}**" if w == "2" else "| "
            lines.append(
                f"| {desc} | {w} | {r['n']} | {r['median']:.2f} | {r['min']:.2f} | "
                f"{3600 * n / r['median']:.0f} | {_cpu_cells(r)} | {tail} |"
            )
    st1, st2 = sc["unet"]["stages_1"], sc["unet"]["stages_2"]
    lines += [
        "",
        f"**Goal: scaling efficiency ≥ {EFFICIENCY_GOAL} from 1 to 2 workers (U-Net): "
        f"{_met(eff >= EFFICIENCY_GOAL)}** (efficiency {eff:.3f} = speed-up "
        f"{sc['unet']['speedup']:.2f}× / 2 on medians; "
        f"{sc['unet']['speedup_of_minima'] / 2:.3f} on minima). Measure-only path: "
        f"{sc['reference']['efficiency']:.3f} ({sc['reference']['speedup_of_minima'] / 2:.3f} "
        "on minima). Per-scan seconds (medians of the rows, 1 → 2 "
        f"workers): preprocess {_f(st1['preprocess_s'])} → {_f(st2['preprocess_s'])}, segment "
        f"{_f(st1['segment_s'])} → {_f(st2['segment_s'])}, measure {_f(st1['measure_s'])} → "
        f"{_f(st2['measure_s'])}."
        + (
            " The margin is under 0.02: on this shared machine read it as at the goal, not "
            "safely past it (or short of it)."
            if abs(eff - EFFICIENCY_GOAL) < 0.02
            else ""
        )
        + " Untimed warm-up runs (2 scans, first use of each cluster): "
        + ", ".join(f"{w} worker(s) {s:.1f} s" for w, s in res["warmup_s"].items())
        + ".",
        "",
        f"## Scheduler overhead per scan: {on} tiny scans (8 × 32 × 32), box segmenter, "
        "1 worker, overlays off",
        "",
        "| case | runs | median s | min s | ms / scan | CPU s (client + workers) | other load |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| `run_cohort`, 1 worker (one fused task per scan, `max_in_flight` default 4 per "
        f"worker) | {run['n']} | "
        f"{run['median']:.2f} | {run['min']:.2f} | {1e3 * run['median'] / on:.1f} | "
        f"{_cpu_cells(run)} |",
        f"| baseline: the three tasks in-process + `ResultSink` | {base['n']} | "
        f"{base['median']:.2f} | {base['min']:.2f} | {1e3 * base['median'] / on:.1f} | "
        f"{base['cpu_s']:.2f} | {base['other_cores']:.2f} |",
        f"| **overhead = run − baseline** | | | | **{run['overhead_ms']:.1f}** | "
        f"{run['cpu_overhead_ms']:.1f} ms/scan | |",
        f"| of which planning (catalog read, completeness checks; timed in-process) | "
        f"{base['n']} | {ov['plan_s']:.2f} | | {1e3 * ov['plan_s'] / on:.2f} | | |",
        f"| `run_cohort` with `max_in_flight={WIDE_IN_FLIGHT}` | {wide['n']} | "
        f"{wide['median']:.2f} | {wide['min']:.2f} | {1e3 * wide['median'] / on:.1f} "
        f"(overhead {wide['overhead_ms']:.1f}) | {_cpu_cells(wide)} |",
        "| Dask alone: 3 chained no-op tasks per scan (the chain used with GPU workers), "
        "2 in flight | "
        f"{floor['n']} | {floor['median']:.2f} | {floor['min']:.2f} | "
        f"{1e3 * floor['median'] / on:.1f} | {_cpu_cells(floor)} |",
        "",
        f"**Goal: scheduler overhead ≤ {OVERHEAD_GOAL_MS:g} ms per scan: "
        f"{_met(run['overhead_ms'] <= OVERHEAD_GOAL_MS)}** ({run['overhead_ms']:.1f} ms per "
        f"scan on medians, {run['overhead_ms_min']:.1f} on minima; "
        f"{run['overhead_ms_no_plan']:.1f} without the planning). Overhead here is wall time "
        f"over the in-process baseline, divided by the {on} scans. The worker runs on one core "
        "while the client and scheduler use the other, so some of the extra CPU "
        f"({run['cpu_overhead_ms']:.1f} ms per scan over the baseline's) overlaps the tasks. "
        "The Dask-alone row is the floor for this task graph on this machine: "
        f"{1e3 * floor['median'] / on:.1f} ms per scan with nothing to compute. Overlays off: "
        "with them each scan's PNG is the same work in run and baseline. Setup (untimed): "
        f"writing the {on} stores {ov['write_s']:.1f} s ({1e3 * ov['write_s'] / on:.1f} ms "
        f"per store), copying them for a run {ov['copy_s_median']:.1f} s.",
        "",
        "## Peak memory: one full-size scan (300 × 512 × 512), U-Net demo, cascade, 1 worker",
        "",
        "| process | RSS before MiB | peak RSS MiB | increase MiB | peak / CT | increase / CT |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ct = mem["ct_mib"]
    for who, label in (("worker", "worker"), ("client", "client (with the scheduler)")):
        b, p = mem[f"{who}_before_kib"] / 1024, mem[f"{who}_peak_kib"] / 1024
        lifetime = "" if mem[f"{who}_reset"] else " (lifetime: no reset)"
        lines.append(
            f"| {label} | {b:.0f} | {p:.0f}{lifetime} | {p - b:.0f} | {p / ct:.1f}× | "
            f"{(p - b) / ct:.1f}× |"
        )
    ms, fs = mem["stages"], full["stages"]
    lines += [
        "",
        f"The int16 CT is {ct:.0f} MiB. Peak = `VmHWM` after resetting it "
        "(`/proc/self/clear_refs`, freed heap trimmed first) just before the run: the whole "
        "process at its highest during this scan (Python, dask, torch and the model included); "
        "the increase is over the warm, idle process. The worker's lifetime `ru_maxrss`, "
        f"which includes the earlier small-scan runs, is {mem['worker_maxrss_kib'] / 1024:.0f} "
        f"MiB. The run took {mem['run_s']:.1f} s "
        f"(preprocess {_f(ms['preprocess_s'], 2)}, segment {_f(ms['segment_s'], 2)}, measure "
        f"{_f(ms['measure_s'], 2)} s).",
        "",
        "## Scans per hour on CPU, 2 workers, U-Net demo (cascade)",
        "",
        "| scans | per run | runs | median s | min s | scans/hour | other load | preprocess s "
        "| segment s | measure s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| small (48 × 128 × 128) | {n} | {sc['unet']['2']['n']} | "
        f"{sc['unet']['2']['median']:.2f} | {sc['unet']['2']['min']:.2f} | "
        f"**{3600 * n / sc['unet']['2']['median']:.0f}** | {sc['unet']['2']['other_cores']:.2f} "
        f"| {_f(st2['preprocess_s'])} | {_f(st2['segment_s'])} | {_f(st2['measure_s'])} |",
        f"| full (300 × 512 × 512) | {nf} | {full['n']} | {full['median']:.2f} | "
        f"{full['min']:.2f} | **{3600 * nf / full['median']:.0f}** | {full['other_cores']:.2f} "
        f"| {_f(fs['preprocess_s'])} | {_f(fs['segment_s'])} | {_f(fs['measure_s'])} |",
        "",
        "Stage seconds are per scan, medians of the rows over all timed runs (no separate "
        "preprocess without GPU workers: one fused task per scan preprocesses inside "
        "`segment_s`; `measure_s` includes reading the store and writing the overlay PNG). "
        "Scans/hour = scans per median run wall time, so a run's fixed costs (client model "
        "load, planning, commit) are in it; they weigh on runs this short, and with "
        f"{nf} full-size scans on 2 workers the last round is uneven.",
        "",
    ]
    mal = res.get("malloc")
    if mal:
        d, k, big = mal["default"], mal["dask"], mal["large"]
        large = f"{LARGE_THRESHOLD // 2**20} MiB"
        lines += [
            "## Engine fix: Dask's `MALLOC_TRIM_THRESHOLD_` slowed the U-Net stage",
            "",
            f"Dask's nanny starts every worker with `MALLOC_TRIM_THRESHOLD_={mal['dask_value']}` "
            "(`distributed.nanny.pre-spawn-environ`). Setting it turns off glibc's dynamic mmap "
            "threshold, so large torch / numpy buffers keep being `mmap`ed afresh and their pages "
            "fault in again (see the sys CPU). Same code in fresh processes: `write_prep` + "
            f"`segment_store` (demo, cascade, one thread) on {d['n'] // 2} small scans, two "
            "timed passes after a warm-up pass. Since this was measured, `open_client` starts "
            "local workers with both thresholds at 256 MiB (`ClusterConfig.malloc_threshold_mib`; "
            "the run tables above already have it); workers of other clusters need the same "
            "environment (cluster/README.md).",
            "",
            "| allocator environment | scans | median s / scan | user CPU s | sys CPU s |",
            "|---|---:|---:|---:|---:|",
        ]
        rows = {
            "glibc default (nothing set)": d,
            f"`MALLOC_TRIM_THRESHOLD_={mal['dask_value']}` (as in every Dask worker)": k,
            f"`MALLOC_TRIM_THRESHOLD_` and `MALLOC_MMAP_THRESHOLD_` = {large}": big,
        }
        for label, r in rows.items():
            lines.append(
                f"| {label} | {r['n']} | {r['median_s']:.3f} | {r['user_s']:.2f} | "
                f"{r['sys_s']:.2f} |"
            )
        lines += [
            "",
            f"Dask's setting: {k['median_s'] / d['median_s']:.2f}× the glibc default per scan; "
            f"both thresholds at {large}: {big['median_s'] / d['median_s']:.2f}×.",
            "",
        ]
    failed = sum(sc[k]["failed_rows"] for k in sc) + mem["failed_rows"] + full["failed_rows"]
    failed += sum(ov[k]["failed_rows"] for k in ("run", "wide"))
    if failed:
        lines += [f"Warning: {failed} row(s) not `ok` in the timed runs (see the JSON).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.common import cpu_model, git_state

    p = argparse.ArgumentParser(prog="python -m bench.bench_run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 repeat, 200 tiny scans, 2 full")
    p.add_argument("--out", type=Path, help="also write the markdown here")
    p.add_argument("--json", type=Path, help="write the raw results here")
    p.add_argument("--malloc-child", metavar="STORE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.malloc_child:
        print(json.dumps(_malloc_child(args.malloc_child)))
        return 0
    res = bench_run(args.quick)
    emit(to_markdown(res, cpu_model(), git_state()), res, args.out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
