"""ONE analytic 3-D anatomy per patient: the beating heart over the static body, in patient coordinates.

`Anatomy.build(params)` derives everything deterministically from the patient parameters. Sampling
code asks for two layers at points (mm): the static body (`static_layer`, evaluated once per slice)
and the heart (`heart_layer`, per cardiac phase, only near the heart), and puts the heart over the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.synth.fields import Edge
from vne_inline.synth.heart import (
    HeartFrame,
    HeartModel,
    HeartPoints,
    build_wall_shape,
    contraction,
    heart_frame,
)
from vne_inline.synth.labels import Label
from vne_inline.synth.lesions import LesionField, build_lesion_field
from vne_inline.synth.patient import PatientParams
from vne_inline.synth.torso import Torso, fit_torso

__all__ = ["Anatomy", "GreatVessel"]

OCCUPANCY_STEP_MM = 4.0  # grid step of the heart occupancy used to place the torso
LESION_GRID_COARSENING = 2  # lesions are tabulated on a 2 deg x 1 mm grid


@dataclass(frozen=True)
class GreatVessel:
    """A straight vessel segment (capsule) from `start` along `direction` (heart frame, mm)."""

    start: np.ndarray
    direction: np.ndarray
    length_mm: float
    radius_mm: float

    def coverage(self, local: np.ndarray, edge: Edge) -> np.ndarray:
        """Coverage at a subset of points (heart-frame coordinates (N, 3))."""
        d = local - self.start.astype(np.float32)
        along = np.clip(d @ self.direction.astype(np.float32), 0, self.length_mm)
        dist = np.linalg.norm(d - along[:, None] * self.direction.astype(np.float32), axis=1)
        return edge.flat(self.radius_mm - dist)


@dataclass(frozen=True)
class Anatomy:
    params: PatientParams
    frame: HeartFrame
    heart: HeartModel
    lesions: LesionField
    torso: Torso
    vessels: tuple[GreatVessel, ...]

    @classmethod
    def build(cls, params: PatientParams) -> Anatomy:
        rng = np.random.default_rng(params.heart.shape_seed)
        frame = heart_frame(params.heart)
        wall = build_wall_shape(params.heart, rng)
        lesions = build_lesion_field(params.lesions, params.target_burden, wall.coarsened(LESION_GRID_COARSENING), rng)
        heart = HeartModel(params.heart, wall, lesions.transmural_on(wall.grid), rng)
        torso = fit_torso(params.torso, _occupied(heart, frame), float(frame.origin[0]), rng)
        return cls(params, frame, heart, lesions, torso, _great_vessels(params, frame))

    # ------------------------------------------------------------------ layers
    def static_layer(self, points: np.ndarray, edge: Edge) -> np.ndarray:
        """Label fractions (L, N) of the body without the beating heart (points ordered as `edge` says)."""
        local = self.frame.local(points)
        near = np.flatnonzero(self.heart.near(HeartPoints.from_local(local)))
        vessels = np.zeros(len(points), np.float32)
        if near.size:
            vessels[near] = np.max([v.coverage(local[near], edge) for v in self.vessels], axis=0)
        return self.torso.layer(points, edge, [(Label.BLOOD, vessels)])

    def heart_layer(self, pts: HeartPoints, phase: float, edge: Edge):
        """(Layers, lesion fractions (2, N)) of the heart at `phase` (fraction of RR)."""
        return self.heart.layer(pts, contraction(phase, self.params.rr_ms), edge, self.lesions)


def _occupied(heart: HeartModel, frame: HeartFrame) -> np.ndarray:
    """Patient coordinates of coarse grid points inside the end-diastolic heart."""
    r = heart.bounding_radius_mm
    lo, hi = heart.w_range_mm
    g = np.arange(-r, r + 1e-6, OCCUPANCY_STEP_MM)
    s, t, w = np.meshgrid(g, g, np.arange(lo, hi, OCCUPANCY_STEP_MM), indexing="ij")
    local = np.stack([s.ravel(), t.ravel(), w.ravel()], axis=1).astype(np.float32)
    inside = heart.envelope_distance(HeartPoints.from_local(local)) <= 0
    return frame.to_patient(local[inside])


def _great_vessels(params: PatientParams, frame: HeartFrame) -> tuple[GreatVessel, ...]:
    """Ascending aorta (from the aortic valve towards the head and right) and pulmonary trunk (from the
    RV outflow tract towards the head, left and back), in the heart frame."""
    r = params.heart.cavity_radius_mm

    def towards(patient_dir) -> np.ndarray:
        d = frame.axes @ (np.asarray(patient_dir, dtype=np.float64) / np.linalg.norm(patient_dir))
        return d / np.linalg.norm(d)

    aorta = GreatVessel(np.array([0.35 * r, -0.35 * r, -4.0]), towards([-0.3, 0.1, 1.0]), 70.0, 14.0)
    pulmonary = GreatVessel(np.array([r + 12.0, -0.9 * r, -4.0]), towards([0.4, 0.6, 0.8]), 45.0, 13.0)
    return (aorta, pulmonary)
