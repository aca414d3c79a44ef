"""The static body around the heart: elliptic-cylinder torso with subcutaneous fat and chest-wall /
back muscle, thoracic cavity with lungs (and their vessels), diaphragm with liver and left upper
abdomen below, vertebral body with spinal canal, descending aorta and posterior mediastinum.

Patient coordinates (LPS, mm): +x left, +y posterior, +z head. The torso is placed around the heart
by :func:`fit_torso` so that the heart lies `chest_gap_mm` behind the inner chest wall and sits on the
diaphragm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.synth.composite import Layers
from vne_inline.synth.fields import Edge, PlaneWaves
from vne_inline.synth.heart import ellipsoid_distance
from vne_inline.synth.labels import Label
from vne_inline.synth.patient import TorsoParams

__all__ = ["Torso", "fit_torso"]

CANAL_RADIUS_MM = 8.0  # spinal canal (adult cervico-thoracic canal about 15-17 mm across)
DIAPHRAGM_MM = 5.0  # muscular diaphragm thickness
VESSEL_WIDTH = 0.14  # zero-crossing half width of the lung-vessel fields (field units)


@dataclass(frozen=True)
class Torso:
    """A placed torso: centre (x, y) of the body ellipse, diaphragm reference height and vessel fields."""

    p: TorsoParams
    centre_xy: tuple[float, float]
    diaphragm_z_mm: float
    vessels: tuple[PlaneWaves, PlaneWaves]
    floor_slope: tuple[float, float] = (0.0, 0.0)  # dz/dx, dz/dy of the central tendon

    # ------------------------------------------------------------------ geometry
    def _thickness(self, phi: np.ndarray, values: tuple[float, float, float]) -> np.ndarray:
        """A layer thickness interpolated between anterior, lateral and posterior values."""
        s, c = np.sin(phi), np.abs(np.cos(phi))
        ant, post = np.maximum(-s, 0), np.maximum(s, 0)
        return (ant * values[0] + c * values[1] + post * values[2]) / (ant + c + post)

    def depth(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Depth below the skin (mm), subcutaneous fat and muscle thickness (mm) at points."""
        dx, dy = x - self.centre_xy[0], y - self.centre_xy[1]
        depth = -ellipsoid_distance((dx, dy), (self.p.half_width_mm, self.p.half_depth_mm))
        phi = np.arctan2(dy / self.p.half_depth_mm, dx / self.p.half_width_mm)
        return depth, self._thickness(phi, self.p.subcutaneous_fat_mm), self._thickness(phi, self.p.muscle_mm)

    @property
    def vertebra_y(self) -> float:
        p = self.p
        return self.centre_xy[1] + p.half_depth_mm - p.subcutaneous_fat_mm[2] - p.muscle_mm[2] - p.spine_radius_mm + 8.0

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Diaphragm height (mm): central tendon, higher right and left domes, deep posterior recess."""
        return self.diaphragm_z_mm + _dome_shape(self.p, self.centre_xy, x, y) + self.floor_slope[0] * x + self.floor_slope[1] * y

    # ------------------------------------------------------------------ layer
    def layer(self, points: np.ndarray, edge: Edge, mediastinal: list[tuple[Label, np.ndarray]]) -> np.ndarray:
        """Label fractions (L, N) of the body at patient points (N, 3) ordered as `edge` says;
        `mediastinal` structures (label, coverage) are painted inside the thoracic cavity first."""
        p = self.p
        x, y, z = (np.asarray(points[:, k], dtype=np.float32) for k in range(3))
        xc, yc = self.centre_xy
        layers = Layers(x.size)
        yv = self.vertebra_y
        layers.paint(Label.CSF, edge.cover(CANAL_RADIUS_MM - np.hypot(x - xc, y - (yv + p.spine_radius_mm + CANAL_RADIUS_MM + 2))))
        layers.paint(Label.MARROW, edge.cover(p.spine_radius_mm - np.hypot(x - xc, y - yv)))
        ya = yv - 0.75 * p.spine_radius_mm
        layers.paint(Label.BLOOD, edge.cover(p.aorta_radius_mm - np.hypot(x - (xc + p.aorta_offset_mm), y - ya)))

        depth, fat, muscle = self.depth(x, y)
        inner = edge.cover(depth - fat - muscle)
        for label, cover in mediastinal:
            layers.paint(label, cover * inner)
        post_med = edge.cover(-ellipsoid_distance((x - xc - 5.0, y - (yv - p.spine_radius_mm - 22.0)), (26.0, 22.0)))
        layers.paint(Label.MUSCLE, post_med * inner)
        height = z - self.diaphragm_z(x, y)
        below = edge.cover(-height - 0.5 * DIAPHRAGM_MM) * inner
        # liver / left-abdomen boundary: oblique and curved (the left lobe thins out towards the left)
        split = xc + p.liver_split_mm - x + 0.25 * (y - yc) - 0.004 * (height + 20.0) ** 2
        layers.paint(Label.LIVER, below * edge.cover(split))
        layers.paint(Label.ABDOMEN, below)
        layers.paint(Label.MUSCLE, edge.cover(0.5 * DIAPHRAGM_MM - height) * inner)
        lung = np.flatnonzero((layers.rest > 0) & (inner > 0))
        g = np.float32(1.0 / (edge.mm * 0.15))  # field units per mm of a vessel edge (|grad| about 0.15 / mm)
        vessel = inner[lung]
        for f in self.vessels:
            vessel = vessel * np.clip(0.5 + (VESSEL_WIDTH - np.abs(f(points[lung]))) * g, 0, 1)
        layers.paint(Label.BLOOD, vessel, lung)
        layers.paint(Label.LUNG, inner)
        layers.paint(Label.MUSCLE, edge.cover(depth - fat))
        layers.paint(Label.FAT, edge.cover(depth))
        layers.paint(Label.AIR, np.ones_like(x))
        return layers.fractions


def _dome_shape(p: TorsoParams, centre_xy: tuple[float, float], x, y) -> np.ndarray:
    xc, yc = centre_xy
    sx, sy = 0.35 * p.half_width_mm, 0.6 * p.half_depth_mm
    right = np.exp(-(((x - (xc - 0.45 * p.half_width_mm)) / sx) ** 2) - ((y - yc) / sy) ** 2)
    left = np.exp(-(((x - (xc + 0.45 * p.half_width_mm)) / sx) ** 2) - ((y - yc) / sy) ** 2)
    bowl = 0.002 * ((x - xc) ** 2 + (y - yc) ** 2)  # the diaphragm rises gently away from the centre
    return p.right_dome_mm * right + p.left_dome_mm * left + bowl - 0.5 * np.maximum(y - yc - 0.2 * p.half_depth_mm, 0)


def fit_torso(p: TorsoParams, heart_points: np.ndarray, base_x_mm: float, rng: np.random.Generator) -> Torso:
    """Place the torso around the heart's occupied points (M, 3, patient mm): the inner chest wall
    `chest_gap_mm` in front of the heart and the diaphragm `diaphragm_gap_mm` below it."""
    xc = base_x_mm - p.midline_offset_mm
    x, y, z = heart_points.T
    vessels = (PlaneWaves.draw(rng, 8, (30.0, 60.0)), PlaneWaves.draw(rng, 8, (30.0, 60.0)))

    def clearance(yc: float) -> float:
        t = Torso(p, (xc, yc), 0.0, vessels)
        depth, fat, muscle = t.depth(x, y)
        return float(np.min(depth - fat - muscle))

    # Between "heart at the body centre" and "heart at the front", the anterior clearance falls as the
    # body centre moves back: bisect for the centre that leaves exactly the chest gap.
    lo, hi = float(np.mean(y)), float(np.max(y)) + p.half_depth_mm
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if clearance(mid) > p.chest_gap_mm:
            lo = mid
        else:
            hi = mid
    centre = (xc, 0.5 * (lo + hi))
    floor = _heart_floor(heart_points)
    shape = _dome_shape(p, centre, x, y) + floor[0] * x + floor[1] * y
    z_ref = float(np.min(z - shape)) - p.diaphragm_gap_mm
    return Torso(p, centre, z_ref, vessels, floor)


def _heart_floor(points: np.ndarray, cell_mm: float = 8.0) -> tuple[float, float]:
    """Slopes (dz/dx, dz/dy) of the plane through the lowest heart point of each (x, y) cell: the
    central tendon of the diaphragm follows the heart's inferior surface."""
    cells, inverse = np.unique(np.floor(points[:, :2] / cell_mm).astype(np.int64), axis=0, return_inverse=True)
    lowest = np.full(len(cells), np.inf)
    np.minimum.at(lowest, inverse.reshape(-1), points[:, 2])
    design = np.c_[(cells + 0.5) * cell_mm, np.ones(len(cells))]
    coef = np.linalg.lstsq(design, lowest, rcond=None)[0]
    return float(np.clip(coef[0], -1, 1)), float(np.clip(coef[1], -1, 1))
