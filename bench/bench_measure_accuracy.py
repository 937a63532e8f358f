"""Measurement accuracy against phantom truth on a held-out synthetic cohort.

Synthesise (seed 2024, not the demo's 7 nor the weights' 1001) → ingest → segment with the
shipped demo weights (cascade) → measure from the U-Net's ``seg`` and from the reference masks
→ compare with ``truth.csv``: attenuation error per method, steatosis calls, grades, contrast
detection and truncation flags.

    python -m bench.bench_measure_accuracy [--n 40] [--out BENCHMARKS-measure-accuracy.md]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import HELD_OUT_SEED, cpu_model, emit, held_out_store

METHODS = {
    "AI-3D": "liver_hu_3d",
    "AI-3D eroded": "liver_hu_3d_eroded",
    "AI-2D": "liver_hu_2d",
    "AI-ROI": "liver_hu_roi",
}
CALLS = {"AI-3D": "steatosis_3d", "AI-2D": "steatosis_2d", "AI-ROI": "steatosis_roi"}


def _run(n: int, work: Path) -> dict[str, Any]:
    import duckdb

    from screening.measure import MeasureConfig, measure_stores
    from screening.model import InferenceConfig, load_model, segment_stores
    from screening.reasons import Segmenter

    cohort, store = held_out_store(work, n)
    results = work / "results"
    segment_stores(store, load_model("demo", with_coarse=True), InferenceConfig(cascade=True))
    seconds = {}
    for seg in (Segmenter.REFERENCE, Segmenter.UNET):
        t0 = time.perf_counter()
        measure_stores(store, results, MeasureConfig(), segmenter=seg)
        seconds[seg.value] = (time.perf_counter() - t0) / n
    rel = duckdb.sql(
        f"""select s.case_id, m.* from read_parquet('{results}/measurements/*/*.parquet',
               hive_partitioning = true) m
            join read_parquet('{store}/catalog/*/*.parquet', hive_partitioning = true) s
            using (scan_id)"""
    )
    rows = [dict(zip(rel.columns, t, strict=True)) for t in rel.fetchall()]
    with (cohort / "truth.csv").open() as f:
        truth = {r["case_id"]: r for r in csv.DictReader(f)}
    return {"rows": rows, "truth": truth, "seconds_per_scan": seconds}


def contrast_check(n_per_phase: int) -> dict[str, dict[str, int]]:
    """The contrast rules on phantoms alone: every phase × liver HU from −20 to 75 × noise."""
    from screening.measure import MeasureConfig, measure_volume
    from screening.reasons import ContrastPhase
    from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom

    rng = np.random.default_rng(HELD_OUT_SEED)
    out: dict[str, dict[str, int]] = {}
    for phase in ContrastPhase:
        counts = {"n": 0, "flagged": 0, "liver_hu": 0, "spleen_hu": 0, "vessels": 0}
        for i in range(n_per_phase):
            spec = PhantomSpec(
                liver_hu=float(rng.uniform(-20.0, 75.0)),
                spleen_hu=float(rng.uniform(38.0, 55.0)),
                contrast_phase=phase,
                exposure_mas=float(rng.uniform(10.0, 200.0)),
            )
            fov = "chest" if i % 3 == 0 else "chest_abdomen"
            ph = make_phantom(spec, ScanGeometry.preset("small", fov=fov), seed=7000 + i)
            m = measure_volume(ph.hu, ph.labels, ph.spacing_mm, MeasureConfig())
            counts["n"] += 1
            counts["flagged"] += bool(m.contrast_suspected)
            for rule in ("liver_hu", "spleen_hu", "vessels"):
                counts[rule] += bool(m.message and rule in m.message)
        out[phase.value] = counts
    return out


def _rates(pred: list[bool], true: list[bool]) -> dict[str, float]:
    p, t = np.array(pred), np.array(true)
    return {
        "accuracy": float((p == t).mean()),
        "sensitivity": float(p[t].mean()) if t.any() else float("nan"),
        "specificity": float((~p[~t]).mean()) if (~t).any() else float("nan"),
    }


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    truth = run["truth"]
    out: dict[str, Any] = {"n_truth": len(truth), "seconds_per_scan": run["seconds_per_scan"]}
    for seg in ("reference", "unet"):
        rows = [r for r in run["rows"] if r["segmenter"] == seg and r["status"] == "ok"]
        t = [truth[r["case_id"]] for r in rows]
        plain = [(r, tr) for r, tr in zip(rows, t, strict=True) if tr["contrast_phase"] == "none"]
        res: dict[str, Any] = {"n_ok": len(rows), "n_unenhanced": len(plain)}
        for name, col in METHODS.items():
            err = [r[col] - float(tr["liver_hu_true"]) for r, tr in plain if r[col] is not None]
            res[name] = {
                "bias": float(np.mean(err)),
                "mae": float(np.mean(np.abs(err))),
                "max_abs": float(np.max(np.abs(err))),
                "n": len(err),
            }
        sp = [
            r["spleen_hu_3d"] - float(tr["spleen_hu_true"])
            for r, tr in plain
            if r["spleen_hu_3d"] is not None
        ]
        res["spleen"] = {"bias": float(np.mean(sp)), "mae": float(np.mean(np.abs(sp)))}
        for name, col in CALLS.items():
            pairs = [(r[col], tr["steatosis"] == "True") for r, tr in plain if r[col] is not None]
            res[f"call {name}"] = _rates([p for p, _ in pairs], [q for _, q in pairs])
        graded = [(r["steatosis_grade"], tr["steatosis_grade"]) for r, tr in plain]
        res["grade exact"] = float(np.mean([a == b for a, b in graded]))
        contrast = [tr["contrast_phase"] != "none" for tr in t]
        flagged = [bool(r["contrast_suspected"]) for r in rows]
        res["contrast"] = {
            "n_contrast": int(sum(contrast)),
            "detected": int(sum(f and c for f, c in zip(flagged, contrast, strict=True))),
            "false_alarms": int(sum(f and not c for f, c in zip(flagged, contrast, strict=True))),
        }
        trunc = [
            (bool(r["liver_truncated"]), tr["liver_truncated"] == "True")
            for r, tr in zip(rows, t, strict=True)
        ]
        res["truncation agreement"] = float(np.mean([a == b for a, b in trunc]))
        res["n_truncated"] = int(sum(b for _, b in trunc))
        res["roi_not_placed"] = int(sum(r["liver_hu_roi"] is None for r in rows))
        out[seg] = res
    return out


def bench_measure_accuracy(n: int = 40, contrast_n: int = 20) -> dict[str, Any]:
    """The whole accuracy benchmark: held-out cohort of ``n`` scans + the contrast check."""
    with tempfile.TemporaryDirectory(prefix="bench-measure-acc-") as tmp:
        summary = summarise(_run(n, Path(tmp)))
    summary["contrast_check"] = contrast_check(contrast_n)
    return summary


def accuracy_markdown(s: dict[str, Any], machine: str) -> str:
    lines = [
        "## Measurement accuracy against phantom truth",
        "",
        f"Held-out synthetic cohort (seed {HELD_OUT_SEED}, {s['n_truth']} scans, 40 % "
        "steatotic, three sites, contrast and chest-only fields of view among them), ingested, "
        "segmented with the shipped demo weights (cascade) and measured from the U-Net's `seg` "
        "and from the reference (truth) masks. Truth is the phantom's unenhanced parenchymal "
        f"liver HU; errors over unenhanced scans only. Machine: {machine}. Reproduce: "
        "`python -m bench.bench_measure_accuracy`.",
        "",
        "| masks | method | bias (HU) | MAE (HU) | max abs (HU) | n |",
        "|---|---|---|---|---|---|",
    ]
    for seg in ("reference", "unet"):
        for name in METHODS:
            m = s[seg][name]
            lines.append(
                f"| {seg} | {name} | {m['bias']:+.2f} | {m['mae']:.2f} | {m['max_abs']:.2f} "
                f"| {m['n']} |"
            )
        sp = s[seg]["spleen"]
        lines.append(f"| {seg} | spleen (eroded) | {sp['bias']:+.2f} | {sp['mae']:.2f} | | |")
    lines += [
        "",
        "| masks | call at <= 40 HU | accuracy | sensitivity | specificity |",
        "|---|---|---|---|---|",
    ]
    for seg in ("reference", "unet"):
        for name in CALLS:
            c = s[seg][f"call {name}"]
            lines.append(
                f"| {seg} | {name} | {c['accuracy']:.3f} | {c['sensitivity']:.3f} "
                f"| {c['specificity']:.3f} |"
            )
    lines += [
        "",
        "| masks | grade exact | contrast detected | contrast false alarms "
        "| truncation agreement | AI-ROI not placed | s / scan |",
        "|---|---|---|---|---|---|---|",
    ]
    for seg in ("reference", "unet"):
        r = s[seg]
        c = r["contrast"]
        lines.append(
            f"| {seg} | {r['grade exact']:.3f} | {c['detected']}/{c['n_contrast']} | "
            f"{c['false_alarms']} | {r['truncation agreement']:.3f} ({r['n_truncated']} "
            f"truncated) | {r['roi_not_placed']} | {s['seconds_per_scan'][seg]:.3f} |"
        )
    lines += [
        "",
        "Contrast rules on phantoms alone (liver −20…75 HU, spleen 38…55 HU, 10–200 mAs, a third "
        "chest-only; rules in `screening.measure.qc.contrast_evidence`):",
        "",
        "| phase | scans | flagged | by liver HU | by spleen HU | by vessels |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for phase, c in s.get("contrast_check", {}).items():
        lines.append(
            f"| {phase} | {c['n']} | {c['flagged']} | {c['liver_hu']} | {c['spleen_hu']} "
            f"| {c['vessels']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="held-out cohort size")
    parser.add_argument("--contrast-n", type=int, default=20, help="phantoms per contrast phase")
    parser.add_argument("--out", type=Path, help="write the markdown section here")
    parser.add_argument("--json", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    summary = bench_measure_accuracy(args.n, args.contrast_n)
    text = accuracy_markdown(summary, f"{cpu_model()}, {os.cpu_count()} logical CPUs")
    emit(text, summary, args.out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
