"""Synthetic cohorts: many phantoms across simulated sites, with manifest, truth and reads.

:func:`generate_cohort` writes, under one folder::

    manifest.csv   image, liver_mask, spleen_mask, cohort, site, case_id (paths relative)
    truth.csv      what each phantom was built with (schemas/synthetic_truth.yaml)
    reads.csv      simulated expert ROI reads: case_id, reader, roi_hu
    cohort.json    the parameters, so the folder documents how to regenerate it
    images/        DICOM series folders (images/<case_id>/IM*.dcm) or NIfTI files
    masks/         <case_id>_liver.nii.gz, <case_id>_spleen.nii.gz on each image's grid

Every case has its own seed spawned from the cohort seed, so the cohort is reproducible and any
case can be regenerated alone.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from screening.config import FrozenConfig, require
from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.errors import ConfigError
from screening.measure.classify import pdff_from_hu, steatosis_grade
from screening.reasons import ContrastPhase, SourceFormat
from screening.schemas import load_table_schema
from screening.synthetic.phantom import Phantom, PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.writers import (
    TRANSFER_SYNTAXES,
    DicomInfo,
    birth_date_for,
    write_dicom_series,
    write_nifti,
)

__all__ = [
    "DEFAULT_READERS",
    "DEFAULT_SITES",
    "CohortSummary",
    "ReaderSpec",
    "SiteSpec",
    "generate_cohort",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SiteSpec(FrozenConfig):
    """A simulated site: its scanner, protocol, storage conventions and case mix."""

    name: str
    manufacturer: str
    model: str
    convolution_kernel: str
    kvp: float = 120.0
    exposure_mas: tuple[float, float] = (50.0, 150.0)  # uniform range
    spacing_xy_mm: tuple[float, float] = (0.65, 0.85)  # full-size in-plane range
    spacing_z_mm: tuple[float, ...] = (1.25, 2.5)  # full-size slice increments to pick from
    source_format: SourceFormat = SourceFormat.DICOM
    rescale_intercept: float = -1024.0
    padding_hu: float | None = None
    transfer_syntax: str = "explicit"
    positions: tuple[str, ...] = ("HFS",)
    nifti_axcodes: tuple[str, str, str] = ("R", "A", "S")
    chest_fov_fraction: float = 0.3  # share of chest-only scans (liver cut inferiorly)
    contrast_fraction: float = 0.0
    contrast_header_fraction: float = 0.7  # of contrast scans, share that record it in DICOM

    def __post_init__(self) -> None:
        require(
            self.transfer_syntax in TRANSFER_SYNTAXES,
            f"site {self.name}: transfer_syntax must be one of {TRANSFER_SYNTAXES}",
        )
        for frac in (
            self.chest_fov_fraction,
            self.contrast_fraction,
            self.contrast_header_fraction,
        ):
            require(0.0 <= frac <= 1.0, f"site {self.name}: fractions must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class ReaderSpec(FrozenConfig):
    """A simulated expert: systematic bias, random error, and the share of cases read."""

    name: str
    bias_hu: float = 0.0
    sd_hu: float = 3.0
    fraction: float = 1.0


DEFAULT_SITES: tuple[SiteSpec, ...] = (
    # GE: signed storage, intercept -1024, padding stored as -2000 (-3024 HU), low-dose chest.
    SiteSpec(
        name="site-a",
        manufacturer="GE MEDICAL SYSTEMS",
        model="LightSpeed VCT",
        convolution_kernel="STANDARD",
        kvp=120.0,
        exposure_mas=(30.0, 80.0),
        spacing_z_mm=(1.25, 2.5),
        padding_hu=-3024.0,
        chest_fov_fraction=0.4,
    ),
    # Siemens: unsigned storage, intercept -1024, no padding; head- and feet-first.
    SiteSpec(
        name="site-b",
        manufacturer="SIEMENS",
        model="SOMATOM Definition AS",
        convolution_kernel="B30f",
        kvp=120.0,
        exposure_mas=(80.0, 180.0),
        spacing_z_mm=(1.0, 3.0, 5.0),
        positions=("HFS", "FFS"),
        contrast_fraction=0.15,
    ),
    # Toshiba: intercept 0, signed, padding -2000 HU, 100 kV, RLE compressed, some prone.
    SiteSpec(
        name="site-c",
        manufacturer="TOSHIBA",
        model="Aquilion ONE",
        convolution_kernel="FC08",
        kvp=100.0,
        exposure_mas=(60.0, 140.0),
        spacing_z_mm=(1.0, 2.0),
        rescale_intercept=0.0,
        padding_hu=-2000.0,
        transfer_syntax="rle",
        positions=("HFS", "FFS", "HFP"),
    ),
    # A research archive exported to NIfTI.
    SiteSpec(
        name="site-d",
        manufacturer="Philips",
        model="iCT 256",
        convolution_kernel="B",
        kvp=120.0,
        exposure_mas=(60.0, 160.0),
        spacing_xy_mm=(0.6, 1.0),
        spacing_z_mm=(0.625, 1.25, 2.5),
        source_format=SourceFormat.NIFTI,
        chest_fov_fraction=0.2,
    ),
)

DEFAULT_READERS: tuple[ReaderSpec, ...] = (
    ReaderSpec(name="R1", bias_hu=0.0, sd_hu=2.5, fraction=1.0),
    ReaderSpec(name="R2", bias_hu=1.5, sd_hu=3.0, fraction=0.5),
    ReaderSpec(name="R3", bias_hu=-2.0, sd_hu=3.5, fraction=0.5),
    ReaderSpec(name="R4", bias_hu=0.5, sd_hu=4.0, fraction=0.5),
)

# Coverage in z by size and field of view, and where chest scans stop inferiorly.
_COVERAGE_MM = {"full": 375.0, "small": 240.0}
_SMALL_MATRIX, _SMALL_XY_FACTOR, _SMALL_DZ_MM = 128, 4.0, (4.0, 5.0, 6.0)


@dataclass(frozen=True)
class CohortSummary:
    out_dir: Path
    n_cases: int
    n_steatosis: int
    n_contrast: int
    n_truncated: int
    by_site: dict[str, int]
    n_corrupt: int = 0

    def describe(self) -> str:
        sites = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_site.items()))
        return (
            f"wrote {self.n_cases} synthetic CT scans to {self.out_dir} ({sites}); "
            f"{self.n_steatosis} steatotic (<= {STEATOSIS_THRESHOLD_HU:g} HU), "
            f"{self.n_contrast} contrast-enhanced, "
            f"{self.n_truncated} with the liver cut off by the field of view"
            f"{f', {self.n_corrupt} corrupt DICOM series' if self.n_corrupt else ''}.\n"
            f"  manifest: {self.out_dir / 'manifest.csv'}\n"
            f"  truth:    {self.out_dir / 'truth.csv'}\n"
            f"  reads:    {self.out_dir / 'reads.csv'}"
        )


def _draw_case(
    rng: np.random.Generator, site: SiteSpec, size: str, prevalence: float
) -> tuple[PhantomSpec, ScanGeometry, dict[str, Any]]:
    steatotic = rng.random() < prevalence
    liver_hu = (
        rng.uniform(-20.0, STEATOSIS_THRESHOLD_HU)
        if steatotic
        else float(np.clip(rng.normal(58.0, 6.0), 41.0, 75.0))
    )
    phase = ContrastPhase.NONE
    if rng.random() < site.contrast_fraction:
        phase = ContrastPhase(rng.choice([ContrastPhase.ARTERIAL, ContrastPhase.PORTAL_VENOUS]))
    sex = "M" if rng.random() < 0.55 else "F"
    spec = PhantomSpec(
        liver_hu=float(liver_hu),
        spleen_hu=float(rng.normal(47.0, 4.0)),
        contrast_phase=phase,
        kvp=site.kvp,
        exposure_mas=float(rng.uniform(*site.exposure_mas)),
        padding_hu=site.padding_hu,
        patient_sex=sex,
    )
    dxy = round(float(rng.uniform(*site.spacing_xy_mm)), 4)
    dz = float(rng.choice(site.spacing_z_mm))
    if size == "small":
        matrix, dxy, dz = (
            _SMALL_MATRIX,
            round(dxy * _SMALL_XY_FACTOR, 4),
            float(rng.choice(_SMALL_DZ_MM)),
        )
    else:
        matrix = 512
    fov = "chest" if rng.random() < site.chest_fov_fraction else "chest_abdomen"
    z_bottom = rng.uniform(-130.0, -70.0) if fov == "chest" else rng.uniform(-225.0, -200.0)
    nz = round(_COVERAGE_MM[size] / dz)
    geometry = ScanGeometry(
        shape=(nz, matrix, matrix),
        spacing_mm=(dz, dxy, dxy),
        fov=fov,
        z_bottom_mm=float(z_bottom),
        center_offset_mm=(float(rng.normal(0, 8)), float(rng.normal(10, 8))),
        patient_position=str(rng.choice(site.positions)),
        table_position_mm=(0.0, float(rng.uniform(-200, -100)), float(rng.uniform(-1200, -300))),
    )
    extra = {
        "age": int(rng.integers(45, 81)),
        "contrast_header": phase != ContrastPhase.NONE
        and rng.random() < site.contrast_header_fraction,
        "study_date": "{:04d}{:02d}{:02d}".format(
            *(int(rng.integers(lo, hi)) for lo, hi in ((2012, 2024), (1, 13), (1, 28)))
        ),
    }
    return spec, geometry, extra


def _truth_row(
    case_id: str, subject_id: str, site: SiteSpec, ph: Phantom, extra: dict[str, Any], seed: int
) -> dict[str, Any]:
    spec, geom = ph.spec, ph.geometry
    pdff = pdff_from_hu(spec.liver_hu)
    return {
        "case_id": case_id,
        "subject_id": subject_id,
        "site": site.name,
        "source_format": site.source_format.value,
        "liver_hu_true": round(spec.liver_hu, 3),
        "liver_hu_scan": round(ph.liver_hu_scan, 3),
        "spleen_hu_true": round(spec.spleen_hu, 3),
        "spleen_hu_scan": round(ph.spleen_hu_scan, 3),
        "liver_volume_ml": round(ph.liver_volume_ml, 2),
        "liver_volume_full_ml": round(ph.liver_volume_full_ml, 2),
        "spleen_volume_ml": round(ph.spleen_volume_ml, 2),
        "pdff_true_pct": round(pdff, 3),
        "steatosis": spec.liver_hu <= STEATOSIS_THRESHOLD_HU,
        "steatosis_grade": steatosis_grade(pdff).value,
        "contrast_phase": spec.contrast_phase.value,
        "contrast_header": bool(extra["contrast_header"]),
        "liver_truncated": ph.liver_truncated,
        "fov": geom.fov,
        "patient_position": geom.patient_position,
        "patient_sex": spec.patient_sex,
        "patient_age_years": float(extra["age"]),
        "kvp": spec.kvp,
        "exposure_mas": round(spec.exposure_mas, 1),
        "noise_sd_hu": round(ph.noise_sd_hu, 3),
        "spacing_z_mm": geom.spacing_mm[0],
        "spacing_y_mm": geom.spacing_mm[1],
        "spacing_x_mm": geom.spacing_mm[2],
        "n_slices": geom.shape[0],
        "rows": geom.shape[1],
        "columns": geom.shape[2],
        "rescale_intercept_hu": site.rescale_intercept,
        "padding_hu": spec.padding_hu,
        "seed": seed,
    }


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


def generate_cohort(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    prevalence: float = 0.25,
    sites: Sequence[SiteSpec] = DEFAULT_SITES,
    *,
    size: Literal["small", "full"] = "small",
    cohort: str = "synthetic",
    readers: Sequence[ReaderSpec] = DEFAULT_READERS,
    repeat_fraction: float = 0.0,
    n_corrupt: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> CohortSummary:
    """Write ``n`` synthetic scans spread over ``sites`` (round robin) into ``out_dir``.

    Parameters
    ----------
    prevalence
        Probability that a subject's true liver HU is <= 40 (steatosis).
    repeat_fraction
        Share of cases that are a second scan of the previous subject minutes later (same
        anatomy and liver, new noise, repositioned): input for repeatability statistics.
    n_corrupt
        DICOM series (the last ones) with one slice file cut short, as a copy interrupted
        mid-file leaves it: ingest must reject them with a reason (``corrupted_file`` in
        truth.csv).
    overwrite
        Replace an existing non-empty ``out_dir``. The cohort is built in a temporary folder
        beside it and moved into place at the end, so an interrupted run leaves no half cohort.
    """
    require(n >= 1, f"n must be >= 1, got {n}")
    require(0.0 <= prevalence <= 1.0, f"prevalence must be in [0, 1], got {prevalence}")
    require(
        0.0 <= repeat_fraction < 1.0, f"repeat_fraction must be in [0, 1), got {repeat_fraction}"
    )
    require(len(sites) >= 1, "at least one site is needed")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) "
            "to replace it, or choose another folder"
        )
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seeds = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint32)
    manifest, truth, reads = [], [], []
    read_rng = np.random.default_rng([seed, 7])
    previous: tuple[int, PhantomSpec, ScanGeometry, dict[str, Any], str, SiteSpec] | None = None
    cases = range(n)
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="synth", unit="scan")
    for i in cases:
        case_seed = int(seeds[i])
        case_rng = np.random.default_rng(case_seed)
        case_id = f"case-{i + 1:04d}"
        if previous is not None and case_rng.random() < repeat_fraction:
            anat_seed, spec, geometry, extra, subject_id, site = previous
            geometry = ScanGeometry.from_dict(
                {
                    **geometry.to_dict(),
                    "center_offset_mm": [
                        v + case_rng.normal(0, 3) for v in geometry.center_offset_mm
                    ],
                    "z_bottom_mm": (geometry.z_bottom_mm or 0.0) + case_rng.normal(0, 4),
                }
            )
            ph = make_phantom(spec, geometry, anat_seed, noise_seed=case_seed)
            previous = None  # at most one repeat per subject
        else:
            site = sites[i % len(sites)]
            spec, geometry, extra = _draw_case(case_rng, site, size, prevalence)
            subject_id, anat_seed = f"subject-{i + 1:04d}", case_seed
            ph = make_phantom(spec, geometry, anat_seed)
            previous = (anat_seed, spec, geometry, extra, subject_id, site)
        image = _write_image(tmp, case_id, subject_id, site, ph, extra, case_seed)
        masks = {}
        for organ, mask in (("liver", ph.liver_mask), ("spleen", ph.spleen_mask)):
            rel = f"masks/{case_id}_{organ}.nii.gz"
            write_nifti(mask.astype(np.uint8), ph, tmp / rel, site.nifti_axcodes)
            masks[organ] = rel
        manifest.append(
            {
                "image": image,
                "liver_mask": masks["liver"],
                "spleen_mask": masks["spleen"],
                "cohort": cohort,
                "site": site.name,
                "case_id": case_id,
            }
        )
        truth.append(_truth_row(case_id, subject_id, site, ph, extra, anat_seed))
        for reader in readers:
            if read_rng.random() < reader.fraction:
                # An ROI avoids vessels: parenchyma + local texture + the reader's bias and error.
                roi = (
                    ph.liver_hu_scan
                    + read_rng.normal(0, 1.5)
                    + reader.bias_hu
                    + read_rng.normal(0, reader.sd_hu)
                )
                reads.append({"case_id": case_id, "reader": reader.name, "roi_hu": round(roi, 1)})
    _corrupt_series(tmp, manifest, truth, n_corrupt)
    _write_csv(
        tmp / "manifest.csv",
        manifest,
        ["image", "liver_mask", "spleen_mask", "cohort", "site", "case_id"],
    )
    _write_csv(tmp / "truth.csv", truth, load_table_schema("synthetic_truth").names)
    _write_csv(tmp / "reads.csv", reads, ["case_id", "reader", "roi_hu"])
    params = {
        "n": n,
        "seed": seed,
        "prevalence": prevalence,
        "size": size,
        "cohort": cohort,
        "repeat_fraction": repeat_fraction,
        "n_corrupt": n_corrupt,
        "sites": [s.to_dict() for s in sites],
        "readers": [r.to_dict() for r in readers],
    }
    (tmp / "cohort.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    by_site: dict[str, int] = {}
    for row in truth:
        by_site[row["site"]] = by_site.get(row["site"], 0) + 1
    return CohortSummary(
        out_dir=out,
        n_cases=n,
        n_steatosis=sum(r["steatosis"] for r in truth),
        n_contrast=sum(r["contrast_phase"] != "none" for r in truth),
        n_truncated=sum(r["liver_truncated"] for r in truth),
        by_site=by_site,
        n_corrupt=sum(r["corrupted_file"] for r in truth),
    )


def _corrupt_series(
    root: Path, manifest: list[dict[str, Any]], truth: list[dict[str, Any]], n_corrupt: int
) -> None:
    """Cut the middle slice file of the last ``n_corrupt`` DICOM series to half its size."""
    for row in truth:
        row["corrupted_file"] = False
    dicom = [i for i, m in enumerate(manifest) if (root / m["image"]).is_dir()]
    require(
        n_corrupt <= len(dicom),
        f"n_corrupt={n_corrupt} but the cohort has only {len(dicom)} DICOM series",
    )
    for i in dicom[len(dicom) - n_corrupt :] if n_corrupt else []:
        files = sorted(p for p in (root / manifest[i]["image"]).iterdir() if p.is_file())
        victim = files[len(files) // 2]
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
        truth[i]["corrupted_file"] = True


def _write_image(
    root: Path,
    case_id: str,
    subject_id: str,
    site: SiteSpec,
    ph: Phantom,
    extra: dict[str, Any],
    case_seed: int,
) -> str:
    if site.source_format is SourceFormat.NIFTI:
        rel = f"images/{case_id}.nii.gz"
        write_nifti(ph.hu, ph, root / rel, site.nifti_axcodes)
        return rel
    number = int(subject_id.split("-")[1])
    info = DicomInfo(
        manufacturer=site.manufacturer,
        model=site.model,
        convolution_kernel=site.convolution_kernel,
        institution=f"Synthetic General Hospital {site.name}",
        patient_name=f"SYNTH^PATIENT{number:04d}",
        patient_id=f"SYNPID{number:06d}",
        patient_birth_date=birth_date_for(extra["age"], extra["study_date"]),
        patient_age_years=extra["age"],
        accession_number=f"ACC{case_seed % 10**8:08d}",
        study_date=extra["study_date"],
        rescale_intercept=site.rescale_intercept,
        contrast_agent="IOHEXOL 350" if extra["contrast_header"] else None,
        transfer_syntax=site.transfer_syntax,
        uid_seed=f"{case_id}-{case_seed}",
        study_uid_seed=subject_id,
    )
    rel = f"images/{case_id}"
    write_dicom_series(ph, root / rel, info)
    return rel
