"""Scan store writing: chunks written directly read back through zarr exactly; atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from screening.errors import StoreError
from screening.store.scan import (
    StoreConfig,
    ct_sha256,
    is_complete,
    open_scan_store,
    scan_store_path,
    write_scan_store,
)
from screening.store.volume import ScanVolume


def _volume(shape: tuple[int, int, int], seed: int = 0) -> ScanVolume:
    rng = np.random.default_rng(seed)
    ct = rng.integers(-1024, 3000, size=shape, dtype=np.int16)
    eye = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    return ScanVolume(ct, (2.5, 0.7, 0.7), (-100.0, -120.0, 300.0), eye, {"format": "nifti"})


@pytest.mark.parametrize(
    "cfg",
    [
        StoreConfig(),  # blosc-lz4, written directly
        StoreConfig(codec="blosc-zstd", level=1, shuffle="bitshuffle", chunks_zyx=(3, 7, 5)),
        StoreConfig(codec="zstd", level=1, chunks_zyx=(3, 7, 5)),  # written by zarr
        StoreConfig(codec="none"),
    ],
)
def test_round_trip_with_edge_chunks(tmp_path: Path, cfg: StoreConfig) -> None:
    volume = _volume((19, 23, 17))  # no dimension divides the chunk shape
    labels = (volume.ct_hu > 1000).astype(np.uint8)
    path = write_scan_store(tmp_path, "abc", volume, {"scan_id": "abc"}, cfg, labels)
    assert path == scan_store_path(tmp_path, "abc") and is_complete(path)
    store = open_scan_store(path)
    np.testing.assert_array_equal(store.read("ct"), volume.ct_hu)
    np.testing.assert_array_equal(store.read("seg_reference"), labels)
    # a partial read through zarr (an edge chunk) is right too
    np.testing.assert_array_equal(store.array("ct")[16:, 20:, 15:], volume.ct_hu[16:, 20:, 15:])
    assert store.attrs["ct_sha256"] == ct_sha256(volume.ct_hu)
    assert zarr.open_array(store=str(path / "ct"), mode="r").chunks == tuple(
        min(c, s) for c, s in zip(cfg.chunks_zyx, volume.shape, strict=True)
    )


def test_existing_complete_store_is_kept_and_leftovers_replaced(tmp_path: Path) -> None:
    first = _volume((9, 8, 8), seed=1)
    path = Path(write_scan_store(tmp_path, "s1", first, {}, StoreConfig()))
    write_scan_store(tmp_path, "s1", _volume((9, 8, 8), seed=2), {}, StoreConfig())
    np.testing.assert_array_equal(open_scan_store(path).read("ct"), first.ct_hu)  # kept
    (path / ".complete").unlink()  # a crash before the marker
    with pytest.raises(StoreError, match="completion marker"):
        open_scan_store(path)
    second = _volume((9, 8, 8), seed=2)
    write_scan_store(tmp_path, "s1", second, {}, StoreConfig())
    np.testing.assert_array_equal(open_scan_store(path).read("ct"), second.ct_hu)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_failed_write_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    volume = _volume((9, 8, 8))
    with pytest.raises(TypeError):
        write_scan_store(tmp_path, "bad", volume, {"not json": object()}, StoreConfig())
    assert not scan_store_path(tmp_path, "bad").exists()
    assert not list((tmp_path / "scans").iterdir())  # the temporary store was removed


@pytest.mark.parametrize("damage", ["delete", "overwrite"])
def test_a_damaged_ct_chunk_is_an_error_not_fill_values(tmp_path: Path, damage: str) -> None:
    """A deleted chunk read as zarr's fill value (0 HU) and moved the liver mean silently."""
    volume = _volume((19, 23, 17))
    cfg = StoreConfig(codec="none", chunks_zyx=(3, 7, 5))
    path = Path(write_scan_store(tmp_path, "abc", volume, {"scan_id": "abc"}, cfg))
    chunks = sorted(p for p in (path / "ct").rglob("*") if p.is_file() and p.name != "zarr.json")
    victim = chunks[len(chunks) // 2]
    if damage == "delete":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data[0] ^= 0x01  # one bit of one HU value
        victim.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="ct_sha256") as e:
        open_scan_store(path).read("ct")
    assert e.value.reason == "STORE_CORRUPT"
