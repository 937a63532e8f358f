"""Which decoder is fastest here for each compressed transfer syntax: pylibjpeg or GDCM.

``python -m bench.bench_decoders [--repeats 7] [--out FILE]``

Inputs: synthetic CT slices (512 × 512, 16-bit, the phantom the ingest benchmarks use) written
as RLE lossless, JPEG 2000 lossless and JPEG-LS lossless, and the real NEMA WG04 slices (GE CT1
and Toshiba CT2, 512 × 512) in the same three syntaxes when ``../shared/data/real`` exists.
Every pydicom decoding plugin available for a syntax (``gdcm`` from python-gdcm,
``pylibjpeg`` with its -rle, -openjpeg and -libjpeg plugins, ``pydicom``'s pure-Python RLE,
``pillow`` for JPEG 2000) decodes every file, the plugins interleaved in each of
``--repeats`` rounds; the datasets are parsed once, untimed, so the figure is the decode
alone (``pydicom.pixels.pixel_array(ds, decoding_plugin=...)``). Outputs are compared: every
plugin must give the same pixels.

Reported per syntax and plugin: milliseconds per 512 × 512 frame (median over rounds of the
per-frame mean; spread = max − min), the CPU milliseconds (all threads: a decoder that runs
threads shows more CPU than wall), the speed relative to the slowest plugin, and, for the
synthetic frames, the wall milliseconds per frame when two processes decode at once (two
ingest workers on this 2-core machine: a threaded decoder then has no idle core to use). The ingest
decoder preference (``screening.ingest.dicom.DECODER_PREFERENCE``) is set from this table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, cpu_model, emit, git_state

REAL = ROOT.parent / "shared" / "data" / "real" / "wg04-transfer-syntaxes"
SYNTAXES = {"rle": "RLE", "j2k": "J2KR", "jpegls": "JLSL"}  # ours → WG04 folder name
PLUGINS = ("gdcm", "pylibjpeg", "pydicom", "pillow")


def _synthetic(folder: Path, syntax: str, n_slices: int) -> list[Path]:
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
    from screening.synthetic.writers import DicomInfo, write_dicom_series

    geometry = ScanGeometry(shape=(n_slices, 512, 512), spacing_mm=(2.5, 0.7, 0.7))
    phantom = make_phantom(PhantomSpec(), geometry, seed=7)
    return write_dicom_series(phantom, folder / syntax, DicomInfo(transfer_syntax=syntax))


def _real(syntax: str) -> list[Path]:
    folder = REAL / "WG04" / SYNTAXES[syntax]
    return sorted(p for p in folder.glob("CT*") if p.is_file()) if folder.is_dir() else []


def _available(ts: Any) -> list[str]:
    from pydicom.pixels import get_decoder

    have = get_decoder(ts).available_plugins
    return [p for p in PLUGINS if p in have]


def time_plugins(paths: list[Path], repeats: int) -> dict[str, Any]:
    """Per plugin: ms per frame in each round; and whether every plugin gave the same pixels."""
    import pydicom
    from pydicom.pixels import pixel_array

    datasets = [pydicom.dcmread(p) for p in paths]
    plugins = _available(datasets[0].file_meta.TransferSyntaxUID)
    reference = [pixel_array(ds, decoding_plugin=plugins[0]) for ds in datasets]
    equal = True
    ms: dict[str, list[float]] = {p: [] for p in plugins}
    cpu_ms: dict[str, list[float]] = {p: [] for p in plugins}
    for r in range(repeats + 1):  # round 0 warms each plugin's imports and is dropped
        order = plugins if r % 2 else plugins[::-1]
        for plugin in order:
            t0, c0 = time.perf_counter(), time.process_time()
            out = [pixel_array(ds, decoding_plugin=plugin) for ds in datasets]
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r == 0:
                equal &= all(np.array_equal(a, b) for a, b in zip(out, reference, strict=True))
            else:
                ms[plugin].append(1000.0 * seconds / len(datasets))
                cpu_ms[plugin].append(1000.0 * cpu / len(datasets))
    size = sum(len(ds.PixelData) for ds in datasets) / len(datasets)
    return {
        "ms": ms,
        "cpu_ms": cpu_ms,
        "equal": equal,
        "frames": len(datasets),
        "bytes_per_frame": size,
    }


_DATASETS: list[Any] = []


def _load(paths: list[Path]) -> None:
    import pydicom

    _DATASETS[:] = [pydicom.dcmread(p) for p in paths]


def _decode_all(plugin: str) -> None:
    from pydicom.pixels import pixel_array

    for ds in _DATASETS:
        pixel_array(ds, decoding_plugin=plugin)


def time_two_at_once(paths: list[Path], plugins: list[str], repeats: int) -> dict[str, Any]:
    """Two processes decoding at the same time (as two ingest workers on two cores do): wall
    ms per frame decoded, per plugin, each round interleaved."""
    from concurrent.futures import ProcessPoolExecutor

    ms: dict[str, list[float]] = {p: [] for p in plugins}
    with ProcessPoolExecutor(2, initializer=_load, initargs=(paths,)) as pool:
        for r in range(repeats + 1):
            for plugin in plugins if r % 2 else plugins[::-1]:
                t0 = time.perf_counter()
                list(pool.map(_decode_all, [plugin, plugin]))
                if r:
                    ms[plugin].append(1000.0 * (time.perf_counter() - t0) / (2 * len(paths)))
    return ms


def run(repeats: int, n_slices: int) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for syntax in SYNTAXES:
            paths = _synthetic(Path(tmp), syntax, n_slices)
            rows[f"synthetic {syntax}"] = row = time_plugins(paths, repeats)
            row["two_ms"] = time_two_at_once(paths, list(row["ms"]), repeats)
            real = _real(syntax)
            if real:
                rows[f"WG04 {SYNTAXES[syntax]}"] = time_plugins(real, repeats)
    return {"rows": rows, "repeats": repeats}


def _two(row: dict[str, Any], plugin: str) -> str:
    t = row.get("two_ms", {}).get(plugin)
    return f"{statistics.median(t):.2f} ({max(t) - min(t):.2f})" if t else "—"


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Decoders: pylibjpeg against GDCM (`bench/bench_decoders.py`)",
        "",
        f"Machine: {cpu_model()}; {git_state()}. One process, datasets parsed once; each "
        f"plugin decodes every frame in each of {res['repeats']} interleaved rounds (one "
        "warm-up round dropped). ms per 512 × 512 frame, wall: median (max − min); CPU ms "
        "(process time, all threads) shows whether a decoder used more than one core. Two "
        "processes at once: two processes each decode all the frames at the same time, as "
        "two ingest workers do on this 2-core machine; wall time / frames decoded.",
        "",
        "| input | frames | kB/frame | plugin | ms/frame | CPU ms/frame | speed vs slowest "
        "| 2 processes at once: ms/frame | same pixels |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, row in res["rows"].items():
        medians = {p: statistics.median(t) for p, t in row["ms"].items()}
        slowest = max(medians.values())
        for plugin, t in row["ms"].items():
            spread = max(t) - min(t)
            lines.append(
                f"| {name} | {row['frames']} | {row['bytes_per_frame'] / 1e3:.0f} | {plugin} "
                f"| {medians[plugin]:.2f} ({spread:.2f}) "
                f"| {statistics.median(row['cpu_ms'][plugin]):.2f} "
                f"| {slowest / medians[plugin]:.2f}× "
                f"| {_two(row, plugin)} "
                f"| {'yes' if row['equal'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--slices", type=int, default=16, help="synthetic frames per syntax")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    res = run(args.repeats, args.slices)
    emit(to_markdown(res), res, args.out, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
