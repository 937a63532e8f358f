"""One synthetic CT scan with known truth: :func:`make_phantom`.

>>> ph = make_phantom(PhantomSpec(liver_hu=30.0), ScanGeometry.preset("small"), seed=1)
>>> ph.hu.shape, ph.hu.dtype.name
((48, 128, 128), 'int16')
>>> bool(ph.liver_centroid_mm[0] < ph.spleen_centroid_mm[0])  # liver on the patient's right
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.constants import LIVER_LABEL, SPLEEN_LABEL
from screening.geometry import PATIENT_POSITIONS, canonical_affine
from screening.reasons import ContrastPhase
from screening.scan_circle import circle_radius
from screening.synthetic.anatomy import Anatomy, sample_anatomy
from screening.synthetic.render import Grid, render_labels, render_volume
from screening.synthetic.tissues import LIVER_TISSUES, Tissue, hu_lookup, noise_sd_hu

__all__ = ["FOV_KINDS", "Phantom", "PhantomSpec", "ScanGeometry", "make_phantom"]

FOV_KINDS = ("chest_abdomen", "chest")
#: Anatomical z (mm) of the lowest slice by field of view: chest_abdomen holds the whole liver
#: (its inferior tip is near -165 mm); chest stops above it, cutting the liver inferiorly.
_Z_BOTTOM_MM = {"chest_abdomen": -215.0, "chest": -90.0}
_PRESETS: dict[str, dict[str, object]] = {
    # Benchmark size: a routine thin-slice chest/abdomen CT.
    "full": {"shape": (300, 512, 512), "spacing_mm": (1.25, 0.7, 0.7)},
    # Tests and demo: the same anatomy at coarse spacing.
    "small": {"shape": (48, 128, 128), "spacing_mm": (5.0, 2.8, 2.8)},
}


@dataclass(frozen=True, kw_only=True)
class ScanGeometry(FrozenConfig):
    """Where and how the scanner samples the patient.

    Parameters
    ----------
    shape : (nz, ny, nx)
    spacing_mm : (z, y, x) mm
    fov
        ``chest_abdomen`` (whole liver) or ``chest`` (liver cut off inferiorly).
    z_bottom_mm
        Anatomical height of the lowest slice; None picks it from ``fov``.
    center_offset_mm
        (x, y) of the image centre relative to the body centre (patients are not centred).
    patient_position
        DICOM PatientPosition: HFS, FFS, HFP or FFP. Affects only how files are written.
    table_position_mm
        Offset (x, y, z) from the anatomical frame to scanner patient coordinates.
    scan_circle
        Reconstruct only inside the circle inscribed in the matrix, as scanners do.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    fov: str = "chest_abdomen"
    z_bottom_mm: float | None = None
    center_offset_mm: tuple[float, float] = (0.0, 10.0)
    patient_position: str = "HFS"
    table_position_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scan_circle: bool = True

    def __post_init__(self) -> None:
        require(
            len(self.shape) == 3 and min(self.shape) >= 1,
            f"shape {self.shape} must be 3 positive ints",
        )
        require(min(self.spacing_mm) > 0, f"spacing_mm {self.spacing_mm} must be positive")
        require(self.fov in FOV_KINDS, f"fov {self.fov!r} must be one of {FOV_KINDS}")
        require(
            self.patient_position in PATIENT_POSITIONS,
            f"patient_position {self.patient_position!r} must be one of {PATIENT_POSITIONS}",
        )

    @classmethod
    def preset(cls, size: Literal["small", "full"], **overrides: object) -> ScanGeometry:
        """``small`` (128×128×48 at 2.8×2.8×5 mm) or ``full`` (512×512×300 at 0.7×0.7×1.25 mm)."""
        require(size in _PRESETS, f"size {size!r} must be one of {sorted(_PRESETS)}")
        return cls(**{**_PRESETS[size], **overrides})  # type: ignore[arg-type]

    def grid(self) -> Grid:
        """Voxel centres in the anatomical frame."""
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing_mm
        cx, cy = self.center_offset_mm
        z0 = _Z_BOTTOM_MM[self.fov] if self.z_bottom_mm is None else self.z_bottom_mm
        return Grid(
            x=(cx + (np.arange(nx) - (nx - 1) / 2) * dx).astype(np.float32),
            y=(cy + (np.arange(ny) - (ny - 1) / 2) * dy).astype(np.float32),
            z=(z0 + np.arange(nz) * dz).astype(np.float32),
        )

    def origin_mm(self) -> tuple[float, float, float]:
        """LPS patient coordinates (x, y, z) of canonical voxel (0, 0, 0)."""
        g = self.grid()
        tx, ty, tz = self.table_position_mm
        return (float(g.x[0]) + tx, float(g.y[0]) + ty, float(g.z[0]) + tz)


@dataclass(frozen=True, kw_only=True)
class PhantomSpec(FrozenConfig):
    """What the patient and the acquisition are like.

    ``liver_hu`` and ``spleen_hu`` are unenhanced parenchymal values (normal liver about
    55–65 HU, steatotic down to about −20); contrast adds enhancement on top.
    """

    liver_hu: float = 58.0
    spleen_hu: float = 47.0
    contrast_phase: ContrastPhase = ContrastPhase.NONE
    kvp: float = 120.0
    exposure_mas: float = 100.0
    psf_sigma_mm: float = 0.6
    padding_hu: float | None = None
    patient_sex: str = "M"

    def __post_init__(self) -> None:
        require(-150.0 <= self.liver_hu <= 150.0, f"liver_hu {self.liver_hu} outside [-150, 150]")
        require(
            -150.0 <= self.spleen_hu <= 150.0, f"spleen_hu {self.spleen_hu} outside [-150, 150]"
        )
        require(70.0 <= self.kvp <= 150.0, f"kvp {self.kvp} outside [70, 150]")
        require(self.exposure_mas > 0, f"exposure_mas {self.exposure_mas} must be positive")
        require(self.psf_sigma_mm >= 0, "psf_sigma_mm must be >= 0")
        require(self.patient_sex in ("M", "F"), f"patient_sex {self.patient_sex!r} must be M or F")
        require(
            self.padding_hu is None or self.padding_hu <= -1024,
            f"padding_hu {self.padding_hu} must be <= -1024 (e.g. -2000 or -3024) or None",
        )


@dataclass(frozen=True, eq=False)
class Phantom:
    """A rendered scan in canonical LPS ``(z, y, x)`` order, with its truth."""

    hu: NDArray[np.int16]
    tissue: NDArray[np.uint8]
    spec: PhantomSpec
    geometry: ScanGeometry
    anatomy: Anatomy
    hu_table: NDArray[np.float32]
    noise_sd_hu: float

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.geometry.spacing_mm

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        return self.geometry.origin_mm()

    @property
    def affine_lps(self) -> NDArray[np.float64]:
        """Canonical index (k, j, i) → LPS mm."""
        return canonical_affine(self.spacing_mm, self.origin_mm)

    @functools.cached_property
    def liver_mask(self) -> NDArray[np.bool_]:
        return np.isin(self.tissue, np.array(LIVER_TISSUES, dtype=np.uint8))

    @functools.cached_property
    def spleen_mask(self) -> NDArray[np.bool_]:
        return self.tissue == Tissue.SPLEEN

    @property
    def labels(self) -> NDArray[np.uint8]:
        """Truth segmentation: 0 background, 1 liver, 2 spleen (scan-store ``seg`` labels)."""
        out = np.zeros(self.tissue.shape, dtype=np.uint8)
        out[self.liver_mask] = LIVER_LABEL
        out[self.spleen_mask] = SPLEEN_LABEL
        return out

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def liver_hu_scan(self) -> float:
        """Liver parenchymal HU as imaged (contrast included), before texture and noise."""
        return float(self.hu_table[Tissue.LIVER])

    @property
    def spleen_hu_scan(self) -> float:
        return float(self.hu_table[Tissue.SPLEEN])

    @property
    def liver_volume_ml(self) -> float:
        return float(self.liver_mask.sum()) * self.voxel_ml

    @property
    def spleen_volume_ml(self) -> float:
        return float(self.spleen_mask.sum()) * self.voxel_ml

    @functools.cached_property
    def liver_volume_full_ml(self) -> float:
        """Whole-liver volume on a 1.5 mm grid, regardless of the field of view."""
        box = self.anatomy.box_of(Tissue.LIVER)
        lo, hi = box.lo, box.hi
        step = 1.5
        grid = Grid(*(np.arange(lo[i], hi[i] + step, step, dtype=np.float32) for i in range(3)))
        tissue = render_labels(grid, self.anatomy)
        n = np.isin(tissue, np.array(LIVER_TISSUES, dtype=np.uint8)).sum()
        return float(n) * step**3 / 1000.0

    @functools.cached_property
    def liver_truncated(self) -> bool:
        """The liver reaches the first or last slice, the matrix edge or the scan circle."""
        liver = self.liver_mask
        if liver[0].any() or liver[-1].any():
            return True
        edge = np.zeros(liver.shape[1:], dtype=bool)
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
        imaged = self.tissue != Tissue.OUTSIDE
        if self.geometry.scan_circle:
            edge |= _circle_rim(liver.shape[1:])
        return bool((liver & edge[None] & imaged).any())

    def centroid_mm(self, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        """LPS centroid (x, y, z) of ``mask`` in patient coordinates."""
        k, j, i = (idx.mean() for idx in np.nonzero(mask))
        return (self.affine_lps @ np.array([k, j, i, 1.0]))[:3]

    @property
    def liver_centroid_mm(self) -> NDArray[np.float64]:
        return self.centroid_mm(self.liver_mask)

    @property
    def spleen_centroid_mm(self) -> NDArray[np.float64]:
        return self.centroid_mm(self.spleen_mask)


def _circle_rim(shape: tuple[int, int]) -> NDArray[np.bool_]:
    r = circle_radius(shape)
    rim: NDArray[np.bool_] = (r <= 1.0) & (r > 1.0 - 2.5 / min(shape))
    return rim


def make_phantom(
    spec: PhantomSpec, geometry: ScanGeometry, seed: int, *, noise_seed: int | None = None
) -> Phantom:
    """Render one phantom. The same (spec, geometry, seed) always gives the same arrays.

    ``seed`` fixes the patient (anatomy and tissue values); ``noise_seed`` (default: derived
    from ``seed``) fixes the image noise, so a repeat scan of one patient differs only in noise
    and in whatever ``geometry`` changes.
    """
    rng = np.random.default_rng([seed, 0])
    noise_rng = np.random.default_rng([seed, 1] if noise_seed is None else [seed, 2, noise_seed])
    anatomy = sample_anatomy(rng, sex=spec.patient_sex)
    jitter = {
        t: float(rng.normal(0, 4))
        for t in (Tissue.MUSCLE, Tissue.FAT, Tissue.KIDNEY, Tissue.BOWEL, Tissue.AORTA, Tissue.VEIN)
    }
    jitter[Tissue.LIVER_VESSEL] = jitter[Tissue.VEIN]
    table = hu_lookup(
        liver_hu=spec.liver_hu,
        spleen_hu=spec.spleen_hu,
        phase=spec.contrast_phase,
        jitter_hu=jitter,
    )
    sd = noise_sd_hu(kvp=spec.kvp, exposure_mas=spec.exposure_mas, spacing_mm=geometry.spacing_mm)
    _, dy, dx = geometry.spacing_mm
    _, ny, nx = geometry.shape
    psf = (max(spec.psf_sigma_mm / dy, 0.5), max(spec.psf_sigma_mm / dx, 0.5))
    cx, cy = geometry.center_offset_mm
    hu, tissue = render_volume(
        geometry.grid(),
        anatomy,
        hu_table=table,
        noise_sd_hu=sd,
        psf_sigma_vox=psf,
        scan_radius_mm=0.5 * min(ny * dy, nx * dx) if geometry.scan_circle else None,
        scan_center_mm=(cx, cy),
        padding_hu=spec.padding_hu,
        rng=noise_rng,
    )
    return Phantom(
        hu=hu,
        tissue=tissue,
        spec=spec,
        geometry=geometry,
        anatomy=anatomy,
        hu_table=table,
        noise_sd_hu=sd,
    )
