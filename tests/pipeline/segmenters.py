"""Custom segmentation functions for engine tests (shipped to workers by value).

``box_liver`` is a trivial segmenter (a fixed box in the patient's right upper abdomen and a
smaller one on the left as spleen). ``poison`` kills its own worker process on scans marked
with POISON_HU in the first voxel; ``CountingSegmenter`` records every call in a folder and
takes a little time, so a run can be interrupted part-way.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from screening.synthetic.stores import box_segmentation

POISON_HU = -1017


def box_liver(ct: NDArray[np.int16], spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
    return box_segmentation(ct, spacing_mm)


def poison(ct: NDArray[np.int16], spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
    if int(ct.flat[0]) == POISON_HU:
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault or the OOM killer would
    return box_liver(ct, spacing_mm)


def ct_digest(ct: NDArray[np.int16]) -> str:
    return hashlib.sha1(np.ascontiguousarray(ct).tobytes()).hexdigest()[:16]


class CountingSegmenter:
    """``box_liver`` that records each call as ``calls_dir/<ct digest>-<uuid>`` and sleeps."""

    def __init__(self, calls_dir: str, delay_s: float = 0.4) -> None:
        self.calls_dir = calls_dir
        self.delay_s = delay_s

    def __call__(
        self, ct: NDArray[np.int16], spacing_mm: tuple[float, float, float]
    ) -> NDArray[np.uint8]:
        Path(self.calls_dir, f"{ct_digest(ct)}-{uuid.uuid4().hex}").touch()
        time.sleep(self.delay_s)
        return box_liver(ct, spacing_mm)


#: Environment variable naming the folder of :func:`gated_box` (set by the test for the run).
GATE_ENV = "SCREENING_TEST_GATE"
GATE_FREE_CALLS = 16
GATE_WAIT_S = 5.0


def gated_box(ct: NDArray[np.int16], spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
    """``box_liver`` taking a second for the first ``GATE_FREE_CALLS`` calls of a run; every
    later call waits until the test creates ``<gate>/open``, at most ``GATE_WAIT_S``.

    On two workers the free rows arrive over at least 7 s, so the sink (it flushes when a row
    arrives 5 s after its last flush) commits some before any held call has waited long: the
    run cannot finish before the test sees those rows and interrupts it, however fast or
    loaded the machine. The bound keeps the interrupted run's shutdown short: a closing Dask
    worker waits for the task it is running (importable by name)."""
    gate = Path(os.environ[GATE_ENV])
    for slot in range(GATE_FREE_CALLS):
        try:
            os.close(os.open(gate / f"slot-{slot}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            continue
        time.sleep(1.0)
        return box_liver(ct, spacing_mm)
    deadline = time.monotonic() + GATE_WAIT_S
    while not (gate / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return box_liver(ct, spacing_mm)


def slow_box(ct: NDArray[np.int16], spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
    """``box_liver`` taking half a second (importable by name: ``--segment-fn``)."""
    time.sleep(0.5)
    return box_liver(ct, spacing_mm)
