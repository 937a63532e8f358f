"""Ingest side by side with dcm2niix, the converter users would pick instead, in one run.

``python -m bench.bench_peers [--series 20] [--slices 48] [--runs 3] [--out FILE]``

A cohort of synthetic CT series (512 × 512 slices, ``--slices`` each) is written once, in equal
shares of the transfer syntaxes the synthetic writer can encode: explicit VR little endian
(uncompressed), RLE lossless and JPEG 2000 lossless. Then, interleaved ``--runs`` times, whole
processes on the same files:

* ``dcm2niix -z n`` and ``dcm2niix -z y`` (Debian package ``dcm2niix``; skipped with a message
  when absent) converting the whole cohort folder;
* ``screening ingest COHORT --store S --workers 2`` into a fresh store (discovery, validation,
  HU, canonical orientation, sha256, compressed zarr chunks, the catalog).

Medians, spread and the ratio (dcm2niix time / ours: above 1 means we are faster). JPEG-LS is
not in the cohort: no JPEG-LS encoder is installed here (pydicom needs pyjpegls to write it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, cpu_model, emit, git_state

SYNTAXES = ("explicit", "rle", "j2k")


def write_cohort(
    folder: Path, n_series: int, n_slices: int, syntaxes: tuple[str, ...] = SYNTAXES
) -> dict[str, int]:
    """``n_series`` series under ``folder``, the syntaxes in turn; returns series per syntax."""
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
    from screening.synthetic.writers import DicomInfo, write_dicom_series

    counts = dict.fromkeys(syntaxes, 0)
    for i in range(n_series):
        syntax = syntaxes[i % len(syntaxes)]
        geometry = ScanGeometry(shape=(n_slices, 512, 512), spacing_mm=(2.5, 0.7, 0.7))
        phantom = make_phantom(PhantomSpec(), geometry, seed=100 + i)
        info = DicomInfo(transfer_syntax=syntax, uid_seed=f"peer-{i}", patient_id=f"P{i:05d}")
        write_dicom_series(phantom, folder / f"series-{i:03d}", info)
        counts[syntax] += 1
    return counts


def _timed(cmd: list[str], **kwargs: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def run(
    n_series: int, n_slices: int, runs: int, syntaxes: tuple[str, ...] = SYNTAXES
) -> dict[str, object]:
    dcm2niix = shutil.which("dcm2niix")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cohort = work / "cohort"
        t0 = time.perf_counter()
        counts = write_cohort(cohort, n_series, n_slices, syntaxes)
        setup_s = time.perf_counter() - t0
        key = work / "k.key"
        subprocess.run(
            [sys.executable, "-m", "screening.cli", "keygen", str(key)],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        size_mb = sum(f.stat().st_size for f in cohort.rglob("*") if f.is_file()) / 1e6
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        ours_cmd = [sys.executable, "-m", "screening.cli", "ingest", str(cohort)]
        ours_cmd += ["--key-file", str(key), "--workers", "2", "--quiet", "--store"]
        cases: dict[str, list[float]] = {"screening ingest (2 workers)": []}
        outputs: dict[str, int] = {}
        if dcm2niix:
            cases["dcm2niix -z n"] = []
            cases["dcm2niix -z y"] = []
        for r in range(runs + 1):  # the first round warms the page cache and is dropped
            for name in cases:
                out = work / f"out-{r}-{len(cases[name])}-{name.split()[-1]}"
                if name.startswith("screening"):
                    seconds = _timed([*ours_cmd, str(out)], cwd=ROOT, env=env)
                else:
                    out.mkdir()
                    z = name.split()[-1]
                    seconds = _timed([dcm2niix, "-z", z, "-o", str(out), str(cohort)])
                if not r:  # what each produced (checked once, untimed)
                    pattern = "scans/*.zarr" if name.startswith("screening") else "*.nii*"
                    outputs[name] = len(list(out.glob(pattern)))
                shutil.rmtree(out, ignore_errors=True)
                if r:
                    cases[name].append(seconds)
    return {
        "counts": counts,
        "slices": n_slices,
        "series": n_series,
        "size_mb": size_mb,
        "setup_s": setup_s,
        "cases": cases,
        "outputs": outputs,
        "dcm2niix": bool(dcm2niix),
    }


def to_markdown(res: dict[str, object]) -> str:
    cases: dict[str, list[float]] = res["cases"]  # type: ignore[assignment]
    outputs: dict[str, int] = res["outputs"]  # type: ignore[assignment]
    counts: dict[str, int] = res["counts"]  # type: ignore[assignment]
    ours = statistics.median(cases["screening ingest (2 workers)"])
    lines = [
        "# Side by side: ingest against dcm2niix (`bench/bench_peers.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {git_state()}. Cohort: "
        f"{res['series']} synthetic series of {res['slices']} × 512 × 512 "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}; {res['size_mb']:.0f} MB of "
        "DICOM), whole processes, interleaved, page cache warm (one untimed round first).",
        "",
        "| tool | volumes written | runs | median s | min – max s | dcm2niix time / ours |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in cases.items():
        med = statistics.median(t)
        ratio = "" if name.startswith("screening") else f"{med / ours:.2f}×"
        spread = f"{min(t):.2f} – {max(t):.2f}"
        lines.append(
            f"| {name} | {outputs.get(name)} | {len(t)} | {med:.2f} | {spread} | {ratio} |"
        )
    if not res["dcm2niix"]:
        lines += ["", "dcm2niix is not installed here (apt-get install dcm2niix): not compared."]
    lines += [
        "",
        "What each does: dcm2niix writes one NIfTI per series (`-z y`: gzip-compressed), with no "
        "pseudonymisation, no sha256 and no catalog; `screening ingest` validates every series "
        "(reason codes), converts to HU in canonical orientation, hashes the volume, writes "
        "blosc-compressed zarr chunks and the Parquet catalog, through a local Dask cluster "
        "(its start-up included). JPEG-LS is not in this cohort (no encoder installed).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=21)
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--syntaxes", default=",".join(SYNTAXES), help="e.g. explicit or rle,j2k")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    res = run(args.series, args.slices, args.runs, tuple(args.syntaxes.split(",")))
    emit(to_markdown(res), res, args.out, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
