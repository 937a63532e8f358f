"""Implicit solids for the phantom, evaluated on broadcast coordinate axes in mm.

Every shape has an axis-aligned bounding box and an ``inside(x, y, z)`` test where ``x`` has
shape ``(1, 1, nx)``, ``y`` ``(1, ny, 1)`` and ``z`` ``(nz, 1, 1)`` (canonical z, y, x order),
so a shape costs work only over its own box. Coordinates are the phantom's anatomical frame
(x toward patient Left, y Posterior, z Superior; LPS directions).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Box", "Capsule", "Ellipsoid", "Vec3", "Wobble", "vec3"]

Vec3 = tuple[float, float, float]


def vec3(values: Iterable[Any]) -> Vec3:
    """Three floats from any length-3 iterable (numpy rows, generators)."""
    x, y, z = (float(v) for v in values)
    return (x, y, z)


Bool3 = NDArray[np.bool_]
F = NDArray[np.float32]


@dataclass(frozen=True)
class Box:
    lo: Vec3  # (x, y, z) mm
    hi: Vec3


@dataclass(frozen=True)
class Wobble:
    """Smooth shape perturbation: sum of separable cosine products (relative amplitude).

    Each term is ``amp · cos(kx·x + px) · cos(ky·y + py) · cos(kz·z + pz)``; separable terms
    cost two multiplications per voxel, unlike a full 3D noise field.
    """

    amp: tuple[float, ...]
    k: tuple[Vec3, ...]  # rad/mm
    phase: tuple[Vec3, ...]

    @staticmethod
    def random(rng: np.random.Generator, n_terms: int, amp: float, wavelength_mm: float) -> Wobble:
        k = rng.uniform(0.5, 1.5, size=(n_terms, 3)) * (2 * np.pi / wavelength_mm)
        return Wobble(
            amp=tuple(float(a) for a in rng.uniform(0.4, 1.0, n_terms) * amp),
            k=tuple(vec3(row) for row in k),
            phase=tuple(vec3(row) for row in rng.uniform(0, 2 * np.pi, size=(n_terms, 3))),
        )

    def __call__(self, x: F, y: F, z: F) -> F:
        total: F = np.zeros((z.shape[0], y.shape[1], x.shape[2]), dtype=np.float32)
        for a, (kx, ky, kz), (px, py, pz) in zip(self.amp, self.k, self.phase, strict=True):
            cx = np.cos(kx * x + px, dtype=np.float32)
            cy = np.cos(ky * y + py, dtype=np.float32)
            cz = np.cos(kz * z + pz, dtype=np.float32) * np.float32(a)
            total += (cz * cy) * cx
        return total


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes ``semi`` (mm), optionally turned about z and wobbled."""

    center: Vec3
    semi: Vec3
    rot_z_deg: float = 0.0
    wobble: Wobble | None = None

    def box(self) -> Box:
        r = max(self.semi[0], self.semi[1]) if self.rot_z_deg else None
        sx = r if r is not None else self.semi[0]
        sy = r if r is not None else self.semi[1]
        grow = 1.0 + (sum(self.wobble.amp) if self.wobble else 0.0)
        cx, cy, cz = self.center
        half = (sx * grow, sy * grow, self.semi[2] * grow)
        return Box(
            (cx - half[0], cy - half[1], cz - half[2]), (cx + half[0], cy + half[1], cz + half[2])
        )

    def level(self, x: F, y: F, z: F) -> F:
        """Normalised radius squared: < 1 inside (before the wobble)."""
        cx, cy, cz = self.center
        ax, ay, az = self.semi
        dx, dy = x - np.float32(cx), y - np.float32(cy)
        if self.rot_z_deg:
            t = np.deg2rad(self.rot_z_deg)
            c, s = np.float32(np.cos(t)), np.float32(np.sin(t))
            u = (c * dx + s * dy) / np.float32(ax)
            v = (c * dy - s * dx) / np.float32(ay)
            q2d = u * u + v * v
        else:
            q2d = (dx / np.float32(ax)) ** 2 + (dy / np.float32(ay)) ** 2
        qz = ((z - np.float32(cz)) / np.float32(az)) ** 2
        return q2d + qz

    def inside(self, x: F, y: F, z: F) -> Bool3:
        q = self.level(x, y, z)
        if self.wobble is not None:
            q = q * (1.0 + self.wobble(x, y, z))
        return q < 1.0


@dataclass(frozen=True)
class Capsule:
    """Tube from ``p0`` to ``p1`` with radius tapering from ``r0`` to ``r1`` (rounded ends)."""

    p0: Vec3
    p1: Vec3
    r0: float
    r1: float | None = None

    def box(self) -> Box:
        r = max(self.r0, self.r1 or self.r0)
        lo = vec3(min(a, b) - r for a, b in zip(self.p0, self.p1, strict=True))
        hi = vec3(max(a, b) + r for a, b in zip(self.p0, self.p1, strict=True))
        return Box(lo, hi)

    def inside(self, x: F, y: F, z: F) -> Bool3:
        p0 = np.asarray(self.p0, dtype=np.float32)
        d = np.asarray(self.p1, dtype=np.float32) - p0
        length2 = float(d @ d) or 1e-6
        rx, ry, rz = x - p0[0], y - p0[1], z - p0[2]
        t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / np.float32(length2), 0.0, 1.0)
        ex, ey, ez = rx - t * d[0], ry - t * d[1], rz - t * d[2]
        dist2 = ex * ex + ey * ey + ez * ez
        r1 = self.r0 if self.r1 is None else self.r1
        radius = np.float32(self.r0) + t * np.float32(r1 - self.r0)
        inside: Bool3 = dist2 < radius * radius
        return inside
