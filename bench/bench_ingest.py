"""Ingest of one DICOM series on one worker, against plain pydicom read-and-stack.

``python -m bench.bench_ingest [--quick] [--out PATH] [--json PATH]`` prints a markdown report.

**Setup (untimed).** A full-size phantom (``make_phantom(PhantomSpec(), ScanGeometry.preset(
"full"), seed=0)``, 512x512x300 int16) is written with ``write_dicom_series`` as one file per
slice, explicit VR little endian, uncompressed, into a temporary folder. The files are read once
before timing, so every timed run reads them from the page cache (CPU-bound numbers).

**Cases**, timed in the same process and run (median of the repeats after one warm-up):

* ``baseline``: ``pydicom.dcmread(path).pixel_array`` for every file, sort by
  ImagePositionPatient z, ``np.stack`` (stored values, no rescale, no checks, no output).
* ``task``: :func:`screening.ingest.run.ingest_series` alone on a work item from
  ``scan_files`` + ``plan`` (built untimed): validate, read pixels, HU, canonical orientation,
  sha256, zarr store. Each repeat writes into a fresh store root (the task skips complete
  stores), deleted untimed between repeats.
* ``e2e``: ``walk_source`` + ``scan_files`` (header reads) + ``plan`` + ``ingest_series``, no
  Dask: what one worker does for one series, discovery included.
* ``e2e_worker``: the same function run as a task on one single-threaded worker of the
  embedded Dask cluster (``screening.runtime.open_client``, so with its malloc settings); wall
  time seen by the client (task round trip included), CPU seconds measured inside the worker.
* ``phase_*``: the steps inside the task, each timed alone on the same input, so the time
  can be attributed (they add up to about the task; the remainder is Python glue). Some are
  the slower ways the library used to take, kept as before/after figures.
* ``proto_*``: floors written here and not in the library (chunks encoded without zarr, plain
  zarr writes).

**One worker.** OMP/BLAS/blosc thread counts are 1, zarr's ``threading.max_workers`` is 1,
blosc runs in the calling thread (``--pin`` also pins the process to one CPU; off by default,
since on a shared machine a pinned process cannot escape a busy core). Headline cases are timed
round-robin, so noise hits them alike; median CPU seconds are reported next to wall time.

**Memory.** ``tracemalloc`` peak of one untimed run per case (numpy and pydicom buffers are
reported to it), as a multiple of one int16 volume; and, per case, the peak RSS increase of a
fresh subprocess that runs the case once (``VmHWM`` after minus ``VmRSS`` before).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLOSC_NTHREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from bench.bench_synthetic import Result  # noqa: E402
from bench.bench_synthetic import _peak_mib as traced_peak_mib  # noqa: E402
from bench.common import cpu_model, git_state  # noqa: E402

__all__ = ["Fixture", "bench_ingest", "make_fixture", "one_worker", "to_markdown"]

ROOT = Path(__file__).resolve().parent.parent
MB = 1e6
REPEATS = 5
QUICK_REPEATS = 1
KEY_SECRET = b"k" * 32
GOAL_SPEED_RATIO = 0.8  # ours / baseline speed
GOAL_PEAK_VOLUMES = 3.0  # peak memory in int16 volumes
RSS_CASES = ("baseline", "task", "e2e")


# --------------------------------------------------------------------------- one worker


@contextmanager
def one_worker(pin_cpu: bool = False) -> Iterator[dict[str, Any]]:
    """zarr on one worker thread, blosc on one thread, the process on one CPU; restored on exit.

    zarr 3 creates its event-loop thread and thread pool lazily; existing ones are torn down on
    entry and exit so they are rebuilt with the current settings and CPU affinity.
    """
    import numcodecs.blosc  # type: ignore[import-untyped]
    import zarr
    import zarr.core.sync

    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    old_workers = zarr.config.get("threading.max_workers")
    old_blosc_threads = numcodecs.blosc.set_nthreads(1)
    old_use_threads = numcodecs.blosc.use_threads
    zarr.core.sync.cleanup_resources()
    zarr.config.set({"threading.max_workers": 1})
    numcodecs.blosc.use_threads = False
    if pin_cpu and old_affinity:
        os.sched_setaffinity(0, {max(old_affinity)})
    try:
        yield {
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if old_affinity else None,
            "zarr_max_workers": zarr.config.get("threading.max_workers"),
            "blosc_threads": 1,
            "blosc_use_threads": numcodecs.blosc.use_threads,
        }
    finally:
        zarr.core.sync.cleanup_resources()
        zarr.config.set({"threading.max_workers": old_workers})
        numcodecs.blosc.set_nthreads(old_blosc_threads)
        numcodecs.blosc.use_threads = old_use_threads
        if pin_cpu and old_affinity:
            os.sched_setaffinity(0, old_affinity)


# --------------------------------------------------------------------------- fixture


@dataclass(frozen=True)
class Fixture:
    """The DICOM series on disk and its sizes."""

    dicom_dir: Path
    paths: tuple[str, ...]
    shape_zyx: tuple[int, int, int]
    raw_bytes: int  # one int16 volume
    input_bytes: int  # sum of the DICOM file sizes

    @property
    def n_slices(self) -> int:
        return self.shape_zyx[0]


def make_fixture(folder: Path, size: str = "full", seed: int = 0) -> Fixture:
    """Render the phantom and write it as an uncompressed explicit-VR-LE DICOM series."""
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
    from screening.synthetic.writers import DicomInfo, write_dicom_series

    geometry = ScanGeometry.preset(size)  # type: ignore[arg-type]
    phantom = make_phantom(PhantomSpec(), geometry, seed=seed)
    dicom_dir = folder / "series"
    written = write_dicom_series(phantom, dicom_dir, DicomInfo(transfer_syntax="explicit"))
    nz, ny, nx = phantom.hu.shape
    del phantom
    paths = tuple(str(p) for p in sorted(written))
    for p in paths:  # into the page cache
        Path(p).read_bytes()
    return Fixture(
        dicom_dir=dicom_dir,
        paths=paths,
        shape_zyx=(nz, ny, nx),
        raw_bytes=nz * ny * nx * 2,
        input_bytes=sum(os.path.getsize(p) for p in paths),
    )


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the cases


def baseline_read(paths: Sequence[str]) -> NDArray[Any]:
    """Plain pydicom: decode every file, sort by ImagePositionPatient z, stack."""
    import pydicom

    slices = []
    for path in paths:
        ds = pydicom.dcmread(path)
        slices.append((float(ds.ImagePositionPatient[2]), ds.pixel_array))
    slices.sort(key=lambda s: s[0])
    return np.stack([a for _, a in slices])


def _found(fx: Fixture) -> tuple[Any, list[Any], list[Any]]:
    from screening.ingest.sources import SourceSpec, walk_source

    spec = SourceSpec(path=str(fx.dicom_dir), label="series", cohort="bench")
    found, problems = walk_source(spec, fx.dicom_dir.parent / ".staging")
    return spec, found, problems


def end_to_end(fx: Fixture, store_root: Path) -> dict[str, Any]:
    """walk_source + scan_files + plan + ingest_series for the one series (no Dask)."""
    from screening.ingest import IngestConfig, PseudonymKey
    from screening.ingest.discovery import plan, scan_files
    from screening.ingest.run import ingest_series

    key = PseudonymKey(KEY_SECRET)
    _, found, problems = _found(fx)
    scanned = {r.path: r for r in scan_files(sorted({f.path for f in found}))}
    work = plan(found, scanned, problems, key)
    assert len(work.items) == 1 and not work.rejections, work
    return ingest_series(work.items[0], str(store_root), IngestConfig(), key)


def e2e_on_worker(fx: Fixture, store_root: str) -> dict[str, Any]:
    """:func:`end_to_end` as a Dask task, timed inside the worker (fresh store first, untimed)."""
    shutil.rmtree(store_root, ignore_errors=True)
    c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    row = end_to_end(fx, Path(store_root))
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "cpu_s": c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime,
        "sys_s": c1.ru_stime - c0.ru_stime,
        "status": row["status"],
    }


def work_item(fx: Fixture) -> Any:
    from screening.ingest import PseudonymKey
    from screening.ingest.discovery import plan, scan_files

    _, found, problems = _found(fx)
    scanned = {r.path: r for r in scan_files([f.path for f in found])}
    work = plan(found, scanned, problems, PseudonymKey(KEY_SECRET))
    assert len(work.items) == 1 and not work.rejections, work
    return work.items[0]


# --------------------------------------------------------------------------- prototypes


def blosc_files(ct: NDArray[np.int16], folder: Path, cfg: Any) -> int:
    """Encode every chunk with numcodecs Blosc (the store's settings) and write a file each."""
    from numcodecs import Blosc  # type: ignore[import-untyped]

    shuffle = {"shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}.get(
        cfg.shuffle, Blosc.NOSHUFFLE
    )
    cname = "zstd" if cfg.codec == "blosc-zstd" else "lz4"
    codec = Blosc(cname=cname, clevel=min(cfg.level, 9), shuffle=shuffle)
    folder.mkdir(parents=True, exist_ok=True)
    cz, cy, cx = cfg.chunks_zyx
    nz, ny, nx = ct.shape
    total = 0
    for z in range(0, nz, cz):
        for y in range(0, ny, cy):
            for x in range(0, nx, cx):
                block = np.ascontiguousarray(ct[z : z + cz, y : y + cy, x : x + cx])
                data = codec.encode(block)
                (folder / f"{z}.{y}.{x}").write_bytes(data)
                total += len(data)
    return total


def zarr_write(ct: NDArray[np.int16], folder: Path, cfg: Any, write_empty_chunks: bool) -> None:
    """Plain zarr v3 array write with the store's codec and chunks."""
    import zarr

    group = zarr.open_group(store=str(folder), mode="w", zarr_format=3)
    arr = group.create_array(
        name="ct",
        shape=ct.shape,
        dtype=ct.dtype,
        chunks=tuple(min(c, n) for c, n in zip(cfg.chunks_zyx, ct.shape, strict=True)),
        compressors=cfg.compressors(),
        fill_value=0,
        config={"write_empty_chunks": write_empty_chunks},
    )
    arr[...] = ct


# --------------------------------------------------------------------------- timing


def _fresh(path: Path) -> Callable[[], None]:
    def setup() -> None:
        shutil.rmtree(path, ignore_errors=True)

    return setup


def _noop() -> None:
    return None


def _once(fn: Callable[[], object], setup: Callable[[], None], out: dict[str, list[float]]) -> None:
    setup()
    gc.collect()
    c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    fn()
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    out["wall_s"].append(wall)
    out["cpu_s"].append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    out["sys_s"].append(c1.ru_stime - c0.ru_stime)


def _time(
    fn: Callable[[], object], repeats: int, warmup: int, setup: Callable[[], None] = _noop
) -> dict[str, list[float]]:
    for _ in range(warmup):
        setup()
        fn()
    out: dict[str, list[float]] = {"wall_s": [], "cpu_s": [], "sys_s": []}
    for _ in range(repeats):
        _once(fn, setup, out)
    return out


def _time_interleaved(
    cases: Sequence[tuple[Callable[[], object], Callable[[], None]]], repeats: int, warmup: int
) -> list[dict[str, list[float]]]:
    """Round-robin repeats (A B C A B C ...), so machine noise hits every case alike."""
    for fn, setup in cases:
        for _ in range(warmup):
            setup()
            fn()
    outs: list[dict[str, list[float]]] = [{"wall_s": [], "cpu_s": [], "sys_s": []} for _ in cases]
    for _ in range(repeats):
        for (fn, setup), out in zip(cases, outs, strict=True):
            _once(fn, setup, out)
    for _, setup in cases:
        setup()
    return outs


def _peak_mib(fn: Callable[[], object], setup: Callable[[], None] = _noop) -> float:
    setup()
    return traced_peak_mib(fn)


def _case(
    name: str,
    description: str,
    fn: Callable[[], object],
    *,
    repeats: int,
    warmup: int,
    setup: Callable[[], None] = _noop,
    memory: bool = False,
    meta: dict[str, Any] | None = None,
    baseline_of: str | None = None,
    log: bool = True,
) -> Result:
    if log:
        print(f"  {name} ...", file=sys.stderr, flush=True)
    peak = _peak_mib(fn, setup) if memory else None
    times = _time(fn, repeats, warmup, setup)
    setup()
    return Result(
        name=name,
        description=description,
        peak_mib=peak,
        baseline_of=baseline_of,
        meta=dict(meta or {}),
        **times,
    )


# --------------------------------------------------------------------------- RSS subprocess


def _status_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _warm_lazy_imports(paths: Sequence[str]) -> None:
    """Trigger the imports pydicom and zarr make on first use, so RSS counts data only."""
    import zarr
    from zarr.storage import MemoryStore

    from screening.store.scan import StoreConfig

    baseline_read(paths[:1])
    group = zarr.open_group(store=MemoryStore(), mode="w", zarr_format=3)
    arr = group.create_array(
        name="a",
        shape=(16, 16),
        dtype="int16",
        chunks=(16, 16),
        compressors=StoreConfig().compressors(),
    )
    arr[...] = np.ones((16, 16), dtype=np.int16)


def _rss_child(case: str, dicom_dir: Path, store_root: Path) -> dict[str, int]:
    """Run one case once in this (fresh) process; RSS before and peak RSS after, in KiB."""
    import pydicom  # noqa: F401  (imports are not part of the case)
    import zarr  # noqa: F401

    import screening.ingest.run  # noqa: F401

    paths = tuple(sorted(str(p) for p in dicom_dir.iterdir() if p.is_file()))
    fx = Fixture(dicom_dir, paths, (len(paths), 0, 0), 0, 0)
    fn: Callable[[], object]
    if case == "baseline":
        fn = lambda: baseline_read(paths)  # noqa: E731
    elif case == "task":
        from screening.ingest import IngestConfig, PseudonymKey
        from screening.ingest.run import ingest_series

        item, key, cfg = work_item(fx), PseudonymKey(KEY_SECRET), IngestConfig()
        fn = lambda: ingest_series(item, str(store_root), cfg, key)  # noqa: E731
    elif case == "e2e":
        fn = lambda: end_to_end(fx, store_root)  # noqa: E731
    else:
        raise ValueError(case)
    with one_worker(pin_cpu=False):
        _warm_lazy_imports(paths)
        gc.collect()
        reset = _reset_peak_rss()
        before, hwm_before = _status_kib("VmRSS"), _status_kib("VmHWM")
        fn()
        hwm_after = _status_kib("VmHWM")
    return {
        "rss_before_kib": before,
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": hwm_after,
        "hwm_reset": reset,
    }


def rss_delta_mib(case: str, fx: Fixture, store_root: Path) -> float | None:
    """Peak RSS increase of ``case`` run once in a fresh subprocess (None if it fails)."""
    shutil.rmtree(store_root, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_ingest",
        "--rss-case",
        case,
        "--dicom",
        str(fx.dicom_dir),
        "--store",
        str(store_root),
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError) as e:
        print(f"  RSS run for {case} failed: {e}", file=sys.stderr)
        return None
    finally:
        shutil.rmtree(store_root, ignore_errors=True)
    if out["hwm_after_kib"] <= out["hwm_before_kib"]:  # the run never beat the import peak
        print(f"  RSS run for {case}: peak not above the pre-run peak", file=sys.stderr)
        return None
    return (out["hwm_after_kib"] - out["rss_before_kib"]) / 1024


# --------------------------------------------------------------------------- the benchmark


def _store_desc(cfg: Any) -> str:
    chunks = "×".join(str(c) for c in cfg.chunks_zyx)
    if cfg.codec == "none":
        return f"uncompressed, chunks {chunks}"
    return f"{cfg.codec} level {cfg.level}, {cfg.shuffle}, chunks {chunks}"


def bench_ingest(
    quick: bool = False,
    *,
    size: str = "full",
    repeats: int | None = None,
    rss: bool = True,
    pin_cpu: bool = False,
    log: bool = True,
) -> list[Result]:
    """All cases and phases; sizes, throughputs and goals are in each Result's ``meta``."""
    import pydicom

    from screening.ingest import IngestConfig, PseudonymKey
    from screening.ingest import dicom as dicom_mod
    from screening.ingest.discovery import plan, scan_files
    from screening.ingest.run import ingest_series
    from screening.ingest.validate import validate_stack
    from screening.ingest.volume import hu_int16_in_place, to_hu_int16
    from screening.runtime import ClusterConfig, open_client
    from screening.store.scan import StoreConfig, ct_sha256, write_scan_store

    reps = repeats if repeats is not None else (QUICK_REPEATS if quick else REPEATS)
    warmup = 1
    key = PseudonymKey(KEY_SECRET)
    cfg = IngestConfig()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        if log:
            print(f"setup: {size} phantom -> DICOM ...", file=sys.stderr, flush=True)
        fx = make_fixture(tmp, size)
        store = tmp / "store"
        common = {
            "shape_zyx": list(fx.shape_zyx),
            "n_slices": fx.n_slices,
            "raw_bytes": fx.raw_bytes,
            "input_bytes": fx.input_bytes,
            "n_files": len(fx.paths),
            "store_config": _store_desc(cfg.store),
        }
        item = work_item(fx)
        one_dask_worker = ClusterConfig(workers=1, threads_per_worker=1, gpu_workers=0)
        with one_worker(pin_cpu) as pinning, open_client(one_dask_worker) as client:
            common["one_worker"] = pinning

            def case(name: str, description: str, fn: Callable[[], object], **kw: Any) -> Result:
                meta = {**common, **kw.pop("meta", {})}
                r = _case(
                    name, description, fn, repeats=reps, warmup=warmup, meta=meta, log=log, **kw
                )
                results.append(r)
                return r

            # -- the three headline cases: one untimed tracemalloc run each, then interleaved
            # repeats (baseline, task, e2e, baseline, ...) so that noise hits all three alike
            headline: list[tuple[str, str, Callable[[], object], Callable[[], None]]] = [
                (
                    "baseline",
                    "pydicom dcmread + pixel_array, sort by z, np.stack",
                    lambda: baseline_read(fx.paths),
                    _noop,
                ),
                (
                    "task",
                    "ingest_series (validate, read, HU, sha256, zarr store)",
                    lambda: ingest_series(item, str(store), cfg, key),
                    _fresh(store),
                ),
                (
                    "e2e",
                    "walk_source + scan_files + plan + ingest_series (no Dask)",
                    lambda: end_to_end(fx, store),
                    _fresh(store),
                ),
            ]
            if log:
                print("  baseline, task, e2e (interleaved) ...", file=sys.stderr, flush=True)
            peaks = [_peak_mib(fn, setup) for _, _, fn, setup in headline]
            timed = _time_interleaved([(fn, st) for _, _, fn, st in headline], reps, warmup)
            for (name, description, _, _), peak, times in zip(headline, peaks, timed, strict=True):
                results.append(
                    Result(
                        name=name,
                        description=description,
                        peak_mib=peak,
                        baseline_of="task" if name == "baseline" else None,
                        meta=dict(common),
                        **times,
                    )
                )
            # -- the e2e on a Dask worker, in its own round-robin with the baseline: inside the
            # three-way round-robin its times spread 0.44-0.82 s (CPU time tracking wall) against
            # a steady 0.39-0.40 s here; the cause was not found.
            worker_store = str(tmp / "worker-store")
            on_worker: list[dict[str, Any]] = []

            def e2e_worker() -> None:
                done = client.submit(e2e_on_worker, fx, worker_store, pure=False).result()
                assert done["status"] == "ok", done
                on_worker.append(done)

            if log:
                print("  baseline, e2e_worker (interleaved) ...", file=sys.stderr, flush=True)
            base_block, worker_times = _time_interleaved(
                [(headline[0][2], _noop), (e2e_worker, _noop)], reps, warmup
            )
            # The worker's own CPU seconds (the client only waits): the last `reps` runs.
            worker_times["cpu_s"] = [w["cpu_s"] for w in on_worker[-reps:]]
            worker_times["sys_s"] = [w["sys_s"] for w in on_worker[-reps:]]
            shutil.rmtree(worker_store, ignore_errors=True)
            results.append(
                Result(
                    name="e2e_worker",
                    description="the same e2e as a task on one single-threaded Dask worker "
                    "(embedded cluster), timed round-robin with the baseline only",
                    meta={
                        **common,
                        "baseline_block_median_s": statistics.median(base_block["wall_s"]),
                        "in_task_wall_s": [w["wall_s"] for w in on_worker[-reps:]],
                    },
                    **worker_times,
                )
            )
            store_row = ingest_series(item, str(store), cfg, key)
            assert store_row["status"] == "ok", store_row
            store_bytes = _dir_bytes(store / store_row["store_path"])
            from screening.store.scan import open_scan_store

            ours = open_scan_store(store / store_row["store_path"]).read()
            base = baseline_read(fx.paths)
            same = bool(np.array_equal(ours, np.clip(base.astype(np.int32) - 1024, -1024, 32767)))
            del ours, base
            shutil.rmtree(store)
            for r in results:
                r.meta.update(store_bytes=store_bytes, matches_baseline=same)

            # -- phases, each alone on the same input
            case(
                "phase_headers",
                "scan_files (header reads; values decoded from pydicom's raw elements)",
                lambda: scan_files(fx.paths),
            )
            case(
                "phase_headers_pydicom",
                "  the same with pydicom converting every value (the library before)",
                lambda: [dicom_mod.read_header(p, raw_values=False) for p in fx.paths],
            )
            case(
                "phase_dcmread_headers",
                "  pydicom.dcmread(stop_before_pixels=True) per file: the parse alone",
                lambda: [pydicom.dcmread(p, stop_before_pixels=True) for p in fx.paths],
            )
            _, found, problems = _found(fx)
            scanned = {r.path: r for r in scan_files(fx.paths)}
            case("phase_plan", "plan (grouping)", lambda: plan(found, scanned, problems, key))
            case(
                "phase_read_series",
                "read_dicom_series (validate, read pixels, HU, sha256 per slice, one header)",
                lambda: dicom_mod.read_dicom_series(
                    item.headers, item.names, cfg.validation, folder=item.source_path
                ),
            )
            hs = item.headers
            case(
                "phase_validate",
                "  validate_stack",
                lambda: validate_stack(
                    [h.orientation for h in hs],
                    [h.position for h in hs],
                    item.names,
                    cfg.validation,
                    path=item.source_path,
                ),
            )
            out = np.empty(fx.shape_zyx, dtype=np.int16)
            # The library reads uncompressed 16-bit slices in display order straight into the
            # volume at the offset that discovery recorded (DicomHeader.raw_pixels), converts
            # them there and hashes each; pydicom is the fallback for anything else.
            direct = all(
                h.raw_pixels is not None
                and dicom_mod._in_place_ok(h.raw_pixels, False, (False,) * 3)
                for h in hs
            )
            if direct:
                order = sorted(range(len(hs)), key=lambda i: hs[i].position[2])
                raw_of = [hs[i].raw_pixels for i in order]
                targets = [
                    out[k].view(np.int16 if r.signed else np.uint16) for k, r in enumerate(raw_of)
                ]

                def read_into() -> None:
                    for k, i in enumerate(order):
                        dicom_mod._read_raw_into(hs[i], item.names[i], targets[k])

                case(
                    "phase_raw_read",
                    "  _read_raw_into each slice of the volume (open, seek, readinto)",
                    read_into,
                )
                stored = out.copy()

                def restore() -> None:
                    np.copyto(out, stored)

                def hu_in_place() -> None:
                    for k, r in enumerate(raw_of):
                        pad = dicom_mod._padding_in(targets[k], r.padding)
                        hu_int16_in_place(targets[k], int(r.intercept), pad)

                case(
                    "phase_to_hu",
                    "  padding mask + hu_int16_in_place per slice (clip only if min/max say so)",
                    hu_in_place,
                    setup=restore,
                )

                def hu_clip_always() -> None:
                    for k, r in enumerate(raw_of):
                        t, ic = targets[k], int(r.intercept)
                        info = np.iinfo(t.dtype)
                        lo, hi = max(-1024 - ic, info.min), min(32767 - ic, info.max)
                        np.clip(t, lo, hi, out=t)
                        np.add(t, np.array(ic % 65536, np.uint16).view(t.dtype), out=t)

                case(
                    "phase_to_hu_clip",
                    "  the same with np.clip on every slice (the library before)",
                    hu_clip_always,
                    setup=restore,
                )
                del stored
                case(
                    "phase_first_header",
                    "  dcmread of one header, no pixels (covariates)",
                    lambda: pydicom.dcmread(hs[0].path, stop_before_pixels=True),
                )
            # The pydicom path (the whole read before the direct reader; now the fallback for
            # compressed or unusual files): split when it is the path taken, context otherwise.
            sub = "  " if not direct else "pydicom fallback (not taken here): "
            case(
                "phase_pydicom_dcmread",
                f"{sub}pydicom.dcmread per file (parse + PixelData bytes)",
                lambda: [pydicom.dcmread(h.path) for h in hs],
            )
            datasets: list[Any] = []

            def fresh_datasets() -> None:
                datasets[:] = [pydicom.dcmread(h.path) for h in hs]

            case(
                "phase_pydicom_decode",
                f"{sub}ds.pixel_array per file (decode)",
                lambda: [np.asarray(ds.pixel_array) for ds in datasets],
                setup=fresh_datasets,
            )
            if not direct:
                fresh_datasets()
                decoded = [np.asarray(ds.pixel_array) for ds in datasets]
                rescale = [dicom_mod._rescale(ds, "x", "x") for ds in datasets]

                def to_hu() -> None:
                    for k, (ds, stored) in enumerate(zip(datasets, decoded, strict=True)):
                        pad = dicom_mod._padding_mask(ds, stored)
                        to_hu_int16(stored, rescale[k][0], rescale[k][1], pad, out=out[k])

                case("phase_to_hu", "  padding mask + to_hu_int16 (float32) per slice", to_hu)
                decoded.clear()
            datasets.clear()
            volume, _ = dicom_mod.read_dicom_series(
                item.headers, item.names, cfg.validation, folder=item.source_path
            )
            sha = ct_sha256(volume.ct_hu)
            assert sha == volume.ct_sha256  # the per-slice digest is the whole volume's
            case(
                "phase_sha256",
                "ct_sha256 as a second pass over the volume (the library before; now per slice "
                "inside read_series)",
                lambda: ct_sha256(volume.ct_hu),
            )
            attrs = {"scan_id": item.scan_id}
            case(
                "phase_write_store",
                f"write_scan_store, default StoreConfig ({_store_desc(cfg.store)})",
                lambda: write_scan_store(store, item.scan_id, volume, attrs, cfg.store, None, sha),
                setup=_fresh(store),
            )
            raw_cfg = StoreConfig(codec="none")
            case(
                "phase_write_store_nocodec",
                "write_scan_store, codec none (zarr + file I/O, no compression)",
                lambda: write_scan_store(store, item.scan_id, volume, attrs, raw_cfg, None, sha),
                setup=_fresh(store),
            )

            # -- floors (this file only, not library code)
            blosc_dir = tmp / "blosc-files"
            case(
                "proto_blosc_files",
                f"numcodecs Blosc encode per {cfg.store.chunks_zyx} chunk + one file each "
                "(no zarr)",
                lambda: blosc_files(volume.ct_hu, blosc_dir, cfg.store),
                setup=_fresh(blosc_dir),
            )
            for empty in (False, True):
                case(
                    f"proto_zarr_{'write_empty' if empty else 'default'}",
                    f"zarr create_array + arr[...] = ct, same codec and chunks, "
                    f"write_empty_chunks={empty}",
                    lambda e=empty: zarr_write(volume.ct_hu, blosc_dir, cfg.store, e),  # type: ignore[misc]
                    setup=_fresh(blosc_dir),
                )
        if rss:
            if log:
                print("  peak RSS in fresh subprocesses ...", file=sys.stderr, flush=True)
            by_name = {r.name: r for r in results}
            for name in RSS_CASES:
                by_name[name].meta["rss_delta_mib"] = rss_delta_mib(name, fx, tmp / "rss-store")
    return results


# --------------------------------------------------------------------------- report


def _med(r: Result) -> float:
    return r.median


def _cpu_med(r: Result) -> float:
    """Median process CPU seconds: less sensitive than wall time to a busy machine."""
    return statistics.median(r.cpu_s) / r.per


def summary(results: Sequence[Result]) -> dict[str, Any]:
    """Headline numbers: speed ratios, memory multiples, store sizes, goals met."""
    by = {r.name: r for r in results}
    base, task, e2e, worker = by["baseline"], by["task"], by["e2e"], by["e2e_worker"]
    raw = base.meta["raw_bytes"]
    vol_mib = raw / 2**20
    out: dict[str, Any] = {
        "ratio_task": _med(base) / _med(task),
        "ratio_e2e": _med(base) / _med(e2e),
        "ratio_task_min": base.min / task.min,
        "ratio_e2e_min": base.min / e2e.min,
        "ratio_task_cpu": _cpu_med(base) / _cpu_med(task),
        "ratio_e2e_cpu": _cpu_med(base) / _cpu_med(e2e),
        # against the baseline of its own round-robin
        "ratio_e2e_worker": worker.meta["baseline_block_median_s"] / _med(worker),
        "store_bytes": task.meta["store_bytes"],
        "store_over_raw": task.meta["store_bytes"] / raw,
        "store_over_input": task.meta["store_bytes"] / task.meta["input_bytes"],
        "matches_baseline": task.meta["matches_baseline"],
    }
    floor = [by.get(f"phase_{p}") for p in ("dcmread_headers", "sha256")] + [
        by.get("proto_blosc_files")
    ]
    if all(floor):
        # Work the end to end cannot avoid under the data contract: parse every header, one
        # sha256 over the volume, encode every chunk. As a fraction of the baseline's time.
        out["e2e_floor_s"] = sum(_med(r) for r in floor if r)
        out["e2e_floor_over_baseline"] = out["e2e_floor_s"] / _med(base)
    for r in (base, task, e2e):
        out[f"peak_volumes_{r.name}"] = (r.peak_mib or 0.0) / vol_mib
        rss = r.meta.get("rss_delta_mib")
        out[f"rss_volumes_{r.name}"] = None if rss is None else rss / vol_mib
    out["speed_goal_met"] = out["ratio_task"] >= GOAL_SPEED_RATIO
    out["memory_goal_met"] = max(out["peak_volumes_task"], out["peak_volumes_e2e"]) < (
        GOAL_PEAK_VOLUMES
    )
    return out


def _s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.2f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def to_markdown(
    results: Sequence[Result], cpu: str | None = None, quick: bool = False, git: str | None = None
) -> str:
    by = {r.name: r for r in results}
    base, task = by["baseline"], by["task"]
    meta = base.meta
    n, raw, inp = meta["n_slices"], meta["raw_bytes"], meta["input_bytes"]
    vol_mib = raw / 2**20
    s = summary(results)
    nz, ny, nx = meta["shape_zyx"]
    affinity = (meta.get("one_worker") or {}).get("cpu_affinity")
    pinned = f", pinned to CPU {affinity[0]}" if affinity and len(affinity) == 1 else ""
    rows = []
    for r in (by["baseline"], by["task"], by["e2e"], by["e2e_worker"]):
        med = r.median
        rss = r.meta.get("rss_delta_mib")
        rows.append(
            [
                f"`{r.name}`: {r.description}",
                str(len(r.wall_s)),
                _s(med),
                _s(r.min),
                _s(r.iqr),
                _s(_cpu_med(r)),
                f"{n / med:.0f}",
                f"{raw / MB / med:.0f}",
                f"{inp / MB / med:.0f}",
                f"{r.meta.get('baseline_block_median_s', _med(base)) / med:.2f}",
                f"{r.peak_mib:.0f} ({r.peak_mib / vol_mib:.2f}×)" if r.peak_mib else "—",
                "—" if rss is None else f"{rss:.0f} ({rss / vol_mib:.2f}×)",
                f"{r.cpu_per_wall:.2f}",
            ]
        )
    head = [
        "case",
        "n",
        "median s",
        "min s",
        "IQR s",
        "median CPU s",
        "slices/s",
        "raw MB/s",
        "input MB/s",
        "speed vs baseline",
        "tracemalloc peak MiB (× vol)",
        "peak RSS Δ MiB (× vol)",
        "CPU/wall",
    ]
    phase_rows: list[list[str]] = []
    proto_rows: list[list[str]] = []
    task_med, task_cpu = _med(task), _cpu_med(task)
    for r in results:
        if not r.name.startswith(("phase_", "proto_")):
            continue
        med, cpu_s = r.median, _cpu_med(r)
        (phase_rows if r.name.startswith("phase_") else proto_rows).append(
            [
                f"`{r.name.split('_', 1)[1]}`",
                "↳ " + r.description[2:] if r.description.startswith("  ") else r.description,
                _s(med),
                _s(cpu_s),
                f"{100 * sum(r.sys_s) / max(sum(r.cpu_s), 1e-9):.0f} %",
                f"{100 * cpu_s / task_cpu:.0f} %",
                f"{raw / MB / med:.0f}",
                f"{raw / MB / cpu_s:.0f}" if cpu_s > 0 else "—",
            ]
        )
    phase_head = [
        "phase",
        "what",
        "median s",
        "median CPU s",
        "sys % of CPU",
        "CPU share of task",
        "raw MB/s (wall)",
        "raw MB/cpu-s",
    ]
    top = ("phase_read_series", "phase_write_store")
    accounted = sum(_med(by[p]) for p in top if p in by)
    accounted_cpu = sum(_cpu_med(by[p]) for p in top if p in by)
    head_rows = [
        f"- Volume {nx}×{ny}×{nz} int16 = {raw / MB:.1f} MB raw ({vol_mib:.0f} MiB); DICOM "
        f"input {meta['n_files']} "
        f"files, {inp / MB:.1f} MB (explicit VR LE, uncompressed); store "
        f"{s['store_bytes'] / MB:.1f} MB = {s['store_over_raw']:.3f}× raw = "
        f"{s['store_over_input']:.3f}× input ({meta['store_config']}).",
        f"- **Speed, ours / baseline (ratio of medians): task {s['ratio_task']:.2f}, end to end "
        f"{s['ratio_e2e']:.2f}, end to end on a Dask worker {s['ratio_e2e_worker']:.2f}** "
        f"(ratios of minima {s['ratio_task_min']:.2f} / {s['ratio_e2e_min']:.2f}; of median CPU "
        f"seconds {s['ratio_task_cpu']:.2f} / {s['ratio_e2e_cpu']:.2f}); "
        f"goal ≥ {GOAL_SPEED_RATIO} for the task (read, "
        "validate, HU, hash, compress, write against read + stack): "
        f"{'met' if s['speed_goal_met'] else '**not met**'}.",
        f"- **Peak memory (tracemalloc): task {s['peak_volumes_task']:.2f}×, end to end "
        f"{s['peak_volumes_e2e']:.2f}×, baseline {s['peak_volumes_baseline']:.2f}× one int16 "
        f"volume**; goal < {GOAL_PEAK_VOLUMES:g}×: "
        f"{'met' if s['memory_goal_met'] else '**not met**'}.",
        f"- Stored volume equals the baseline stack rescaled to HU (stored − 1024): "
        f"{'yes' if s['matches_baseline'] else '**no**'}.",
    ]
    if "e2e_floor_s" in s:
        head_rows.append(
            "- **End-to-end floor**: parsing every header (`dcmread_headers`), one sha256 over "
            "the volume (`sha256`) and encoding every chunk (`blosc_files`) alone take "
            f"{_s(s['e2e_floor_s'])} s = {s['e2e_floor_over_baseline']:.2f}× the baseline's "
            f"time, so an end to end at {GOAL_SPEED_RATIO}× (≤ "
            f"{_s(_med(base) / GOAL_SPEED_RATIO)} s) would leave "
            f"{_s(_med(base) / GOAL_SPEED_RATIO - s['e2e_floor_s'])} s for reading "
            f"{meta['n_files']} files' pixels, HU, validation and writing."
        )
    out = [
        "# Ingest benchmark: one DICOM series, one worker",
        "",
        f"CPU: {cpu or 'unknown'}; one worker (one thread{pinned}). "
        f"Median of {len(task.wall_s)} repeats after one warm-up"
        + (" (**quick run: too few repeats to quote**)" if quick else "")
        + "; files hot in the page cache."
        + (f" Library at commit {git}." if git else ""),
        "",
        *head_rows,
        "",
        _table(head, rows),
        "",
        "Raw MB/s = int16 volume bytes / s; input MB/s = DICOM file bytes / s. Speed vs "
        "baseline = baseline median / case median (> 1: faster than plain pydicom). The first "
        "three cases are timed round-robin (baseline, task, e2e, baseline, ...); `e2e_worker` "
        "afterwards, round-robin with the baseline only, its speed against that block's "
        "baseline median ("
        f"{_s(by['e2e_worker'].meta['baseline_block_median_s'])} s); its wall time is the "
        "client's (task round trip included), its CPU the worker's. Peak RSS Δ: one run in a "
        "fresh subprocess, peak RSS (`VmHWM`, reset before the run) minus RSS before.",
        "",
        "## Where the time goes (each phase timed alone, medians)",
        "",
        _table(phase_head, phase_rows),
        "",
        f"read_series + write_store = {_s(accounted_cpu)} CPU s of the task's "
        f"{_s(task_cpu)} CPU s (wall: {_s(accounted)} of {_s(task_med)} s); the task adds "
        "covariates, row building and the completion-marker fsync, and each phase timed alone "
        "pays its own page faults and cache misses, so the two need not add up. `↳` rows split "
        '`headers` and `read_series`; those marked "the library before" are the replaced '
        "ways, for comparison. Baseline for comparison: "
        f"{_s(_cpu_med(base))} CPU s, {_s(_med(base))} s.",
    ]
    if proto_rows:
        out += [
            "",
            "## Floors (code in this benchmark only, not in the library)",
            "",
            _table(phase_head, proto_rows),
            "",
            "`blosc_files` is the floor for `write_store` with the same codec and chunks; the "
            "`zarr_*` rows are zarr's own write path for the same array (what the library's "
            "direct chunk writes avoid), with and without its empty-chunk check.",
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ingest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat per case")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write raw results as JSON here")
    parser.add_argument("--size", default="full", choices=["full", "small"])
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--pin", action="store_true", help="pin the process to one CPU")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {REPEATS}, quick 1)")
    parser.add_argument("--rss-case", choices=RSS_CASES, help=argparse.SUPPRESS)
    parser.add_argument("--dicom", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_case:  # internal: one case in a fresh process
        print(json.dumps(_rss_child(args.rss_case, args.dicom, args.store)))
        return 0
    results = bench_ingest(
        args.quick, size=args.size, repeats=args.repeats, rss=not args.no_rss, pin_cpu=args.pin
    )
    md = to_markdown(results, cpu_model(), args.quick, git_state())
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"summary": summary(results), "results": [r.to_dict() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
