"""Receive-coil shading: an anterior and a posterior array of loop elements, root-sum-of-squares
combined and normalised to 1 at the heart (scanner coordinates: the coils do not move with the
anatomy's breath-hold shifts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.synth.anatomy import Anatomy

__all__ = ["CoilArray"]

# Loop radius that sets the fall-off; cardiac arrays use elements about 10-15 cm across.
LOOP_RADIUS_MM = 75.0
# Vendors' intensity normalisation (prescan normalise) flattens the raw RSS profile: keep this power.
NORMALISATION_POWER = 0.6


@dataclass(frozen=True)
class CoilArray:
    """Element centres (n, 3) in patient mm and the normalisation at the heart."""

    positions: np.ndarray
    scale: float

    @classmethod
    def for_anatomy(cls, anatomy: Anatomy) -> CoilArray:
        """Six anterior elements on the chest over the heart, six posterior ones in the table."""
        xc, yc = anatomy.torso.centre_xy
        p = anatomy.torso.p
        heart = anatomy.frame.origin + 0.4 * anatomy.heart.wall.apex_w * anatomy.frame.e_long
        xs = heart[0] + np.array([-80.0, 0.0, 80.0])
        zs = heart[2] + np.array([-55.0, 55.0])
        elements = []
        for x in xs:
            half = p.half_depth_mm * np.sqrt(max(1 - ((x - xc) / p.half_width_mm) ** 2, 0.05))
            for z in zs:
                elements.append((x, yc - half - 10.0, z))
                elements.append((x, yc + p.half_depth_mm + 15.0, z))
        positions = np.array(elements)
        return cls(positions, float(_rss(positions, heart[None])[0]))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Combined, normalised sensitivity at points (P, 3), float32."""
        return ((_rss(self.positions, points) / self.scale) ** NORMALISATION_POWER).astype(np.float32)


def _rss(positions: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares of element sensitivities (1 + (d/a)^2)^(-3/2) (on-axis field of a loop)."""
    cols = [np.ascontiguousarray(points[:, k], dtype=np.float32) / np.float32(LOOP_RADIUS_MM) for k in range(3)]
    total = np.zeros(points.shape[0], dtype=np.float32)
    for element in positions.astype(np.float32) / np.float32(LOOP_RADIUS_MM):
        q = 1.0 + (cols[0] - element[0]) ** 2 + (cols[1] - element[1]) ** 2 + (cols[2] - element[2]) ** 2
        total += 1.0 / (q * q * q)
    return np.sqrt(total)
