"""Benchmarks of the synthetic CT phantom generator and the cohort writer.

Each benchmark returns a :class:`Result`: wall and CPU times of the timed repeats, plus the
tracemalloc peak of one separate, untimed run (numpy reports its buffers to tracemalloc; C-level
scratch inside scipy.ndimage is not counted).
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import screening.synthetic.render as render
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.cohort import generate_cohort

__all__ = ["Result", "bench_cohort", "bench_phantom", "whole_volume_passes"]

Size = Literal["small", "full"]
TARGET_S: dict[str, float] = {"full": 5.0, "small": 0.5}  # from the issue, one core


@dataclass
class Result:
    """Timings of one benchmark case; times are per ``per`` items (e.g. seconds per scan)."""

    name: str
    description: str
    wall_s: list[float]
    cpu_s: list[float]  # user + system CPU time of the process
    sys_s: list[float]  # system part (mostly page faults on first touch of new buffers)
    per: int = 1
    unit: str = "s"
    target_s: float | None = None
    peak_mib: float | None = None
    baseline_of: str | None = None  # name of the case this one is the baseline for
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def times(self) -> list[float]:
        return [t / self.per for t in self.wall_s]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def iqr(self) -> float:
        if len(self.times) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q3 - q1

    @property
    def cpu_per_wall(self) -> float:
        """Process CPU time over wall time; ~1.0 means one busy core, >1 means threads."""
        return sum(self.cpu_s) / sum(self.wall_s)

    @property
    def sys_share(self) -> float:
        """Share of the CPU time spent in the kernel."""
        return sum(self.sys_s) / max(sum(self.cpu_s), 1e-12)

    @property
    def target_met(self) -> bool | None:
        return None if self.target_s is None else self.median < self.target_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            median=self.median,
            min=self.min,
            iqr=self.iqr,
            cpu_per_wall=self.cpu_per_wall,
            sys_share=self.sys_share,
            target_met=self.target_met,
            times=self.times,
        )
        return d


@contextmanager
def whole_volume_passes() -> Iterator[None]:
    """The baseline: the same renderer with slabbing disabled (one slab = the whole volume)."""
    saved = render._SLAB_VOXELS
    render._SLAB_VOXELS = 10**12
    try:
        yield
    finally:
        render._SLAB_VOXELS = saved


def _peak_mib(fn: Callable[[], object]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _time(fn: Callable[[], object], repeats: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        fn()
    out: dict[str, list[float]] = {"wall_s": [], "cpu_s": [], "sys_s": []}
    for _ in range(repeats):
        gc.collect()
        c0, t0 = os.times(), time.perf_counter()
        fn()
        wall, c1 = time.perf_counter() - t0, os.times()
        out["wall_s"].append(wall)
        out["cpu_s"].append(c1.user + c1.system - c0.user - c0.system)
        out["sys_s"].append(c1.system - c0.system)
    return out


def _run(
    name: str,
    description: str,
    fn: Callable[[], object],
    *,
    repeats: int,
    warmup: int,
    memory: bool,
    **kw: Any,
) -> Result:
    # The memory run comes first and is untimed, so it also warms imports and allocator pools.
    peak = _peak_mib(fn) if memory else None
    times = _time(fn, repeats, warmup)
    return Result(name=name, description=description, peak_mib=peak, **times, **kw)


def bench_phantom(
    size: Size,
    *,
    repeats: int,
    warmup: int = 1,
    memory: bool = True,
    baseline: bool = False,
    seed: int = 0,
) -> Result:
    """``make_phantom(PhantomSpec(), ScanGeometry.preset(size), seed)``; slabbed or baseline."""
    geometry = ScanGeometry.preset(size)
    spec = PhantomSpec()

    def fn() -> object:
        return make_phantom(spec, geometry, seed=seed)

    nz, ny, nx = geometry.shape
    shape = f"{nx}×{ny}×{nz}"
    meta = {
        "shape_xyz": [nx, ny, nz],
        "spacing_mm_zyx": list(geometry.spacing_mm),
        "slab_voxels": render._SLAB_VOXELS,
        "seed": seed,
    }
    if baseline:
        with whole_volume_passes():
            meta["slab_voxels"] = render._SLAB_VOXELS
            return _run(
                f"phantom_{size}_baseline",
                f"{size} phantom {shape}, whole-volume passes",
                fn,
                repeats=repeats,
                warmup=warmup,
                memory=memory,
                baseline_of=f"phantom_{size}",
                meta=meta,
            )
    return _run(
        f"phantom_{size}",
        f"{size} phantom {shape}, slabbed",
        fn,
        repeats=repeats,
        warmup=warmup,
        memory=memory,
        target_s=TARGET_S[size],
        meta=meta,
    )


def bench_cohort(
    *,
    n: int = 8,
    repeats: int,
    warmup: int = 1,
    memory: bool = True,
    size: Size = "small",
    seed: int = 0,
) -> Result:
    """``generate_cohort(n, size)`` into a temporary folder, reported as seconds per scan."""
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        out = Path(tmp) / "cohort"

        def fn() -> object:
            return generate_cohort(out, n=n, seed=seed, size=size, overwrite=True)

        return _run(
            f"cohort_{size}",
            f"generate_cohort(n={n}, size={size!r}), per scan",
            fn,
            repeats=repeats,
            warmup=warmup,
            memory=memory,
            per=n,
            unit="s/scan",
            meta={"n": n, "size": size, "seed": seed},
        )
