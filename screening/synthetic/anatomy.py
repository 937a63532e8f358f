"""A seeded random patient: body habitus, organ placement and shapes, as painting layers.

The frame is anatomical, in mm: x toward the patient's Left, y Posterior, z Superior (LPS
directions), origin on the midline at the body's AP centre, at the height of the right
hemidiaphragm dome. Layers are painted in order, later ones over earlier ones, so carving
(the IVC through the liver, kidneys and gallbladder against it) follows from the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from screening.synthetic.shapes import Box, Capsule, Ellipsoid, Vec3, Wobble, vec3
from screening.synthetic.tissues import Tissue

__all__ = ["Anatomy", "Layer", "sample_anatomy"]

F = NDArray[np.float32]
Shape = Ellipsoid | Capsule

#: Tissues that vessels and organs may replace when a layer only fills soft tissue.
#: Body cavity semi-axes (lateral, AP) in mm that organ positions below are laid out for.
_REF_CAVITY_MM = (122.0, 80.0)

_SOFT = frozenset({Tissue.FAT, Tissue.BOWEL, Tissue.MUSCLE, Tissue.DIAPHRAGM})


@dataclass(frozen=True)
class Layer:
    """One painting step: ``shape`` → ``tissue`` under constraints.

    below_diaphragm_mm
        Only below the diaphragm surface minus this margin (abdominal organs).
    above_diaphragm
        Only above the diaphragm surface (thoracic organs).
    in_cavity_mm
        Only inside the body cavity shrunk by this margin (None: no constraint).
    overwrite
        Only replace these tissues (None: replace anything).
    remap
        Instead of ``tissue``: replace each key tissue by its value (vessels inside/outside
        the liver get different labels).
    """

    shape: Shape
    tissue: Tissue
    below_diaphragm_mm: float | None = None
    above_diaphragm: bool = False
    in_cavity_mm: float | None = None
    overwrite: frozenset[Tissue] | None = None
    remap: dict[Tissue, Tissue] | None = field(default=None, hash=False)


@dataclass(frozen=True, kw_only=True)
class Anatomy:
    """Body habitus and every internal structure of one synthetic patient."""

    body_half_width_mm: float  # lateral semi-axis of the body outline at the diaphragm
    body_half_depth_mm: float  # antero-posterior semi-axis
    fat_mm: float  # subcutaneous fat thickness
    muscle_mm: float  # abdominal / thoracic wall muscle
    chest_wall_mm: float  # rib and intercostal band inside the muscle
    dome_right_z_mm: float  # top of the right hemidiaphragm
    dome_left_z_mm: float
    spine_y_mm: float  # centre of the vertebral bodies
    rib_phase_mm: float
    layers: tuple[Layer, ...]
    liver_texture: Wobble  # HU heterogeneity of the liver parenchyma (absolute HU amplitude)

    def box_of(self, tissue: Tissue) -> Box:
        """Bounding box (mm) of every layer painting ``tissue`` (before carving by later ones)."""
        boxes = [layer.shape.box() for layer in self.layers if layer.tissue == tissue]
        lo = vec3(min(b.lo[i] for b in boxes) for i in range(3))
        hi = vec3(max(b.hi[i] for b in boxes) for i in range(3))
        return Box(lo, hi)

    # --- body outline and cavity -------------------------------------------------------
    def semi_axes(self, z: F) -> tuple[F, F]:
        """Body semi-axes (a: lateral, b: AP) at heights ``z``: narrower toward the apex."""
        narrowing = 1.0 - 0.12 * np.clip((z - 120.0) / 150.0, 0.0, 1.0)
        widening = 1.0 + 0.05 * np.clip(-z / 200.0, 0.0, 1.0)
        scale = (narrowing * widening).astype(np.float32)
        return scale * np.float32(self.body_half_width_mm), scale * np.float32(
            self.body_half_depth_mm
        )

    def cavity_semi_axes(self, z: F, margin_mm: float = 0.0) -> tuple[F, F]:
        """Semi-axes of the body cavity (inside fat, muscle and chest wall)."""
        a, b = self.semi_axes(z)
        inset = np.float32(self.fat_mm + self.muscle_mm + self.chest_wall_mm + margin_mm)
        return np.maximum(a - inset, 1.0), np.maximum(b - inset * np.float32(0.8), 1.0)

    def diaphragm_z(self, x: F, y: F) -> F:
        """Height (mm) of the diaphragm surface over (x, y): two domes, deeper posteriorly."""
        right = (
            self.dome_right_z_mm
            - 80.0
            + 80.0 * np.exp(-(((x + 65.0) / 70.0) ** 2) - ((y + 5.0) / 75.0) ** 2)
        )
        left = (
            self.dome_left_z_mm
            - 75.0
            + 75.0 * np.exp(-(((x - 70.0) / 65.0) ** 2) - (y / 75.0) ** 2)
        )
        zd: F = (np.maximum(right, left) - 0.15 * np.maximum(y, 0.0)).astype(np.float32)
        return zd


def _vessel_tree(
    rng: np.random.Generator,
    root: Vec3,
    tips: list[Vec3],
    r_root: float,
    r_tip: float,
    n_side: int,
) -> list[Capsule]:
    """Main branches root→tip plus a few side branches from their midpoints."""
    caps: list[Capsule] = []
    for tip in tips:
        caps.append(Capsule(root, tip, r_root, r_tip))
        for _ in range(n_side):
            t = rng.uniform(0.35, 0.8)
            start = vec3(a + t * (b - a) for a, b in zip(root, tip, strict=True))
            end = vec3(np.asarray(start) + rng.normal(0, 25, 3))
            caps.append(Capsule(start, end, r_tip * 0.9, r_tip * 0.5))
    return caps


def sample_anatomy(rng: np.random.Generator, *, sex: str = "M") -> Anatomy:
    """Draw a plausible adult torso; ``sex`` ('M'/'F') sets the body size range."""
    # The skeletal frame (body cavity) is drawn first; organs scale with it, fat lies outside.
    cav_a = rng.uniform(115, 135) if sex == "M" else rng.uniform(105, 125)
    cav_b = cav_a * rng.uniform(0.62, 0.70)
    fat = rng.uniform(8, 32)
    muscle = rng.uniform(8, 13)
    chest_wall = 12.0
    wall = fat + muscle + chest_wall
    a, b = cav_a + wall, cav_b + wall * 0.8
    kx, ky = cav_a / _REF_CAVITY_MM[0], cav_b / _REF_CAVITY_MM[1]
    kz = 0.5 * (kx + ky)
    spine_y = cav_b - 32.0  # vertebral body centre, just inside the posterior wall
    s = rng.normal(0, 6, 3)  # jitter of the abdominal organ block

    def j(x: float, y: float, z: float, sd: float = 4.0) -> tuple[float, float, float]:
        d = rng.normal(0, sd, 3)
        return (float(kx * x + s[0] + d[0]), float(ky * y + s[1] + d[1]), float(z + s[2] + d[2]))

    liver_scale = rng.uniform(0.88, 1.12)
    spleen_scale = rng.uniform(0.75, 1.0)
    ls = liver_scale
    lsx, lsy, lsz = ls * kx, ls * ky, ls * kz
    liver_w = Wobble.random(rng, 3, 0.12, 160.0)
    layers: list[Layer] = []
    below = 5.0  # mm of diaphragm muscle between lung and abdominal organs

    # Thorax: mediastinum (fat), heart, great vessels. Lungs fill the rest of the cavity.
    layers.append(
        Layer(
            Ellipsoid((5.0, -5.0, 120.0), (42.0, cav_b + 5.0, 150.0)),
            Tissue.FAT,
            above_diaphragm=True,
            in_cavity_mm=0.0,
        )
    )
    heart_c = j(18, -38, 52, 3)  # pericardial fat is a shell around the same centre
    layers.append(
        Layer(
            Ellipsoid(heart_c, (68.0, 50.0, 58.0)),
            Tissue.FAT,
            above_diaphragm=True,
            in_cavity_mm=0.0,
        )
    )
    layers.append(
        Layer(
            Ellipsoid(heart_c, (62.0, 45.0, 52.0)),
            Tissue.HEART,
            above_diaphragm=True,
            in_cavity_mm=0.0,
        )
    )

    # Abdomen, painted before the liver so the liver wins overlaps: bowel loops and colon.
    for _ in range(int(rng.integers(14, 20))):
        p0 = (rng.uniform(-100, 100), rng.uniform(-65, 35), rng.uniform(-260, -110))
        p1 = vec3(np.asarray(p0) + rng.normal(0, 35, 3))
        r = float(rng.uniform(12, 20))
        p0f = (float(p0[0]), float(p0[1]), float(p0[2]))
        layers.append(
            Layer(
                Capsule(p0f, p1, r),
                Tissue.BOWEL,
                below_diaphragm_mm=below,
                in_cavity_mm=2.0,
            )
        )
        if rng.random() < 0.4:
            layers.append(
                Layer(
                    Capsule(p0f, p1, r * 0.55),
                    Tissue.GAS,
                    below_diaphragm_mm=below,
                    in_cavity_mm=2.0,
                )
            )
    flexure = Capsule(j(-85, -35, -185), j(-40, -55, -160), 18.0)
    layers.append(Layer(flexure, Tissue.BOWEL, below_diaphragm_mm=below, in_cavity_mm=2.0))
    layers.append(
        Layer(
            Capsule(flexure.p0, flexure.p1, 9.0),
            Tissue.GAS,
            below_diaphragm_mm=below,
            in_cavity_mm=2.0,
        )
    )

    # Liver: right lobe plus left lobe crossing the midline anteriorly, under the right dome.
    right_lobe = Ellipsoid(j(-62, 8, -78), (90 * lsx, 98 * lsy, 92 * lsz), 0.0, liver_w)
    left_lobe = Ellipsoid(j(12, -45, -42), (85 * lsx, 45 * lsy, 45 * lsz), -10.0, liver_w)
    for lobe in (right_lobe, left_lobe):
        layers.append(Layer(lobe, Tissue.LIVER, below_diaphragm_mm=below, in_cavity_mm=3.0))
    # Gallbladder at the inferior surface (fluid, excluded from the liver mask).
    layers.append(
        Layer(
            Ellipsoid(j(-38, -42, -118, 5), (14.0, 15.0, 32.0), 20.0),
            Tissue.FLUID,
            below_diaphragm_mm=below,
        )
    )
    # Hepatic veins converge on the IVC at the dome; portal vein enters at the hilum.
    ivc_top = (-22.0, spine_y - 30.0, -12.0)
    hepatic_tips = [j(-120, 10, -60, 6), j(-55, -55, -55, 6), j(15, -60, -35, 6)]
    portal_hilum = j(-35, -8, -98, 4)
    portal_tips = [j(-100, 15, -85, 6), j(0, -48, -62, 6)]
    vessel_map = {Tissue.LIVER: Tissue.LIVER_VESSEL}
    for cap in _vessel_tree(rng, ivc_top, hepatic_tips, 7.0, 4.0, 2):
        layers.append(Layer(cap, Tissue.LIVER_VESSEL, remap=vessel_map))
    portal_root = (10.0 + s[0], spine_y - 40.0, -135.0 + s[2])
    trunk_map = {**vessel_map, **{t: Tissue.VEIN for t in _SOFT}}
    layers.append(Layer(Capsule(portal_root, portal_hilum, 8.0), Tissue.VEIN, remap=trunk_map))
    for cap in _vessel_tree(rng, portal_hilum, portal_tips, 6.0, 3.5, 2):
        layers.append(Layer(cap, Tissue.LIVER_VESSEL, remap=vessel_map))

    # Stomach (wall, fluid, air anteriorly in a supine patient), spleen, kidneys.
    st_c, st_s = j(52, -30, -62), np.array([44.0, 36.0, 52.0])
    layers.append(
        Layer(
            Ellipsoid(st_c, vec3(st_s + 3)),
            Tissue.FAT,
            below_diaphragm_mm=below,
            in_cavity_mm=3.0,
        )
    )
    layers.append(
        Layer(
            Ellipsoid(st_c, vec3(st_s)),
            Tissue.STOMACH_WALL,
            below_diaphragm_mm=below,
            in_cavity_mm=3.0,
        )
    )
    layers.append(
        Layer(
            Ellipsoid(st_c, vec3(st_s - 5)),
            Tissue.FLUID,
            below_diaphragm_mm=below,
            in_cavity_mm=3.0,
        )
    )
    air_c = (st_c[0], st_c[1] - 30.0, st_c[2] + 10.0)
    layers.append(
        Layer(
            Ellipsoid(air_c, (30.0, 14.0, 30.0)),
            Tissue.GAS,
            below_diaphragm_mm=below,
            overwrite=frozenset({Tissue.FLUID}),
        )
    )
    sp_c = j(82, 28, -80)
    sp_semi = (32 * spleen_scale * kx, 58 * spleen_scale * ky, 55 * spleen_scale * kz)
    spleen_w = Wobble.random(rng, 2, 0.10, 120.0)
    layers.append(
        Layer(
            Ellipsoid(sp_c, vec3(v + 3 for v in sp_semi), 35.0),
            Tissue.FAT,
            below_diaphragm_mm=below,
            in_cavity_mm=2.0,
        )
    )
    layers.append(
        Layer(
            Ellipsoid(sp_c, sp_semi, 35.0, spleen_w),
            Tissue.SPLEEN,
            below_diaphragm_mm=below,
            in_cavity_mm=3.0,
        )
    )
    for side, z in ((-1, -158.0), (1, -148.0)):
        kc = j(side * 68, spine_y - 8, z)
        layers.append(
            Layer(
                Ellipsoid(kc, (33.0, 35.0, 60.0), side * 15.0), Tissue.FAT, below_diaphragm_mm=below
            )
        )
        layers.append(
            Layer(
                Ellipsoid(kc, (27.0, 29.0, 54.0), side * 15.0),
                Tissue.KIDNEY,
                below_diaphragm_mm=below,
            )
        )

    # Great vessels, spine and paraspinal muscles (full length), painted last.
    aorta_x, aorta_y = 18.0, spine_y - 34.0
    layers.append(
        Layer(Capsule((aorta_x, aorta_y, -400.0), (aorta_x, aorta_y, 125.0), 12.0), Tissue.AORTA)
    )
    layers.append(
        Layer(Capsule((aorta_x, aorta_y, 125.0), (2.0, -25.0, 135.0), 13.0), Tissue.AORTA)
    )
    layers.append(Layer(Capsule((2.0, -25.0, 135.0), (0.0, -30.0, 60.0), 15.0), Tissue.AORTA))
    layers.append(Layer(Capsule((-22.0, spine_y - 30.0, -400.0), ivc_top, 11.0), Tissue.VEIN))
    layers.append(Layer(Capsule(ivc_top, (-18.0, -25.0, 25.0), 12.0), Tissue.VEIN))
    for side in (-1, 1):
        layers.append(
            Layer(
                Ellipsoid((side * 34.0, spine_y + 32.0, 0.0), (24.0, 18.0, 1e4)),
                Tissue.MUSCLE,
                in_cavity_mm=None,
            )
        )
    layers.append(Layer(Ellipsoid((0.0, spine_y, 0.0), (19.0, 17.0, 1e4)), Tissue.BONE_CANCELLOUS))
    layers.append(Layer(Ellipsoid((0.0, spine_y + 27.0, 0.0), (8.0, 8.0, 1e4)), Tissue.CSF))
    layers.append(
        Layer(
            Capsule((0.0, spine_y + 38.0, -1e4), (0.0, spine_y + 38.0, 1e4), 5.0),
            Tissue.BONE_CORTICAL,
        )
    )

    return Anatomy(
        body_half_width_mm=float(a),
        body_half_depth_mm=float(b),
        fat_mm=float(fat),
        muscle_mm=float(muscle),
        chest_wall_mm=chest_wall,
        dome_right_z_mm=float(rng.normal(0, 5)),
        dome_left_z_mm=float(rng.normal(-15, 5)),
        spine_y_mm=float(spine_y),
        rib_phase_mm=float(rng.uniform(0, 28)),
        layers=tuple(layers),
        liver_texture=Wobble.random(rng, 3, 2.5, 60.0),
    )
