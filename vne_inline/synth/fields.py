"""Smooth random fields (deterministic per generator): grid fields and 3-D plane-wave sums.

Used for patchy lesion borders, wall-thickness irregularity, trabeculation, tissue texture and lung
vessels. Pure numpy / scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["smooth_grid", "PlaneWaves", "ramp", "project", "Edge"]


def smooth_grid(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: tuple[float, ...], wrap_axes=()) -> np.ndarray:
    """White noise smoothed by a Gaussian (sigma in pixels per axis), rescaled to zero mean, unit SD.

    Axes in `wrap_axes` are periodic (e.g. the circumferential angle).
    """
    noise = rng.standard_normal(shape)
    modes = ["wrap" if ax in wrap_axes else "reflect" for ax in range(len(shape))]
    out = gaussian_filter(noise, sigma_px, mode=modes)
    return (out - out.mean()) / max(float(out.std()), 1e-12)


@dataclass(frozen=True)
class PlaneWaves:
    """A stationary random field in 3-D: sum of cosines with random directions, wavelengths and phases.

    `wavenumbers` (n, 3) in rad/mm, `phases` (n,); the field has zero mean and unit variance.
    """

    wavenumbers: np.ndarray
    phases: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float]) -> PlaneWaves:
        d = rng.standard_normal((n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength_mm, size=n)
        return cls(wavenumbers=(2 * np.pi / lam)[:, None] * d, phases=rng.uniform(0, 2 * np.pi, n))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Field values at points (N, 3) in mm, float32 (N,)."""
        arg = project(points, self.wavenumbers) + self.phases.astype(np.float32)[:, None]
        return np.cos(arg, out=arg).sum(axis=0) * np.float32(np.sqrt(2.0 / len(self.phases)))


def project(points: np.ndarray, directions: np.ndarray, origin=None) -> np.ndarray:
    """Dot products (n_dir, N) float32 of points (N, 3) (minus `origin`) with directions (n_dir, 3).

    Column-wise multiply-adds: much faster than a matmul with an inner dimension of 3.
    """
    p = np.asarray(points, dtype=np.float64)
    if origin is not None:
        p = p - origin
    cols = [np.ascontiguousarray(p[:, k], dtype=np.float32) for k in range(3)]
    d = np.asarray(directions, dtype=np.float32)
    return np.stack([cols[0] * d[j, 0] + cols[1] * d[j, 1] + cols[2] * d[j, 2] for j in range(d.shape[0])])


def ramp(signed_distance_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume coverage of a straight edge: 1 inside (distance > 0), 0 outside, linear over `edge_mm`."""
    return np.clip(0.5 + signed_distance_mm * np.float32(1.0 / edge_mm), 0.0, 1.0)


@dataclass(frozen=True)
class Edge:
    """The partial-volume edge model of one sampling.

    Points come ordered (n_sub, M): `n_sub` sub-slices through the slice thickness. In plane an edge is a
    linear ramp over `mm` (the pixel size). `cover` also widens each edge by the change of the signed
    distance between adjacent sub-slices, i.e. box-filters it through the slab each sub-slice stands for,
    so that surfaces oblique to the slice blend smoothly instead of showing one step per sub-slice.
    """

    mm: float
    n_sub: int = 1

    def cover(self, d: np.ndarray) -> np.ndarray:
        """Coverage (0..1) of a structure with signed distance `d` (mm, > 0 inside) at all the points."""
        if self.n_sub < 2:
            return ramp(d, self.mm)
        slope = np.gradient(d.reshape(self.n_sub, -1), axis=0).reshape(d.shape)
        width = np.sqrt(np.float32(self.mm * self.mm) + slope * slope)
        return np.clip(0.5 + d / width, 0.0, 1.0)

    def flat(self, d: np.ndarray) -> np.ndarray:
        """Coverage at a subset of the points (no through-plane widening)."""
        return ramp(d, self.mm)
