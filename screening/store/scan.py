"""The scan store: one zarr v3 group per scan (docs/data-contracts.md,
``schemas/scan_store.yaml``).

A store is written under a temporary name beside its final one, renamed into place, and only
then given its completion marker, so a crash at any point never leaves a store that looks
complete. Readers refuse a store without the marker. The group carries OME-NGFF 0.5
``multiscales`` metadata (axes z, y, x in millimetres) so standard viewers open ``ct``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.errors import StoreError
from screening.fsutil import atomic_write_text
from screening.reasons import ReasonCode
from screening.schemas import load_store_layout
from screening.store.volume import ScanVolume

__all__ = [
    "ScanStore",
    "StoreConfig",
    "ct_sha256",
    "is_complete",
    "ngff_multiscales",
    "open_scan_store",
    "scan_store_path",
    "write_derived_array",
    "write_scan_store",
]

_LAYOUT = load_store_layout()
COMPLETION_MARKER: str = _LAYOUT["completion_marker"]
_DIMS = ("z", "y", "x")


@dataclass(frozen=True, kw_only=True)
class StoreConfig(FrozenConfig):
    """Chunking and compression of the stored arrays.

    The defaults were chosen by measurement (``bench/bench_store_codecs.py``, figures in
    BENCHMARKS.md): on one core, blosc-lz4 (level 5, byte shuffle) in chunks of 8 whole
    512 x 512 slices writes ~700 MB/s and reads ~1300 MB/s at a 2.2-2.3x compression ratio;
    blosc-zstd level 1 compresses ~12 % better but writes 2.5x and reads 2.5-4x slower, and
    gzip is 10x slower. Eight-slice chunks keep one axial slice read at ~2 ms and a liver-sized
    box at ~10 ms.
    """

    chunks_zyx: tuple[int, int, int] = (8, 512, 512)
    codec: Literal["blosc-lz4", "blosc-zstd", "zstd", "none"] = "blosc-lz4"
    level: int = 5
    shuffle: Literal["shuffle", "bitshuffle", "noshuffle"] = "shuffle"

    def __post_init__(self) -> None:
        require(
            len(self.chunks_zyx) == 3 and all(c > 0 for c in self.chunks_zyx),
            f"chunks_zyx must be three positive ints, got {self.chunks_zyx}",
        )
        require(0 <= self.level <= 22, f"level must be in 0..22, got {self.level}")

    def compressors(self) -> Any:
        from zarr.codecs import BloscCodec, ZstdCodec

        if self.codec == "none":
            return None
        if self.codec == "zstd":
            return ZstdCodec(level=self.level)
        cname: Literal["zstd", "lz4"] = "zstd" if self.codec == "blosc-zstd" else "lz4"
        return BloscCodec(cname=cname, clevel=min(self.level, 9), shuffle=self.shuffle)


def scan_store_path(store_root: str | os.PathLike[str], scan_id: str) -> Path:
    """``STORE/scans/<scan_id>.zarr``."""
    return Path(store_root) / _LAYOUT["path"].format(scan_id=scan_id)


def is_complete(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / COMPLETION_MARKER).is_file()


def ct_sha256(ct: NDArray[np.int16]) -> str:
    """sha256 of the array bytes in C order, int16 little endian (as the schema states)."""
    data = np.ascontiguousarray(ct, dtype="<i2")
    return hashlib.sha256(data.data.cast("B")).hexdigest()


def ngff_multiscales(
    spacing_mm: tuple[float, ...], origin_mm: tuple[float, ...], name: str = "ct"
) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attribute for a single-resolution image at ``name``.

    The translation is the origin in (z, y, x) order, so physical coordinates are LPS mm.
    """
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": d, "type": "space", "unit": "millimeter"} for d in _DIMS],
                "datasets": [
                    {
                        "path": name,
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(s) for s in spacing_mm]},
                            {
                                "type": "translation",
                                "translation": [float(o) for o in reversed(origin_mm)],
                            },
                        ],
                    }
                ],
            }
        ],
    }


def _write_array(group: Any, name: str, data: NDArray[Any], cfg: StoreConfig) -> None:
    chunks = tuple(min(c, s) for c, s in zip(cfg.chunks_zyx, data.shape, strict=True))
    arr = group.create_array(
        name=name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        compressors=cfg.compressors(),
        fill_value=0,
        dimension_names=_DIMS,
        config={"write_empty_chunks": True},  # CT chunks are never empty: skip the check
    )
    encode = _chunk_encoder(cfg)
    if encode is None:
        arr[...] = data
        return
    # Blosc chunks written straight to their zarr v3 keys ("c/i/j/k", edge chunks padded to the
    # full chunk shape with the fill value, as zarr stores them): half the CPU of zarr's own
    # write path for the same bytes (bench/bench_ingest.py). zarr reads them like its own.
    root = Path(group.store.root) / name
    cz, cy, cx = chunks
    for i in range(0, data.shape[0], cz):
        for j in range(0, data.shape[1], cy):
            for k in range(0, data.shape[2], cx):
                block = data[i : i + cz, j : j + cy, k : k + cx]
                if block.shape != chunks:
                    padded = np.zeros(chunks, dtype=data.dtype)
                    padded[: block.shape[0], : block.shape[1], : block.shape[2]] = block
                    block = padded
                folder = root / "c" / str(i // cz) / str(j // cy)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / str(k // cx)).write_bytes(
                    encode(np.ascontiguousarray(block, "<" + data.dtype.str[1:]))
                )


def _chunk_encoder(cfg: StoreConfig) -> Any:
    """numcodecs Blosc with exactly the zarr codec's parameters, or None to let zarr write."""
    if not cfg.codec.startswith("blosc-"):
        return None
    from numcodecs import Blosc

    shuffle = {
        "shuffle": Blosc.SHUFFLE,
        "bitshuffle": Blosc.BITSHUFFLE,
        "noshuffle": Blosc.NOSHUFFLE,
    }
    codec = Blosc(
        cname=cfg.codec.removeprefix("blosc-"),
        clevel=min(cfg.level, 9),
        shuffle=shuffle[cfg.shuffle],
    )
    return lambda block: codec.encode(block)


def write_scan_store(
    store_root: str | os.PathLike[str],
    scan_id: str,
    volume: ScanVolume,
    attrs: dict[str, Any],
    cfg: StoreConfig,
    seg_reference: NDArray[np.uint8] | None = None,
    sha256: str | None = None,
) -> Path:
    """Write one scan store atomically; return its path.

    ``attrs`` (JSON-serialisable, no identifiers) is stored as the group's ``scan`` attribute
    next to the geometry. ``sha256`` is :func:`ct_sha256` of the volume when the caller has it
    already (it is computed otherwise). When a complete store with this id already exists (a
    task that ran twice), the new copy is discarded and the existing one kept.
    """
    import zarr

    final = scan_store_path(store_root, scan_id)
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{scan_id}-{uuid.uuid4().hex}.zarr")
    try:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        _write_array(group, "ct", volume.ct_hu, cfg)
        if seg_reference is not None:
            _write_array(group, "seg_reference", seg_reference, cfg)
        group.attrs.update(
            {
                "spacing_mm": [float(s) for s in volume.spacing_mm],
                "origin_mm": [float(o) for o in volume.origin_mm],
                "direction": [float(v) for row in volume.direction for v in row],
                "ct_sha256": sha256 or volume.ct_sha256 or ct_sha256(volume.ct_hu),
                "source": volume.source,
                "scan": attrs,
                "ome": ngff_multiscales(volume.spacing_mm, volume.origin_mm),
            }
        )
        if is_complete(final):  # another attempt finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        if final.exists():  # an incomplete leftover of a crashed attempt
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(final / COMPLETION_MARKER, json.dumps({"scan_id": scan_id}) + "\n")
    return final


def write_derived_array(
    store_path: str | os.PathLike[str],
    name: str,
    data: NDArray[Any],
    attrs: dict[str, Any],
    cfg: StoreConfig | None = None,
) -> Path:
    """Add or replace array ``name`` (``prep``, ``seg``) in a complete scan store, atomically.

    The array is written under a temporary name inside the group and renamed into place, so a
    reader sees the old array or the whole new one, never a half-written one; running twice is
    harmless. ``attrs`` (JSON-serialisable) go on the array itself.
    """
    import zarr

    store = open_scan_store(store_path)
    tmp_name = f".tmp-{name}-{uuid.uuid4().hex}"
    group = zarr.open_group(store=str(store.path), mode="r+", zarr_format=3)
    tmp = store.path / tmp_name
    try:
        _write_array(group, tmp_name, data, cfg or StoreConfig())
        group[tmp_name].attrs.update(attrs)
        final = store.path / name
        if final.exists():
            old = store.path / f".old-{name}-{uuid.uuid4().hex}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return store.path / name


@dataclass(frozen=True)
class ScanStore:
    """A complete scan store opened for reading."""

    path: Path
    group: Any

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        z, y, x = self.group.attrs["spacing_mm"]
        return (float(z), float(y), float(x))

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        x, y, z = self.group.attrs["origin_mm"]
        return (float(x), float(y), float(z))

    def array(self, name: str) -> Any:
        """The zarr array ``name`` (``ct``, ``seg_reference``, ...); StoreError when absent."""
        try:
            return self.group[name]
        except KeyError as e:
            raise StoreError(
                f"scan store has no array {name!r}; it has {sorted(self.group.array_keys())}",
                path=self.path,
            ) from e

    def read(self, name: str = "ct") -> NDArray[Any]:
        """The whole array ``name``. ``ct`` is checked against the ``ct_sha256`` written at
        ingest: a deleted or damaged chunk would otherwise read as zarr's fill value (0 HU)
        and move every measurement without a trace."""
        data = np.asarray(self.array(name)[...])
        expected = self.group.attrs.get("ct_sha256") if name == "ct" else None
        if expected and ct_sha256(data) != expected:
            raise StoreError(
                "ct does not match the ct_sha256 recorded at ingest: a chunk is missing or was "
                f"changed since. Delete {self.path.name} from the store's scans/ folder and "
                "re-ingest its source (a complete store is otherwise skipped), then re-run",
                reason=ReasonCode.STORE_CORRUPT,
                path=self.path / name,
            )
        return data

    def has(self, name: str) -> bool:
        return (self.path / name / "zarr.json").is_file()

    def derived_attrs(self, name: str) -> dict[str, Any] | None:
        """Attributes of array ``name`` when it exists (``prep``, ``seg``), else None."""
        if not self.has(name):
            return None
        import zarr

        return dict(zarr.open_array(store=str(self.path / name), mode="r").attrs)


def open_scan_store(path: str | os.PathLike[str]) -> ScanStore:
    """Open a complete store for reading; StoreError when it is missing or incomplete."""
    import zarr

    p = Path(path)
    if not p.exists():
        raise StoreError(f"no scan store at {p}", path=p)
    if not is_complete(p):
        raise StoreError(
            f"scan store {p} has no completion marker ({COMPLETION_MARKER}): it was not fully "
            "written; re-run ingest to rebuild it",
            path=p,
        )
    return ScanStore(p, zarr.open_group(store=str(p), mode="r", zarr_format=3))
