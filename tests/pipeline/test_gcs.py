"""Stores and results in a GCS bucket, against a real GCS emulator process (the PyPI
``gcp-storage-emulator``, started here on localhost; gcsfs finds it through the standard
``STORAGE_EMULATOR_HOST``): the same code path as S3, through fsspec."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from screening.errors import StoreError
from screening.location import Location
from screening.pipeline import RunConfig, run_cohort
from screening.query import run_query
from screening.reasons import Segmenter
from tests.pipeline import segmenters
from tests.pipeline.conftest import fresh_cluster, write_phantom_store

pytest.importorskip("gcsfs", reason="gcsfs (extra 'gcs') reads and writes gs:// URLs")
pytest.importorskip("gcp_storage_emulator", reason="the GCS emulator (dev extra)")

BUCKET = "screening-gcs"


@pytest.fixture(scope="module")
def gcs() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--in-memory", "--default-bucket", BUCKET]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "emulator did not start"
            time.sleep(0.1)
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        server.terminate()
        server.wait(timeout=30)


def test_store_and_results_in_a_gcs_bucket(gcs: str, tmp_path: Path) -> None:
    # A store written into the bucket (marker last) reads back whole.
    import numpy as np
    from distributed import Client

    from screening.store import StoreConfig, open_scan_store, write_scan_store
    from screening.store.volume import ScanVolume

    ct = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    path = write_scan_store(
        f"gs://{BUCKET}/direct", "s1", ScanVolume(ct, (2.0, 1.0, 1.0), (0.0,) * 3, eye), {},
        StoreConfig(),
    )  # fmt: skip
    np.testing.assert_array_equal(open_scan_store(path).read("ct"), ct)
    # A run from a local store into the bucket, workers started with the emulator's address.
    store = tmp_path / "store"
    ids = write_phantom_store(store, 3, seed=31)
    results = f"gs://{BUCKET}/run-{tmp_path.name}/results"
    cfg = RunConfig(segmenter=Segmenter.CUSTOM, segment_fn=segmenters.box_liver)
    with fresh_cluster() as address, Client(address) as client:
        assert run_cohort(store, results, cfg, client).by_status == {"ok": 3}
        assert run_cohort(store, results, cfg, client).n_todo == 0
    rows = run_query(results, "select scan_id, overlay_file from measurements").to_pylist()
    assert sorted(r["scan_id"] for r in rows) == sorted(ids)
    assert (Location.of(results) / rows[0]["overlay_file"]).read_bytes()[:4] == b"\x89PNG"


def test_missing_gcs_bucket_is_a_clear_error(gcs: str) -> None:
    with pytest.raises(StoreError, match=r"bucket gs://no-such-gcs-bucket does not exist"):
        Location.of("gs://no-such-gcs-bucket/results").check_reachable()
