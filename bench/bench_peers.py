"""Ingest side by side with dcm2niix, the converter users would pick instead, in one run.

``python -m bench.bench_peers [--series 20] [--slices 48] [--runs 3] [--out FILE]``

A cohort of synthetic CT series (512 × 512 slices, ``--slices`` each) is written once, in equal
shares of the transfer syntaxes the synthetic writer can encode: explicit VR little endian
(uncompressed), RLE lossless, JPEG 2000 lossless and JPEG-LS lossless. Then, interleaved
``--runs`` times, whole processes on the same files:

* ``dcm2niix -z n`` and ``dcm2niix -z y`` (Debian package ``dcm2niix``; skipped with a message
  when absent) converting the whole cohort folder;
* ``screening ingest COHORT --store S --workers 2`` into a fresh store (discovery, validation,
  HU, canonical orientation, sha256, compressed zarr chunks, the catalog).

Medians, spread and the ratio (dcm2niix time / ours: above 1 means we are faster).
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

SYNTAXES = ("explicit", "rle", "j2k", "jpegls")


def write_cohort(
    folder: Path, n_series: int, n_slices: int, syntaxes: tuple[str, ...] = SYNTAXES
) -> dict[str, list[str]]:
    """``n_series`` series under ``folder``, the syntaxes in turn; returns series per syntax."""
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
    from screening.synthetic.writers import DicomInfo, write_dicom_series

    series: dict[str, list[str]] = {s: [] for s in syntaxes}
    for i in range(n_series):
        syntax = syntaxes[i % len(syntaxes)]
        geometry = ScanGeometry(shape=(n_slices, 512, 512), spacing_mm=(2.5, 0.7, 0.7))
        phantom = make_phantom(PhantomSpec(), geometry, seed=100 + i)
        info = DicomInfo(transfer_syntax=syntax, uid_seed=f"peer-{i}", patient_id=f"P{i:05d}")
        write_dicom_series(phantom, folder / f"series-{i:03d}", info)
        series[syntax].append(f"series-{i:03d}")
    return series


def _timed(cmd: list[str], **kwargs: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - t0


def dcm2niix_reads(dcm2niix: str, series_dir: Path, work: Path) -> bool:
    """Whether this dcm2niix build converts the series (Debian's lacks JPEG-LS: it warns
    "Unsupported transfer syntax" and writes nothing)."""
    out = Path(tempfile.mkdtemp(dir=work))
    subprocess.run([dcm2niix, "-z", "n", "-o", str(out), str(series_dir)], capture_output=True)
    ok = any(out.glob("*.nii"))
    shutil.rmtree(out)
    return ok


def _subset(cohort: Path, names: list[str], folder: Path) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(cohort / name, target_is_directory=True)
    return folder


def run(
    n_series: int, n_slices: int, runs: int, syntaxes: tuple[str, ...] = SYNTAXES
) -> dict[str, object]:
    dcm2niix = shutil.which("dcm2niix")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cohort = work / "cohort"
        t0 = time.perf_counter()
        series = write_cohort(cohort, n_series, n_slices, syntaxes)
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
        ours_cmd = [sys.executable, "-m", "screening.cli", "ingest"]
        ours_cmd += ["--key-file", str(key), "--workers", "2", "--quiet", "--store"]
        cohorts = {"all series": cohort}
        unreadable: list[str] = []
        if dcm2niix:
            unreadable = [s for s, names in series.items() if names]
            unreadable = [
                s for s in unreadable if not dcm2niix_reads(dcm2niix, cohort / series[s][0], work)
            ]
            if unreadable:
                readable = [n for s, names in series.items() if s not in unreadable for n in names]
                cohorts["series dcm2niix converts"] = _subset(cohort, readable, work / "subset")
        tools = ["screening ingest (2 workers)"]
        if dcm2niix:
            tools += ["dcm2niix -z n", "dcm2niix -z y"]
        cases: dict[str, dict[str, list[float]]] = {c: {t: [] for t in tools} for c in cohorts}
        outputs: dict[str, dict[str, int]] = {c: {} for c in cohorts}
        for r in range(runs + 1):  # the first round warms the page cache and is dropped
            for label, folder in cohorts.items():
                for name in tools:
                    out = work / f"out-{r}-{name.split()[-1]}"
                    if name.startswith("screening"):
                        seconds = _timed([*ours_cmd, str(out), str(folder)], cwd=ROOT, env=env)
                    else:
                        assert dcm2niix is not None
                        out.mkdir()
                        z = name.split()[-1]
                        seconds = _timed([dcm2niix, "-z", z, "-o", str(out), str(folder)])
                    if not r:  # what each produced (checked once, untimed)
                        pattern = "scans/*.zarr" if name.startswith("screening") else "*.nii*"
                        outputs[label][name] = len(list(out.glob(pattern)))
                    shutil.rmtree(out, ignore_errors=True)
                    if r:
                        cases[label][name].append(seconds)
    return {
        "counts": {s: len(names) for s, names in series.items()},
        "unreadable": unreadable,
        "slices": n_slices,
        "series": n_series,
        "size_mb": size_mb,
        "setup_s": setup_s,
        "cases": cases,
        "outputs": outputs,
        "dcm2niix": bool(dcm2niix),
    }


def to_markdown(res: dict[str, object]) -> str:
    cases: dict[str, dict[str, list[float]]] = res["cases"]  # type: ignore[assignment]
    outputs: dict[str, dict[str, int]] = res["outputs"]  # type: ignore[assignment]
    counts: dict[str, int] = res["counts"]  # type: ignore[assignment]
    unreadable: list[str] = res["unreadable"]  # type: ignore[assignment]
    lines = [
        "# Side by side: ingest against dcm2niix (`bench/bench_peers.py`)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs; {git_state()}. Cohort: "
        f"{res['series']} synthetic series of {res['slices']} × 512 × 512 "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}; {res['size_mb']:.0f} MB of "
        "DICOM), whole processes, interleaved, page cache warm (one untimed round first).",
        "",
        "| cohort | tool | volumes written | runs | median s | min – max s "
        "| dcm2niix time / ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, by_tool in cases.items():
        ours = statistics.median(by_tool["screening ingest (2 workers)"])
        for name, t in by_tool.items():
            med = statistics.median(t)
            ratio = "" if name.startswith("screening") else f"{med / ours:.2f}×"
            spread = f"{min(t):.2f} – {max(t):.2f}"
            lines.append(
                f"| {label} | {name} | {outputs[label].get(name)} | {len(t)} | {med:.2f} "
                f"| {spread} | {ratio} |"
            )
    if not res["dcm2niix"]:
        lines += ["", "dcm2niix is not installed here (apt-get install dcm2niix): not compared."]
    if unreadable:
        lines += [
            "",
            f"This dcm2niix build does not convert {', '.join(unreadable)} (it warns "
            '"Unsupported transfer syntax" and writes nothing for those series), so on the '
            "whole cohort it does less work than we do; the second cohort is the series it "
            "converts, the same work for both.",
        ]
    lines += [
        "",
        "What each does: dcm2niix writes one NIfTI per series (`-z y`: gzip-compressed), with no "
        "pseudonymisation, no sha256 and no catalog; `screening ingest` validates every series "
        "(reason codes), converts to HU in canonical orientation, hashes the volume, writes "
        "blosc-compressed zarr chunks and the Parquet catalog, through a local Dask cluster "
        "(its start-up included).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=20)
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
