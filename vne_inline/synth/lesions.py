"""Fibrotic lesions in ED material coordinates of the LV wall (theta, w, depth) and the true burden.

Each lesion is a Gaussian blob (circumferential and long-axis SDs in mm, transmural SD as a wall
fraction) made patchy by a smooth random field and given a soft border; hyperintense lesions may
carry an intermediate halo. All lesion sizes are scaled together so that the lesion volume over the LV
myocardial volume matches the patient's target burden (bisection), and that volume fraction is the
true burden stored with the exam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.synth.fields import smooth_grid
from vne_inline.synth.heart import PolarGrid, WallShape, wrap_angle
from vne_inline.synth.patient import GRADES, LesionSpec

__all__ = ["LesionField", "build_lesion_field", "XI_BINS"]

XI_BINS = 9  # transmural nodes from endocardium (0) to epicardium (1)
HALO_SCALE = 1.6  # halo SDs relative to the core
PATCHINESS = 0.6  # SD of the log-normal modulation of each blob


@dataclass(frozen=True)
class LesionField:
    """Lesion fractions (theta, w, xi, grade) with grade 0 hyperintense and 1 intermediate."""

    grid: PolarGrid
    values: np.ndarray  # (n_theta, n_w, XI_BINS, 2) float32
    burden: float  # lesion volume / LV myocardial volume
    burden_by_grade: tuple[float, float]

    def lookup(self, theta: np.ndarray, w: np.ndarray, xi: np.ndarray) -> np.ndarray:
        """Lesion fractions (N, 2) at ED material coordinates; xi in [0, 1]."""
        per_depth = self.grid.lookup(self.values.reshape(self.grid.n_theta, self.grid.n_w, -1), theta, w)
        per_depth = per_depth.reshape(-1, XI_BINS, 2)
        x = np.clip(xi, 0, 1) * (XI_BINS - 1)
        k0 = np.minimum(x.astype(np.int64), XI_BINS - 2)
        f = (x - k0)[:, None]
        rows = np.arange(x.size)
        return per_depth[rows, k0] * (1 - f) + per_depth[rows, k0 + 1] * f

    def transmural_on(self, grid: PolarGrid) -> np.ndarray:
        """Fibrosis through the wall on another (theta, w) grid: mean over depth of hyperintense plus
        half intermediate."""
        through = (self.values[..., 0] + 0.5 * self.values[..., 1]).mean(axis=2)
        th, w = grid.mesh()
        return self.grid.lookup(through[..., None], th.ravel(), w.ravel()).reshape(th.shape)


def _blob_terms(spec: LesionSpec, wall: WallShape, th, w, xi, r_mid) -> tuple[np.ndarray, ...]:
    """Squared distances (circumferential mm, long-axis mm, depth fraction) to the lesion centre."""
    theta_deg = spec.theta_deg
    if spec.kind == "insertion_anterior":
        theta_deg += wall.insertion_deg[0]
    elif spec.kind == "insertion_inferior":
        theta_deg += wall.insertion_deg[1]
    dc = wrap_angle(th - np.deg2rad(theta_deg)) * r_mid
    return dc[..., None] ** 2, (w - spec.w_mm)[..., None] ** 2, (xi - spec.depth) ** 2


def build_lesion_field(specs: tuple[LesionSpec, ...], target_burden: float, wall: WallShape, rng: np.random.Generator) -> LesionField:
    """Lesion fractions on the wall grid, sized to `target_burden` (0 gives an empty field)."""
    grid = wall.grid
    shape = (grid.n_theta, grid.n_w, XI_BINS, 2)
    th, w = grid.mesh()
    xi = np.linspace(0.0, 1.0, XI_BINS)
    r_en, r_ep = wall.radii()
    inside = ((w >= 0) & (r_ep > 0.5))[..., None]
    span = np.maximum(r_ep - r_en, 0)
    volume = (r_en[..., None] + xi * span[..., None]) * span[..., None] * inside  # r dr per node
    total = float(volume.sum())
    if not specs or target_burden <= 0:
        return LesionField(grid, np.zeros(shape, np.float32), 0.0, (0.0, 0.0))

    noise = np.exp(PATCHINESS * smooth_grid(rng, (grid.n_theta, grid.n_w, XI_BINS), (*grid.bins(5.0, 3.0), 1.0), wrap_axes=(0,)))
    r_mid = 0.5 * (r_en + r_ep)
    blobs = []  # (grade index, size factor, spec, squared-distance terms)
    for spec in specs:
        terms = _blob_terms(spec, wall, th, w, xi, r_mid)
        blobs.append((GRADES.index(spec.grade), 1.0, spec, terms))
        if spec.halo and spec.grade == "hyperintense":
            blobs.append((GRADES.index("intermediate"), HALO_SCALE, spec, terms))

    def fields(scale: float) -> np.ndarray:
        out = np.zeros(shape, dtype=np.float64)
        for g, k, spec, (dc2, dw2, dx2) in blobs:
            sx = spec.sigma_depth * min(scale, 1.5) ** 0.5
            q = dc2 / (spec.sigma_circ_mm * scale * k) ** 2 + dw2 / (spec.sigma_long_mm * scale * k) ** 2 + dx2 / (sx * k) ** 2
            np.maximum(out[..., g], np.clip((np.exp(-0.5 * q) * noise - 0.375) / 0.25, 0, 1), out=out[..., g])
        out[..., 1] *= 1 - out[..., 0]
        return out * inside[..., None]

    def burden(values: np.ndarray) -> float:
        return float((values.sum(axis=-1) * volume).sum() / total)

    lo, hi = np.log(0.1), np.log(5.0)
    for _ in range(16):
        mid = 0.5 * (lo + hi)
        if burden(fields(np.exp(mid))) < target_burden:
            lo = mid
        else:
            hi = mid
    values = fields(np.exp(0.5 * (lo + hi)))
    by_grade = tuple(float((values[..., g] * volume).sum() / total) for g in (0, 1))
    return LesionField(grid, values.astype(np.float32), burden(values), by_grade)
