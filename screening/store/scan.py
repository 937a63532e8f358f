"""The scan store: one zarr v3 group per scan (docs/data-contracts.md,
``schemas/scan_store.yaml``).

A store is given its completion marker only after every chunk and attribute is written, so a
crash at any point never leaves a store that looks complete; readers refuse a store without the
marker. On a local disk it is also written under a temporary name and renamed into place; in an
object store (no rename) it is written at its final key, and an incomplete leftover is replaced.
A derived array (``prep``, ``seg``) replaced in an object store is written under a new key and
switched to by one write of the group's ``arrays`` attribute. The group carries OME-NGFF 0.5
``multiscales`` metadata (axes z, y, x in millimetres) so standard viewers open ``ct``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.errors import StoreError
from screening.location import Location, Where
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
    "scan_store_relpath",
    "write_derived_array",
    "write_scan_store",
]

_LAYOUT = load_store_layout()
COMPLETION_MARKER: str = _LAYOUT["completion_marker"]
_DIMS = ("z", "y", "x")
#: Group attribute mapping a derived array's name to its key, where it is not the name itself
#: (object stores: a replaced ``seg`` lives under ``seg-<token>``).
ARRAYS_ATTR = "arrays"


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


def scan_store_relpath(scan_id: str) -> str:
    """``scans/<scan_id>.zarr``: where a scan's store lives inside STORE."""
    return str(_LAYOUT["path"].format(scan_id=scan_id))


def scan_store_path(store_root: Where, scan_id: str) -> Location:
    """``STORE/scans/<scan_id>.zarr``."""
    return Location.of(store_root) / scan_store_relpath(scan_id)


def is_complete(path: Where) -> bool:
    return (Location.of(path) / COMPLETION_MARKER).is_file()


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


def _write_array(
    group: Any, where: Location, name: str, data: NDArray[Any], cfg: StoreConfig
) -> None:
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
    root = where / name
    cz, cy, cx = chunks
    for i in range(0, data.shape[0], cz):
        for j in range(0, data.shape[1], cy):
            for k in range(0, data.shape[2], cx):
                block = data[i : i + cz, j : j + cy, k : k + cx]
                if block.shape != chunks:
                    padded = np.zeros(chunks, dtype=data.dtype)
                    padded[: block.shape[0], : block.shape[1], : block.shape[2]] = block
                    block = padded
                chunk = root / "c" / str(i // cz) / str(j // cy) / str(k // cx)
                chunk.put_bytes(encode(np.ascontiguousarray(block, "<" + data.dtype.str[1:])))


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
    store_root: Where,
    scan_id: str,
    volume: ScanVolume,
    attrs: dict[str, Any],
    cfg: StoreConfig,
    seg_reference: NDArray[np.uint8] | None = None,
    sha256: str | None = None,
) -> Location:
    """Write one scan store atomically; return its location.

    ``attrs`` (JSON-serialisable, no identifiers) is stored as the group's ``scan`` attribute
    next to the geometry. ``sha256`` is :func:`ct_sha256` of the volume when the caller has it
    already (it is computed otherwise). When a complete store with this id already exists (a
    task that ran twice), the new copy is discarded and the existing one kept.
    """
    final = scan_store_path(store_root, scan_id)
    if is_complete(final):
        return final
    group_attrs = {
        "spacing_mm": [float(s) for s in volume.spacing_mm],
        "origin_mm": [float(o) for o in volume.origin_mm],
        "direction": [float(v) for row in volume.direction for v in row],
        "ct_sha256": sha256 or volume.ct_sha256 or ct_sha256(volume.ct_hu),
        "source": volume.source,
        "scan": attrs,
        "ome": ngff_multiscales(volume.spacing_mm, volume.origin_mm),
    }
    if final.is_local:
        _write_local(final, volume, group_attrs, cfg, seg_reference, scan_id)
    else:
        final.remove(recursive=True)  # an incomplete leftover of a killed attempt
        _write_group(final, volume, group_attrs, cfg, seg_reference)
    (final / COMPLETION_MARKER).write_text(json.dumps({"scan_id": scan_id}) + "\n")
    return final


def _write_group(
    where: Location,
    volume: ScanVolume,
    group_attrs: dict[str, Any],
    cfg: StoreConfig,
    seg_reference: NDArray[np.uint8] | None,
) -> None:
    import zarr

    group = zarr.open_group(store=where.url, mode="w", zarr_format=3)
    _write_array(group, where, "ct", volume.ct_hu, cfg)
    if seg_reference is not None:
        _write_array(group, where, "seg_reference", seg_reference, cfg)
    group.attrs.update(group_attrs)


def _write_local(
    final: Location,
    volume: ScanVolume,
    group_attrs: dict[str, Any],
    cfg: StoreConfig,
    seg_reference: NDArray[np.uint8] | None,
    scan_id: str,
) -> None:
    """Under a temporary sibling, renamed into place (a reader never sees a half store)."""
    path = final.local_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{scan_id}-{uuid.uuid4().hex}.zarr")
    try:
        _write_group(Location.of(tmp), volume, group_attrs, cfg, seg_reference)
        if is_complete(final):  # another attempt finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if path.exists():  # an incomplete leftover of a crashed attempt
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_derived_array(
    store_path: Where,
    name: str,
    data: NDArray[Any],
    attrs: dict[str, Any],
    cfg: StoreConfig | None = None,
) -> Location:
    """Add or replace array ``name`` (``prep``, ``seg``) in a complete scan store, atomically.

    A reader sees the old array or the whole new one, never a half-written one; running twice
    is harmless. ``attrs`` (JSON-serialisable) go on the array itself. On a local disk the
    array is written under a temporary name inside the group and renamed into place; in an
    object store it is written under a new key and the group's ``arrays`` attribute (one PUT)
    switches readers to it.
    """
    import zarr

    store = open_scan_store(store_path)
    cfg = cfg or StoreConfig()
    group = zarr.open_group(store=store.path.url, mode="r+", zarr_format=3)
    if not store.path.is_local:
        key = f"{name}-{uuid.uuid4().hex[:12]}"
        _write_array(group, store.path, key, data, cfg)
        group[key].attrs.update(attrs)
        arrays: dict[str, Any] = dict(store.attrs.get(ARRAYS_ATTR) or {})
        old = str(arrays.get(name, name))
        arrays[name] = key
        group.attrs[ARRAYS_ATTR] = arrays
        (store.path / old).remove(recursive=True)
        return store.path / key
    root = store.path.local_path()
    tmp_name = f".tmp-{name}-{uuid.uuid4().hex}"
    tmp = root / tmp_name
    try:
        _write_array(group, store.path, tmp_name, data, cfg)
        group[tmp_name].attrs.update(attrs)
        final = root / name
        if final.exists():
            old_dir = root / f".old-{name}-{uuid.uuid4().hex}"
            os.rename(final, old_dir)
            os.rename(tmp, final)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return store.path / name


@dataclass(frozen=True)
class ScanStore:
    """A complete scan store opened for reading."""

    path: Location
    group: Any

    def key(self, name: str) -> str:
        """Where array ``name`` lives in the group (see :data:`ARRAYS_ATTR`)."""
        return str((self.group.attrs.get(ARRAYS_ATTR) or {}).get(name, name))

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
            return self.group[self.key(name)]
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
        return (self.path / self.key(name) / "zarr.json").is_file()

    def derived_attrs(self, name: str) -> dict[str, Any] | None:
        """Attributes of array ``name`` when it exists (``prep``, ``seg``), else None."""
        if not self.has(name):
            return None
        import zarr

        return dict(zarr.open_array(store=(self.path / self.key(name)).url, mode="r").attrs)


def open_scan_store(path: Where) -> ScanStore:
    """Open a complete store for reading; StoreError when it is missing or incomplete."""
    import zarr

    p = Location.of(path)
    if not p.exists():
        raise StoreError(f"no scan store at {p}", path=p)
    if not is_complete(p):
        raise StoreError(
            f"scan store {p} has no completion marker ({COMPLETION_MARKER}): it was not fully "
            "written; re-run ingest to rebuild it",
            path=p,
        )
    return ScanStore(p, zarr.open_group(store=p.url, mode="r", zarr_format=3))
