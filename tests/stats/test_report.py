"""The HTML report: self-contained, every section present, figures that decode and are not
blank, a gallery of flagged scans only, "not computed" for missing inputs, no identifiers
beyond scan ids, and a real headless Chromium that parses and paints it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from screening.errors import ConfigError
from screening.schemas import load_table_schema
from screening.stats.report import SECTION_HEADINGS, render_report
from screening.tables import write_part

REPO = Path(__file__).resolve().parents[2]

# Written out, not imported: the test fails if a section is renamed or dropped.
EXPECTED_HEADINGS = (
    "Headline numbers",
    "Prevalence by site",
    "Prevalence by cohort, scanner, sex and age band",
    "Attenuation by method",
    "AI versus expert readers",
    "Bland–Altman analysis",
    "Agreement with expert readers",
    "ROC curves and classification",
    "Confusion matrices",
    "Segmentation accuracy (Dice)",
    "Repeatability",
    "QC gallery: flagged scans",
    "How to reproduce",
)
#: Figures of a complete STATS folder: forest, box, scatter, Bland–Altman, rater heat map, ROC,
#: confusion matrices, Dice.
N_FIGURES = 8
METHODS = ("ai_3d", "ai_2d", "ai_roi")
READERS = ("A", "B")
SITES = ("site-1", "site-2", "site-3")
IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
# Strings that must never reach the page: a pseudonymous patient id column that a careless
# stats writer might leave in paired.parquet, and the free-text message of a measurement.
PATIENT_SENTINEL = "PSEUDO-PATIENT-7f3a"
MESSAGE_SENTINEL = "MESSAGE-TEXT-91bc"


def _scan_id(i: int) -> str:
    return hashlib.sha256(f"scan-{i}".encode()).hexdigest()


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def _prevalence_rows(rng: np.random.Generator) -> list[dict[str, Any]]:
    dims = {
        "cohort": ("lung", "covid"),
        "site": SITES,
        "scanner": ("GE Revolution", "Vendor <X> & Co"),
        "sex": ("F", "M"),
        "age_band": ("<40", "40-49", "80+", "unknown"),
    }
    rows = []
    for m in METHODS:
        for dim, groups in dims.items():
            for g in (*groups, "all"):
                n = 300 if g == "all" else int(rng.integers(40, 120))
                decided = n - 12
                k = int(rng.integers(5, decided // 2))
                p = 100 * k / decided
                rows.append(
                    {
                        "method": m,
                        "dimension": dim,
                        "group": g,
                        "n_scans": n,
                        "n_ingest_rejected": 3,
                        "n_not_run": 1,
                        "n_failed": 2,
                        "n_contrast_excluded": 4,
                        "n_undecided": 2,
                        "n_decided": decided,
                        "n_steatosis": k,
                        "prevalence_pct": p,
                        "ci_lo_pct": max(0.0, p - 6),
                        "ci_hi_pct": p + 6,
                        "pipeline_id": "pipe0001",
                    }
                )
    return rows


def _paired_rows(rng: np.random.Generator, n: int = 30) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        truth = float(rng.uniform(10, 70))
        ai = {
            "liver_hu_3d": truth + rng.normal(0, 3),
            "liver_hu_2d": truth + rng.normal(1, 4),
            "liver_hu_roi": truth + rng.normal(-1, 3),
        }
        for reader in READERS:
            rows.append(
                {
                    "scan_id": _scan_id(100 + i),
                    "cohort": "lung",
                    "site": SITES[i % 3],
                    "reader": reader,
                    "roi_hu": truth + rng.normal(0, 2),
                    **ai,
                    "patient_pseudo_id": PATIENT_SENTINEL,
                }
            )
    return rows


def _stats_tables(rng: np.random.Generator) -> dict[str, list[dict[str, Any]]]:
    classification, roc, agreement = [], [], []
    grid = np.linspace(0, 1, 21)
    for m in METHODS:
        for reader in (*READERS, "readers_mean"):  # and the consensus, as `screening stats`
            tp, fp, tn, fn = (int(x) for x in rng.integers(3, 20, 4))
            classification.append(
                {
                    "method": m,
                    "reader": reader,
                    "n": tp + fp + tn + fn,
                    "n_pos": tp + fn,
                    "n_neg": fp + tn,
                    "auc": 0.92,
                    "auc_lo": 0.85,
                    "auc_hi": 0.97,
                    "sensitivity": tp / (tp + fn),
                    "sensitivity_lo": 0.5,
                    "sensitivity_hi": 0.99,
                    "specificity": tn / (tn + fp),
                    "specificity_lo": 0.5,
                    "specificity_hi": 0.99,
                    "tp": tp,
                    "fp": fp,
                    "tn": tn,
                    "fn": fn,
                    "n_boot_used": 1000,
                    "threshold_hu": 40.0,
                    "note": "",
                }
            )
            tpr = grid**0.25
            roc += [
                {
                    "method": m,
                    "reader": reader,
                    "fpr": f,
                    "tpr": t,
                    "tpr_lo": t * 0.85,
                    "tpr_hi": min(1.0, t * 1.1),
                }
                for f, t in zip(grid, tpr, strict=True)
            ]
            if reader not in READERS:
                continue
            agreement.append(
                {
                    "method": m,
                    "reader": reader,
                    "n": 30,
                    "icc": 0.9,
                    "icc_lo": 0.8,
                    "icc_hi": 0.95,
                    "spearman": 0.91,
                    "spearman_p": 1e-8,
                    "mse": 12.5,
                    "mean_diff": 0.4,
                    "sd_diff": 3.3,
                    "ks_stat": 0.1,
                    "ks_p": 0.9,
                    "ks_norm_p_method": 0.5,
                    "ks_norm_p_reader": 0.6,
                    "ba_bias": 0.4,
                    "ba_loa_lo": -6.1,
                    "ba_loa_hi": 6.9,
                    "t_p": 0.5,
                    "wilcoxon_p": 0.4,
                    "note": None,
                }
            )
    agreement.append({**agreement[0], "method": "reader:A", "reader": "B", "icc": 0.95})
    raters = [*METHODS, *READERS]
    matrix = [
        {
            "rater_a": a,
            "rater_b": b,
            "icc": 1.0 if a == b else 0.8 + 0.02 * (i + j),
            "spearman": 0.9,
            "mean_diff": 0.0,
        }
        for i, a in enumerate(raters)
        for j, b in enumerate(raters)
    ]
    segmentation, summary = [], []
    for i in range(24):
        for organ in ("liver", "spleen"):
            undefined = organ == "spleen" and i == 0
            segmentation.append(
                {
                    "scan_id": _scan_id(100 + i),
                    "cohort": ("lung", "covid")[i % 2],
                    "organ": organ,
                    "dice": None if undefined else float(rng.uniform(0.85, 0.98)),
                    "jaccard": 0.85,
                    "hd_mm": 9.0,
                    "hd95_mm": 4.0,
                    "assd_mm": 1.0,
                    "pred_volume_ml": 1500.0,
                    "ref_volume_ml": 1480.0,
                    "reason": "EMPTY_REFERENCE" if undefined else None,
                    "group": ("normal", "steatosis")[(i // 2) % 2],
                }
            )
    for cohort in ("lung", "covid"):
        for organ in ("liver", "spleen"):
            for group in ("normal", "steatosis"):
                for metric in ("dice", "hd95_mm"):
                    summary.append(
                        {
                            "cohort": cohort,
                            "organ": organ,
                            "group": group,
                            "metric": metric,
                            "n": 6,
                            "n_undefined": 0,
                            "mean": 0.93,
                            "std": 0.02,
                        }
                    )
    return {
        "prevalence": _prevalence_rows(rng),
        "prevalence_standardised": [
            {
                "method": m,
                "prevalence_pct": 21.0,
                "ci_lo_pct": 17.0,
                "ci_hi_pct": 25.5,
                "n_decided": 288,
                "n_bands_missing": 0,
            }
            for m in METHODS
        ],
        "classification": classification,
        "roc": roc,
        "agreement": agreement,
        "agreement_matrix": matrix,
        "paired": _paired_rows(rng),
        "segmentation": segmentation,
        "segmentation_summary": summary,
        "repeatability": [
            {
                "method": m,
                "n_subjects": 8,
                "n_measurements": 17,
                "within_sd": 1.8,
                "repeatability_coefficient": 4.99,
                "within_cv_pct": 3.4,
                "mean": 52.0,
                "note": "",
            }
            for m in METHODS
        ],
    }


def _overlay(path: Path, seed: int) -> None:
    """A fake QC overlay: a grey gradient (CT-like) with a coloured 'mask' and a red ROI."""
    rng = np.random.default_rng(seed)
    h, w = 400, 660
    grey = np.tile(np.linspace(20, 220, w, dtype=np.uint8), (h, 1))
    img = np.stack([grey] * 3, axis=-1)
    y0, x0 = int(rng.integers(40, 150)), int(rng.integers(40, 300))
    img[y0 : y0 + 120, x0 : x0 + 200] = (40, 200, 80)
    img[y0 + 40 : y0 + 60, x0 + 40 : x0 + 60] = (230, 30, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


#: (status, qc_flags, reason, has overlay): scans 0 and 5 are clean, 1-4 are flagged.
MEASUREMENTS: tuple[tuple[str, list[str], str | None, bool], ...] = (
    ("ok", [], None, True),
    ("ok", ["LIVER_TRUNCATED"], None, True),
    ("failed", [], "INTERNAL_ERROR", False),
    ("ok", ["ROI_MOVED", "CONTRAST_IMAGE"], "CONTRAST_IMAGE", True),
    ("rejected", [], "NO_LIVER", True),
    ("ok", [], None, True),
)
FLAGGED = (1, 2, 3, 4)
FLAGGED_WITH_OVERLAY = (1, 3, 4)


def _results(root: Path) -> Path:
    rows = []
    for i, (status, flags, reason, has_overlay) in enumerate(MEASUREMENTS):
        rel = f"overlays/pipe0001/{_scan_id(i)}.png"
        if has_overlay:
            _overlay(root / rel, seed=i)
        rows.append(
            {
                "scan_id": _scan_id(i),
                "pipeline_id": "pipe0001",
                "segmenter": "unet",
                "cohort": ("lung", "covid")[i % 2],
                "status": status,
                "qc_flags": flags,
                "reason": reason,
                "overlay_file": rel if has_overlay else None,
                "message": MESSAGE_SENTINEL,
                "engine_version": "0.1.0",
            }
        )
    write_part(root / "measurements", load_table_schema("measurements"), rows)
    return root


def _stats(root: Path, seed: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in _stats_tables(np.random.default_rng(seed)).items():
        _write(root / f"{name}.parquet", rows)
    summary = {
        "pipeline_id": "pipe0001",
        "store": "/data/store",
        "n_scans": 300,
        "created_at": "2025-01-01T00:00:00Z",
        "reference": "/data/reads.csv",
        "n_boot": 1000,
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    _stats(base / "stats")
    _results(base / "results")
    return base


@pytest.fixture(scope="module")
def report(workdir: Path) -> Path:
    return render_report(workdir / "stats", workdir / "results", workdir / "out" / "report.html")


@pytest.fixture(scope="module")
def html(report: Path) -> str:
    return report.read_text(encoding="utf-8")


def _images(text: str) -> Iterator[Image.Image]:
    for data in IMG.findall(text):
        im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        assert im.format == "PNG"
        im.load()
        yield im


def _gallery(text: str) -> str:
    return text.split('id="gallery"', 1)[1].split("</section>", 1)[0]


def test_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "url(" not in html and "@import" not in html
    srcs = re.findall(r'\bsrc="([^"]{0,40})', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in re.findall(r'\bhref="([^"]*)"', html))


def test_every_section_present_and_computed(html: str) -> None:
    assert tuple(SECTION_HEADINGS) == EXPECTED_HEADINGS
    headings = re.findall(r"<h2>([^<]*)</h2>", html)
    assert tuple(h.replace("&amp;", "&") for h in headings) == EXPECTED_HEADINGS
    assert "not computed" not in html
    # Exclusions shown beside the decided scans, and values from the tables on the page.
    for text in ("rejected at ingest", "contrast excluded", "not run", "undecided"):
        assert text in html
    assert "Vendor &lt;X&gt; &amp; Co" in html  # data is escaped, not interpreted
    assert "0.900 [0.800, 0.950]" in html  # ICC with CI, rounded to 3 decimals
    assert "readers&#x27; mean ROI" in html  # the consensus truth, named in words
    for command in ("screening stats", "screening report", "screening query"):
        assert command in html


def test_figures_decode_and_are_not_blank(html: str) -> None:
    images = list(_images(html))
    assert len(images) == N_FIGURES + len(FLAGGED_WITH_OVERLAY)
    for im in images:
        arr = np.asarray(im.convert("RGB"), dtype=np.float64)
        assert arr.var() > 0
        assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 8
        assert 100 < im.width <= 1200 and 100 < im.height <= 1800  # modest figure sizes


def test_gallery_shows_only_flagged_scans(html: str) -> None:
    gallery = _gallery(html)
    for i in range(len(MEASUREMENTS)):
        assert (_scan_id(i)[:12] in gallery) == (i in FLAGGED)
    thumbs = list(re.finditer(r'<figure class="thumb">(.*?)</figure>', gallery))
    assert len(thumbs) == len(FLAGGED)
    assert thumbs[0].group(1).count("failed") >= 1  # failures first
    assert "no overlay" in thumbs[0].group(1) and "INTERNAL_ERROR" in thumbs[0].group(1)
    widths = [im.width for im in _images(gallery)]
    assert widths == [360] * len(FLAGGED_WITH_OVERLAY)
    assert "ROI_MOVED, CONTRAST_IMAGE" in gallery and "rejected / NO_LIVER" in gallery
    assert "more flagged" not in gallery


def test_gallery_is_capped(workdir: Path) -> None:
    out = render_report(
        workdir / "missing-stats", workdir / "results", workdir / "capped.html", max_gallery=1
    )
    gallery = _gallery(out.read_text(encoding="utf-8"))
    assert gallery.count('<figure class="thumb">') == 1
    assert f"{len(FLAGGED) - 1} more flagged scan(s) not shown" in gallery
    with pytest.raises(ConfigError, match="max_gallery"):
        render_report(workdir / "stats", workdir / "results", workdir / "x.html", max_gallery=-1)


def test_no_identifiers_beyond_scan_ids(html: str) -> None:
    assert PATIENT_SENTINEL not in html and MESSAGE_SENTINEL not in html
    for i in range(len(MEASUREMENTS)):
        assert _scan_id(i) not in html  # only the 12-character prefix


def test_missing_stats_say_not_computed(tmp_path: Path, workdir: Path) -> None:
    stats = tmp_path / "stats"
    stats.mkdir()
    reason = "no reference reads (--reference READS)"
    (stats / "summary.json").write_text(json.dumps({"not_computed": {"agreement": reason}}))
    (stats / "roc.parquet").write_bytes(b"not parquet")  # unreadable
    _write(stats / "repeatability.parquet", [{"method": "ai_3d"}])  # incomplete
    out = render_report(stats, workdir / "results", tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    assert tuple(re.findall(r"<h2>([^<]*)</h2>", text)) == EXPECTED_HEADINGS
    for why in (
        "not computed: prevalence.parquet not found",
        "not computed: paired.parquet not found",
        "not computed: segmentation.parquet not found",
        f"not computed: agreement.parquet not found in the STATS folder: {reason}",
        "not computed: roc.parquet could not be read",
        "not computed: repeatability.parquet lacks column(s) n_subjects",
    ):
        assert why in text
    # Only the gallery thumbnails remain; the gallery does not depend on STATS.
    assert len(list(_images(text))) == len(FLAGGED_WITH_OVERLAY)


def test_a_per_patient_prevalence_says_it_counts_patients(
    tmp_path: Path, workdir: Path, html: str
) -> None:
    stats = tmp_path / "stats"
    shutil.copytree(workdir / "stats", stats)
    prev = pq.read_table(stats / "prevalence.parquet")
    prev = prev.append_column("unit", pa.array(["patient"] * prev.num_rows))
    pq.write_table(prev, stats / "prevalence.parquet")
    text = render_report(stats, workdir / "results", tmp_path / "r.html").read_text("utf-8")
    assert "patients (each counted once" in text and '<th class="num">patients</th>' in text
    assert "patients (each counted once" not in html and '<th class="num">patients</th>' not in html


def test_degenerate_inputs_render(tmp_path: Path, workdir: Path) -> None:
    """Tiny or empty groups (one scan, NaN values, no site groups) give figures or reasons,
    never an exception."""
    stats = tmp_path / "stats"
    stats.mkdir()
    tables = _stats_tables(np.random.default_rng(5))
    _write(stats / "prevalence.parquet", [r for r in tables["prevalence"] if r["group"] == "all"])
    one = dict(tables["paired"][0], liver_hu_2d=None)
    _write(stats / "paired.parquet", [one])
    _write(stats / "agreement_matrix.parquet", [{"rater_a": "A", "rater_b": "A", "icc": None}])
    out = render_report(stats, workdir / "results", tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    assert "not computed: prevalence.parquet has only the all-sites row" in text
    assert tuple(re.findall(r"<h2>([^<]*)</h2>", text)) == EXPECTED_HEADINGS
    # box plot, scatter, Bland–Altman (one pair), rater heat map, and the gallery
    assert len(list(_images(text))) == 4 + len(FLAGGED_WITH_OVERLAY)


def test_no_results_and_no_stats(tmp_path: Path) -> None:
    out = render_report(tmp_path / "nope", tmp_path / "nothing", tmp_path / "deep" / "r.html")
    text = out.read_text(encoding="utf-8")
    assert "does not exist" in text
    assert "not computed: no measurements under RESULTS/measurements" in text
    assert "<img" not in text


def test_written_atomically(workdir: Path, report: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = report.read_bytes()
    render_report(workdir / "stats", workdir / "results", report)  # overwrite in place
    assert report.read_bytes() == before  # same inputs, same bytes
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.html"]  # no temp left

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full (simulated) at the rename")

    monkeypatch.setattr("screening.fsutil.os.replace", crash)
    with pytest.raises(OSError, match="simulated"):
        render_report(workdir / "stats", workdir / "results", report, title="New title")
    assert report.read_bytes() == before  # the old report is untouched...
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.html"]  # ...no temp


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=60, check=True)


def test_chromium_renders_the_report(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri(), tmp=tmp_path)
    assert shot.is_file()
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = np.asarray(im.convert("RGB"))
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert colours > 100, f"screenshot looks blank ({colours} colours)"
    dom = _chromium("--dump-dom", report.as_uri(), tmp=tmp_path).stdout.decode("utf-8")
    for heading in EXPECTED_HEADINGS:
        assert f"<h2>{heading.replace('&', '&amp;')}</h2>" in dom


def test_check_report_script(report: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    shot = tmp_path / "check.png"
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_report.sh"), str(report), str(shot)],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
    assert b"OK" in run.stdout


def test_grade_auc_table_appears_only_when_grades_were_computed(
    tmp_path: Path, workdir: Path, html: str
) -> None:
    assert "AUC per grade threshold" not in html  # the shared fixture has no grades
    stats = _stats(tmp_path / "stats")
    _write(
        stats / "classification_grades.parquet",
        [
            {"method": m, "problem": p, "n": 40, "n_pos": k, "n_neg": 40 - k, "n_missing": 0,
             "auc": a, "auc_lo": a - 0.05, "auc_hi": min(1.0, a + 0.03), "n_boot_used": 1000,
             "note": None}
            for m in ("ai_3d", "ai_roi")
            for p, k, a in ((">= mild", 15, 0.93), (">= moderate", 6, 0.97), ("severe", 2, 0.99))
        ],
    )  # fmt: skip
    text = render_report(stats, workdir / "results", tmp_path / "r.html").read_text()
    assert "AUC per grade threshold" in text
    assert text.count(">= moderate") + text.count("&gt;= moderate") >= 2
