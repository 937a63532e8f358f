"""Which zarr v3 chunk shape and codec the scan store's ``ct`` array should use.

``python -m bench.bench_store_codecs [--quick] [--json PATH]`` writes int16 HU volumes into fresh
local zarr v3 arrays and measures, per candidate:

* write throughput (``arr[:] = vol``) and full read-back throughput (``arr[:]``), in MB/s of raw
  int16 bytes (1 MB = 10^6 bytes);
* latency of one axial slice (``arr[k]``) and of one 32x200x200 sub-box, in ms;
* bytes on disk (sum of file sizes, metadata included) and compression ratio (raw / disk).

**One core.** zarr 3 runs codecs and local-store I/O through ``asyncio.to_thread`` on its own
thread pool; :func:`pin_one_thread` sets ``zarr.config`` ``threading.max_workers`` = 1 (the key in
zarr 3.1), keeps blosc single-threaded (``numcodecs.blosc.use_threads = False``,
``set_nthreads(1)``) and pins the whole process (main, zarr event-loop and worker threads) to one
CPU with ``os.sched_setaffinity`` (the allowed CPU that was idlest for one second), so the
numbers are per core. Besides wall-clock MB/s, every full write and read is also timed in process
CPU seconds (``MB/CPU-s``): on a shared machine other tenants steal wall time but not CPU time,
so gates, ranking and recommendation use the CPU-based figures.

**Caveats.** Stores live under the system temp dir; writes land in the page cache (no fsync) and
reads are served from it (hot), so these are CPU-bound codec + zarr-overhead numbers, not disk
numbers; the cost model adds a nominal storage bandwidth (``STORAGE_MBPS``) for the compressed
bytes. Each value is the median of the repeats (3 stores x 3 full reads; 1 x 1 with ``--quick``).
A fresh ``arr[:]`` output of 150 MB costs page faults whose price varies between runs (transparent
huge pages), so full reads are also timed into a preallocated buffer (``read→buf``).

Two phases keep the run short: (1) every codec with a fixed ``(16, 256, 256)`` chunk; (2) the
chunk-shape sweep for the best three codecs of phase 1 (see :func:`rank_codecs`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numcodecs.blosc
import numpy as np
import zarr
import zarr.core.sync
from numpy.typing import NDArray
from zarr.codecs import BloscCname, BloscCodec, BloscShuffle, GzipCodec, ZstdCodec
from zarr.core.buffer.cpu import NDBuffer

from bench.common import cpu_model

__all__ = [
    "CHUNK_SHAPES",
    "CODECS",
    "REAL_DATA",
    "Codec",
    "bench_store_codecs",
    "load_real_volume",
    "make_synthetic_volume",
    "pin_one_thread",
    "rank_codecs",
    "recommend",
    "to_markdown",
]

REAL_DATA = Path("/work/shared/data/real/hcc048-portal-venous/HCC048_portal_venous.tar.gz")
MB = 1e6
SEED = 20240601
BOX = (32, 200, 200)
FIXED_CHUNK = (16, 256, 256)
N_SLICES = 5  # slice reads per repeat (distinct, fixed positions)
N_BOXES = 5  # box reads per repeat
# Gates: write and read (into a buffer) speeds in MB per CPU-second, on every volume ...
MIN_WRITE_MBPS = 200.0
MIN_READ_MBPS = 400.0
# ... and, for the final pick, slice and box read latencies (ms).
MAX_SLICE_MS = 25.0
MAX_BOX_MS = 60.0
# Cost model: per-worker storage bandwidth for moving compressed bytes (a shared filesystem), and
# how close to the lowest cost a candidate must be to compete on slice/box latency instead.
STORAGE_MBPS = 200.0
NEAR_COST = 1.05


@dataclass(frozen=True)
class Codec:
    """One compressor configuration: a label and a factory for zarr's ``compressors=``."""

    name: str
    make: Callable[[], list[Any] | None]


def _blosc(cname: BloscCname, clevel: int, shuffle: BloscShuffle) -> Codec:
    tag = {BloscShuffle.shuffle: "shuf", BloscShuffle.bitshuffle: "bitshuf"}[shuffle]
    return Codec(
        f"blosc-{cname.value}{clevel}-{tag}",
        lambda: [BloscCodec(typesize=2, cname=cname, clevel=clevel, shuffle=shuffle)],
    )


CODECS: list[Codec] = [
    Codec("none", lambda: None),
    _blosc(BloscCname.lz4, 5, BloscShuffle.shuffle),
    *(
        _blosc(BloscCname.zstd, level, shuffle)
        for level in (1, 3, 5)
        for shuffle in (BloscShuffle.shuffle, BloscShuffle.bitshuffle)
    ),
    Codec("zstd1", lambda: [ZstdCodec(level=1)]),
    Codec("zstd3", lambda: [ZstdCodec(level=3)]),
    Codec("gzip1", lambda: [GzipCodec(level=1)]),
]


ChunkRule = Callable[[tuple[int, int, int]], tuple[int, int, int]]


def _full_plane(z: int) -> ChunkRule:
    return lambda shape: (z, shape[1], shape[2])


def _fixed(chunks: tuple[int, int, int]) -> ChunkRule:
    return lambda _shape: chunks


#: Candidate chunk shapes as (label, rule from the volume's (z, y, x) shape); Y, X = full plane.
#: Rules that give the same chunk for a volume (e.g. (32, Y, X) and (32, 512, 512) on a 512^2
#: plane) are measured once and reported under the first label.
CHUNK_SHAPES: list[tuple[str, ChunkRule]] = [
    ("(1, Y, X)", _full_plane(1)),
    ("(8, Y, X)", _full_plane(8)),
    ("(32, Y, X)", _full_plane(32)),
    ("(16, 256, 256)", _fixed((16, 256, 256))),
    ("(64, 128, 128)", _fixed((64, 128, 128))),
    ("(32, 512, 512)", _fixed((32, 512, 512))),
]


# ---------------------------------------------------------------------------------------------
# Setup


def _cpu_idle_ticks() -> dict[int, int]:
    idle: dict[int, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            idle[int(name[3:])] = int(fields[3]) + int(fields[4])  # idle + iowait
    return idle


def _least_busy_cpu(allowed: set[int], window_s: float = 1.0) -> int:
    """The allowed CPU with the most idle time over ``window_s`` (other tenants' load)."""
    try:
        before = _cpu_idle_ticks()
        time.sleep(window_s)
        after = _cpu_idle_ticks()
        return max(allowed, key=lambda c: (after.get(c, 0) - before.get(c, 0), c))
    except (OSError, ValueError, IndexError):
        return max(allowed)


@contextmanager
def pin_one_thread(cpu: int | None = None) -> Iterator[dict[str, Any]]:
    """Run zarr on one worker thread, blosc on one thread, the whole process on one CPU.

    zarr 3 creates its event-loop thread and its thread pool (size ``threading.max_workers``)
    lazily; any existing ones are torn down on entry and exit so that they are rebuilt with the
    current settings and CPU affinity (new threads inherit the creating thread's affinity).
    Everything is restored on exit. Yields a description of what was set.
    """
    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpu is None and old_affinity:
        cpu = _least_busy_cpu(old_affinity)
    old_workers = zarr.config.get("threading.max_workers")
    old_blosc_threads = numcodecs.blosc.set_nthreads(1)
    zarr.core.sync.cleanup_resources()
    zarr.config.set({"threading.max_workers": 1})
    numcodecs.blosc.use_threads = False  # zarr sets this too; blosc then runs in the caller
    if old_affinity is not None and cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield {
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if old_affinity else None,
            "zarr threading.max_workers": zarr.config.get("threading.max_workers"),
            "zarr async.concurrency": zarr.config.get("async.concurrency"),
            "numcodecs.blosc.use_threads": numcodecs.blosc.use_threads,
            "blosc nthreads": 1,
        }
    finally:
        zarr.core.sync.cleanup_resources()
        zarr.config.set({"threading.max_workers": old_workers})
        numcodecs.blosc.set_nthreads(old_blosc_threads)
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)


def make_synthetic_volume(size: str = "full", seed: int = SEED) -> NDArray[np.int16]:
    """Full-size synthetic CT (int16 HU, ``(z, y, x)``) from the phantom renderer."""
    from screening.synthetic.phantom import PhantomSpec, ScanGeometry, make_phantom

    return make_phantom(PhantomSpec(), ScanGeometry.preset(size), seed=seed).hu  # type: ignore[arg-type]


def load_real_volume(path: Path = REAL_DATA) -> NDArray[np.int16] | None:
    """The HCC048 portal-venous CT as int16 HU ``(z, y, x)``, or None if the archive is absent."""
    if not path.is_file():
        print(f"[bench_store_codecs] {path} not found: skipping the real-CT volume")
        return None
    import pydicom

    with tempfile.TemporaryDirectory(prefix="hcc048-") as tmp:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        datasets = [pydicom.dcmread(p) for p in sorted(Path(tmp).rglob("*.dcm"))]
        datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        slices = [
            ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1.0))
            + float(getattr(ds, "RescaleIntercept", 0.0))
            for ds in datasets
        ]
    hu = np.clip(np.rint(np.stack(slices)), -1024, 32767).astype(np.int16)
    return np.ascontiguousarray(hu)


# ---------------------------------------------------------------------------------------------
# Measurement


def _disk_bytes(path: Path) -> tuple[int, int]:
    """(total bytes, number of files) under ``path``."""
    total = n = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
            n += 1
    return total, n


@contextmanager
def _timer(out: list[float], cpu: list[float] | None = None) -> Iterator[None]:
    c0, t0 = time.process_time(), time.perf_counter()
    yield
    t1, c1 = time.perf_counter(), time.process_time()
    out.append(t1 - t0)
    if cpu is not None:
        cpu.append(c1 - c0)


def _positions(
    shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Fixed slice indices and box corners (not chunk-aligned) for one volume."""
    nz, ny, nx = shape
    bz, by, bx = (min(b, s) for b, s in zip(BOX, shape, strict=True))
    slices = [int(k) for k in rng.choice(nz, size=min(N_SLICES, nz), replace=False)]
    boxes = [
        (
            int(rng.integers(0, nz - bz + 1)),
            int(rng.integers(0, ny - by + 1)),
            int(rng.integers(0, nx - bx + 1)),
        )
        for _ in range(N_BOXES)
    ]
    return slices, boxes


def measure(
    vol: NDArray[np.int16],
    codec: Codec,
    chunks: tuple[int, int, int],
    workdir: Path,
    repeats: int,
    reads: int = 3,
    seed: int = SEED,
) -> dict[str, Any]:
    """Write ``vol`` ``repeats`` times into fresh arrays and time writes and reads.

    Each written array is read back in full ``reads`` times with ``arr[:]`` (a fresh output
    array each time, as callers do) and ``reads`` times into one preallocated, already-touched
    buffer (``out=``): the second isolates the codec and store cost from the page faults of a
    new 150 MB output array, which vary a lot from run to run (transparent huge pages).
    """
    shape: tuple[int, int, int] = vol.shape
    raw = vol.nbytes
    slices, boxes = _positions(shape, np.random.default_rng(seed))
    bz, by, bx = (min(b, s) for b, s in zip(BOX, shape, strict=True))
    write_s: list[float] = []
    write_cpu: list[float] = []
    read_s: list[float] = []
    read_cpu: list[float] = []
    into_s: list[float] = []
    into_cpu: list[float] = []
    buf = np.full_like(vol, 1)
    out = NDBuffer.from_numpy_array(buf)
    slice_s: list[float] = []
    box_s: list[float] = []
    disk = nfiles = 0
    for rep in range(repeats):
        path = workdir / f"ct-{rep}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.create_array(
            store=str(path),
            shape=shape,
            chunks=chunks,
            dtype="int16",
            compressors=codec.make(),
            filters=None,
            fill_value=0,
            zarr_format=3,
        )
        with _timer(write_s, write_cpu):
            arr[:] = vol
        disk, nfiles = _disk_bytes(path)
        arr = zarr.open_array(store=str(path), mode="r")
        for i in range(reads):
            with _timer(read_s, read_cpu):
                back = arr[:]
            if rep == 0 and i == 0 and not np.array_equal(back, vol):
                raise AssertionError(f"{codec.name} {chunks}: read-back differs from the input")
            del back
        for _ in range(reads):
            buf[0, 0, 0] = ~vol[0, 0, 0]
            with _timer(into_s, into_cpu):
                arr.get_basic_selection(..., out=out)
            if buf[0, 0, 0] != vol[0, 0, 0]:
                raise AssertionError(f"{codec.name} {chunks}: out= read did not fill the buffer")
        for k in slices:
            with _timer(slice_s):
                arr[k]
        for z0, y0, x0 in boxes:
            with _timer(box_s):
                arr[z0 : z0 + bz, y0 : y0 + by, x0 : x0 + bx]
        shutil.rmtree(path, ignore_errors=True)
    med = statistics.median
    return {
        "codec": codec.name,
        "chunks": list(chunks),
        "shape": list(shape),
        "repeats": repeats,
        "reads": reads,
        "raw_bytes": raw,
        "disk_bytes": disk,
        "n_files": nfiles,
        "ratio": raw / disk,
        "write_MBps": raw / MB / med(write_s),
        "read_MBps": raw / MB / med(read_s),
        "read_into_MBps": raw / MB / med(into_s),
        "slice_ms": 1e3 * med(slice_s),
        "box_ms": 1e3 * med(box_s),
        "write_MBps_cpu": raw / MB / med(write_cpu),
        "read_MBps_cpu": raw / MB / med(read_cpu),
        "read_into_MBps_cpu": raw / MB / med(into_cpu),
        "write_cpu_per_wall": sum(write_cpu) / sum(write_s),
        "read_cpu_per_wall": sum(read_cpu) / sum(read_s),
        "write_s": write_s,
        "write_cpu_s": write_cpu,
        "read_s": read_s,
        "read_cpu_s": read_cpu,
        "read_into_s": into_s,
        "read_into_cpu_s": into_cpu,
        "slice_s": slice_s,
        "box_s": box_s,
    }


# ---------------------------------------------------------------------------------------------
# Selection


def _geomean(xs: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def _fast(r: dict[str, Any]) -> bool:
    return r["write_MBps_cpu"] >= MIN_WRITE_MBPS and r["read_into_MBps_cpu"] >= MIN_READ_MBPS


def _interactive(r: dict[str, Any]) -> bool:
    return r["slice_ms"] <= MAX_SLICE_MS and r["box_ms"] <= MAX_BOX_MS


def cost_s_per_mb(r: dict[str, Any], storage_mbps: float = STORAGE_MBPS) -> float:
    """Seconds per raw MB to write once and read back once on one core, including moving the
    compressed bytes (written once, read once) at ``storage_mbps`` per worker.

    Write and read use CPU seconds (robust to other load on a shared machine).
    """
    return 1 / r["write_MBps_cpu"] + 1 / r["read_into_MBps_cpu"] + 2 / (storage_mbps * r["ratio"])


def _group(
    rows: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def rank_codecs(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Codec names best first, from phase-1 rows (all volumes).

    Codecs that reach ``MIN_WRITE_MBPS`` and ``MIN_READ_MBPS`` (per CPU-second; read into a
    buffer) on every
    volume come first; within each group, lowest :func:`cost_s_per_mb` (geometric mean over
    volumes) first.
    """
    groups = _group(rows, lambda r: r["codec"])

    def key(name: str) -> tuple[bool, float]:
        rs = groups[name]
        return (not all(_fast(r) for r in rs), _geomean([cost_s_per_mb(r) for r in rs]))

    return sorted(groups, key=key)


def recommend(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """Pick a (codec, chunks) from phase-2 rows.

    Candidates must meet every gate on every volume (write, read, slice and box latency).
    Among those within ``NEAR_COST`` of the lowest :func:`cost_s_per_mb`, the one with the
    lowest slice + box latency wins. The text also names the best-compressing candidate that
    meets the gates and the storage bandwidth below which it would be the cheaper one.
    """
    # Chunk shapes are matched across volumes by their label, e.g. "(1, Y, X)".
    groups = _group(rows, lambda r: (r["codec"], r["chunk_label"]))
    good = {k: rs for k, rs in groups.items() if all(_fast(r) and _interactive(r) for r in rs)}
    gates = (
        f"write >= {MIN_WRITE_MBPS:.0f} and read into a buffer >= {MIN_READ_MBPS:.0f} MB per "
        "CPU-second, "
        f"slice <= {MAX_SLICE_MS:.0f} ms, box <= {MAX_BOX_MS:.0f} ms"
    )
    if not good:
        return None, f"no (codec, chunks) met {gates} on every volume; see the tables"

    def gm(rs: list[dict[str, Any]], f: Callable[[dict[str, Any]], float]) -> float:
        return _geomean([f(r) for r in rs])

    cost = {k: gm(rs, cost_s_per_mb) for k, rs in good.items()}
    best_cost = min(cost.values())
    near = [k for k in good if cost[k] <= NEAR_COST * best_cost]
    pick = min(near, key=lambda k: gm(good[k], lambda r: r["slice_ms"] + r["box_ms"]))
    rs = good[pick]

    def detail(rs: list[dict[str, Any]]) -> str:
        return "; ".join(
            f"{r['volume']}: write {r['write_MBps']:.0f}, read {r['read_MBps']:.0f} "
            f"(into buffer {r['read_into_MBps']:.0f}) MB/s, slice {r['slice_ms']:.1f} ms, "
            f"box {r['box_ms']:.1f} ms, ratio {r['ratio']:.2f}"
            for r in rs
        )

    text = (
        f"{pick[0]} with chunks {pick[1]}. Of the candidates meeting {gates} on every volume, "
        f"it is within {100 * (NEAR_COST - 1):.0f} % of the lowest write+read+transfer cost "
        f"(transfer at {STORAGE_MBPS:.0f} MB/s per worker) and has the lowest slice + box "
        f"latency among those ({detail(rs)})."
    )
    densest = max(good, key=lambda k: gm(good[k], lambda r: r["ratio"]))
    if densest[0] != pick[0]:
        # Storage bandwidth B at which both cost the same: cpu_p + 2/(B r_p) = cpu_d + 2/(B r_d)
        cpu = {
            k: gm(good[k], lambda r: 1 / r["write_MBps_cpu"] + 1 / r["read_into_MBps_cpu"])
            for k in (pick, densest)
        }
        inv_ratio = {k: gm(good[k], lambda r: 1 / r["ratio"]) for k in (pick, densest)}
        extra_cpu = cpu[densest] - cpu[pick]
        saved = inv_ratio[pick] - inv_ratio[densest]
        where = (
            f"it is the cheaper choice only when storage delivers less than about "
            f"{2 * saved / extra_cpu:.0f} MB/s per worker"
            if extra_cpu > 0 and saved > 0
            else "it is also faster here"
        )
        text += (
            f" Densest alternative meeting the gates: {densest[0]} with chunks {densest[1]} "
            f"(ratio {gm(good[densest], lambda r: r['ratio']):.2f} vs "
            f"{gm(rs, lambda r: r['ratio']):.2f}; {detail(good[densest])}); {where}."
        )
    return {"codec": pick[0], "chunk_label": pick[1], "cost_s_per_mb": cost[pick]}, text


# ---------------------------------------------------------------------------------------------
# Driver


def bench_store_codecs(quick: bool = False) -> list[dict]:
    """Run both phases on the synthetic (and, if present, the real) volume; return the rows.

    Each row is one (volume, codec, chunks) with medians (``write_MBps``, ``read_MBps``,
    ``slice_ms``, ``box_ms``), ``ratio``, ``disk_bytes`` and the raw repeat times. ``phase`` is
    ``"codec"`` (fixed chunk) or ``"chunks"`` (sweep for the best three codecs).
    """
    repeats = reads = 1 if quick else 3
    volumes: dict[str, NDArray[np.int16]] = {}
    t0 = time.perf_counter()
    volumes["synthetic"] = make_synthetic_volume("full")
    dt = time.perf_counter() - t0
    print(
        f"[bench_store_codecs] synthetic {volumes['synthetic'].shape} in {dt:.1f} s",
        file=sys.stderr,
    )
    real = load_real_volume()
    if real is not None:
        volumes["hcc048"] = real
        hu_range = f"HU {real.min()}..{real.max()}"
        print(f"[bench_store_codecs] real {real.shape}, {hu_range}", file=sys.stderr)

    rows: list[dict] = []

    def run(phase: str, codec: Codec, label: str, rule: ChunkRule, pinned: dict) -> None:
        for vname, vol in volumes.items():
            shape: tuple[int, int, int] = vol.shape
            chunks = tuple(min(c, n) for c, n in zip(rule(shape), shape, strict=True))
            seen = {(r["volume"], r["phase"], r["codec"], tuple(r["chunks"])) for r in rows}
            if (vname, phase, codec.name, chunks) in seen:
                continue  # same chunk as an earlier label for this volume
            with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
                row = measure(vol, codec, chunks, Path(tmp), repeats, reads)  # type: ignore[arg-type]
            row.update(volume=vname, phase=phase, chunk_label=label, pinned=pinned)
            rows.append(row)
            print(
                f"  {phase:6s} {vname:9s} {codec.name:20s} {label:15s} "
                f"w {row['write_MBps']:5.0f} r {row['read_MBps']:5.0f} "
                f"rb {row['read_into_MBps']:5.0f} MB/s "
                f"slice {row['slice_ms']:6.1f} box {row['box_ms']:6.1f} ms "
                f"ratio {row['ratio']:.2f}",
                file=sys.stderr,
            )

    fixed_label = "(" + ", ".join(map(str, FIXED_CHUNK)) + ")"
    by_name = {c.name: c for c in CODECS}
    with pin_one_thread() as pinned:
        for codec in CODECS:
            run("codec", codec, fixed_label, _fixed(FIXED_CHUNK), pinned)
        best = rank_codecs([r for r in rows if r["phase"] == "codec"])[:3]
        print(f"[bench_store_codecs] chunk sweep for {best}", file=sys.stderr)
        for name in best:
            for label, rule in CHUNK_SHAPES:
                run("chunks", by_name[name], label, rule, pinned)
    return rows


def to_markdown(rows: Sequence[dict[str, Any]], phase: str) -> str:
    """One markdown table of the medians of one phase."""
    head = (
        "| volume | codec | chunks | write MB/s | read MB/s | read→buf MB/s | slice ms | box ms "
        "| ratio | disk MB | files | write, read→buf MB/CPU-s | cost ms/MB |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if r["phase"] != phase:
            continue
        lines.append(
            f"| {r['volume']} | {r['codec']} | {r['chunk_label']} | {r['write_MBps']:.0f} "
            f"| {r['read_MBps']:.0f} | {r['read_into_MBps']:.0f} | {r['slice_ms']:.1f} "
            f"| {r['box_ms']:.1f} | {r['ratio']:.2f} | {r['disk_bytes'] / MB:.1f} "
            f"| {r['n_files']} | {r['write_MBps_cpu']:.0f}, {r['read_into_MBps_cpu']:.0f} "
            f"| {1e3 * cost_s_per_mb(r):.2f} |"
        )
    return "\n".join(lines)


def codecs_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The whole report: context, both phases and the recommendation."""
    ranked = rank_codecs([r for r in rows if r["phase"] == "codec"])
    _, text = recommend([r for r in rows if r["phase"] == "chunks"])
    return "\n".join(
        [
            "# Scan-store codecs and chunks (`bench/bench_store_codecs.py`)",
            "",
            f"CPU: {cpu_model()} ({os.cpu_count()} logical); zarr {zarr.__version__}, "
            f"numcodecs {numcodecs.__version__}, numpy {np.__version__}; "
            f"repeats {rows[0]['repeats']} (x{rows[0]['reads']} full reads each); "
            f"pinned {rows[0]['pinned']}",
            "",
            "Medians. MB = 10^6 bytes of raw int16. read = `arr[:]` (new output array); "
            "read→buf = into a preallocated buffer (codec + store cost only); MB/CPU-s = the same "
            "per second of process CPU time (robust to other load; used for ranking); cost = ms "
            "per raw MB to write + read→buf once (CPU) + move the compressed bytes twice at "
            f"{STORAGE_MBPS:.0f} MB/s. Volumes: a full-size synthetic phantom and HCC048 (real).",
            "",
            f"## Phase 1: codecs, chunks {FIXED_CHUNK}",
            "",
            to_markdown(rows, "codec"),
            "",
            f"Codec ranking: {', '.join(ranked)}",
            "",
            "## Phase 2: chunk shapes for the best three codecs",
            "",
            to_markdown(rows, "chunks"),
            "",
            f"**Recommendation.** {text} This is `StoreConfig()`'s default.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat instead of 3")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = bench_store_codecs(quick=args.quick)
    print(codecs_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
