"""Before / after of the ingest decoder choice, at the ingest level (not in ``make bench``).

``python -m bench.bench_decoder_ab [--series 10] [--runs 3]``

Copies the engine (``screening/`` and ``schemas/``) into temporary folders with one entry of
``screening.ingest.dicom.DECODER_PREFERENCE`` changed back to what it was before the choice
(JPEG 2000: GDCM first, pydicom's own order when python-gdcm is installed; JPEG-LS: pylibjpeg
only, an install without python-gdcm), then ingests the same cohorts with each copy and with
the engine as it is (``screening ingest --workers 2``, whole processes with ``PYTHONPATH``
pointing at the copy, so the Dask workers run it too), interleaved, one untimed round first.
Prints a markdown table: median and spread per cohort and decoder.
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

from bench.bench_peers import write_cohort
from bench.common import ROOT

J2K, JLS = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"
#: variant → (cohort syntax, the preference line as committed, the line before the change)
VARIANTS: dict[str, tuple[str, str, str] | None] = {
    "after (as committed)": None,
    "before: J2K GDCM first": (
        "j2k",
        f'"{J2K}": ("pylibjpeg", "gdcm", "pillow")',
        f'"{J2K}": ("gdcm", "pylibjpeg", "pillow")',
    ),
    "before: JPEG-LS pylibjpeg": (
        "jpegls",
        f'"{JLS}": ("gdcm", "pylibjpeg")',
        f'"{JLS}": ("pylibjpeg",)',
    ),
}


def _engine_copy(work: Path, edit: tuple[str, str, str]) -> Path:
    root = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(ROOT / "screening", root / "screening")
    shutil.copytree(ROOT / "schemas", root / "schemas")
    dicom = root / "screening" / "ingest" / "dicom.py"
    text = dicom.read_text()
    if edit[1] not in text:
        raise SystemExit(f"the preference line {edit[1]} is not in dicom.py: update this script")
    dicom.write_text(text.replace(edit[1], edit[2]))
    return root


def run(n_series: int, runs: int) -> dict[tuple[str, str], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        roots = {n: ROOT if e is None else _engine_copy(work, e) for n, e in VARIANTS.items()}
        cohorts = {s: work / f"cohort-{s}" for s in ("j2k", "jpegls")}
        for syntax, folder in cohorts.items():
            write_cohort(folder, n_series, 48, (syntax,))
        key = work / "k.key"
        cli = [sys.executable, "-m", "screening.cli"]
        subprocess.run([*cli, "keygen", str(key)], check=True, capture_output=True, cwd=ROOT)
        times: dict[tuple[str, str], list[float]] = {}
        for r in range(runs + 1):
            for syntax, folder in cohorts.items():
                names = [n for n, e in VARIANTS.items() if e is None or e[0] == syntax]
                for name in names if r % 2 else names[::-1]:
                    out = work / "out"
                    cmd = [*cli, "ingest", str(folder), "--key-file", str(key), "--workers", "2"]
                    env = {**os.environ, "PYTHONPATH": str(roots[name])}
                    t0 = time.perf_counter()
                    proc = subprocess.run(
                        [*cmd, "--quiet", "--store", str(out)],
                        capture_output=True,
                        text=True,
                        env=env,
                        cwd=roots[name],
                    )
                    seconds = time.perf_counter() - t0
                    if proc.returncode != 0:
                        raise SystemExit(proc.stderr[-2000:])
                    assert len(list(out.glob("scans/*.zarr"))) == n_series
                    shutil.rmtree(out)
                    if r:
                        times.setdefault((syntax, name), []).append(seconds)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    print("| cohort | decoder | median s | min – max s |\n|---|---|---:|---:|")
    for (syntax, name), t in run(args.series, args.runs).items():
        print(f"| {syntax} | {name} | {statistics.median(t):.2f} | {min(t):.2f} – {max(t):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
