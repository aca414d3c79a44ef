"""Least-squares fit of one amplitude and one shape parameter by a dictionary of model curves (pure numpy).

Data y (K, n) are fitted per pixel as ``y = A g(p)`` with A > 0 linear and p on an evenly spaced grid
(in practice ln T1): for each curve the least-squares A is (y . g) / |g|^2 and the residual is
``|y|^2 - (y . g)^2 / |g|^2``, so the best curve is the one of largest normalised projection
y . g / |g| (dictionary matching, Ma et al., Nature 2013;495:187-192), found for all pixels and all
curves by one matrix product per block of pixels. The optimum is refined by a parabola through the
projection energies of the best grid point and its two neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GridFit", "grid_fit"]

#: Pixels per matrix product (a block's (pixels, curves) float32 scores stay in cache).
_BLOCK = 4096


@dataclass(frozen=True)
class GridFit:
    """Per pixel (n,): the refined parameter `p` (in the grid's units), the amplitude `a` at the best
    grid curve (A > 0 where `inner`), the projection energy `energy` = |y|^2 - RSS at that curve, and
    `inner`: the best curve has a positive projection and is not at either end of the grid."""

    p: np.ndarray
    a: np.ndarray
    energy: np.ndarray
    inner: np.ndarray


def grid_fit(curves: np.ndarray, y: np.ndarray, grid: np.ndarray, two_sided: bool = False) -> GridFit:
    """Fit y (K, n) with A * curves[i], one curve per value of the evenly spaced `grid` (G,): curves (G, K)
    shared by all pixels, or (G, K, n) per pixel. A > 0, or of either sign with `two_sided` (then `a`
    keeps its sign and `inner` needs A != 0)."""
    curves = np.asarray(curves, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    n_grid, n = grid.size, y.shape[1]
    if curves.shape not in ((n_grid, y.shape[0]), (n_grid, *y.shape)) or n_grid < 3:
        raise ValueError(f"need (G >= 3, K[, n]) curves for a grid of G and data (K, n), got {curves.shape}, {y.shape}")
    norm = np.sqrt(np.einsum("gk...,gk...->g...", curves, curves))  # (G,) or (G, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        atoms = np.where(norm[:, None] > 0, curves / norm[:, None], 0.0).astype(np.float32)
    shared = curves.ndim == 2
    if shared:
        atoms = atoms.T  # (K, G)
    best = np.empty(n, dtype=np.int64)
    near = np.empty((4, n), dtype=np.float64)  # projections at the parabola's three points and the best
    for s in range(0, n, _BLOCK):
        block = y[:, s:s + _BLOCK].astype(np.float32)
        w = block.T @ atoms if shared else np.einsum("kn,gkn->ng", block, atoms[..., s:s + _BLOCK])  # (m, G)
        score = np.abs(w) if two_sided else w
        b = np.argmax(score, axis=1)
        rows = np.arange(b.size)
        c = np.clip(b, 1, n_grid - 2)
        best[s:s + _BLOCK] = b
        near[:, s:s + _BLOCK] = score[rows, c - 1], score[rows, c], score[rows, c + 1], w[rows, b]
    centre = np.clip(best, 1, n_grid - 2)
    at_best = near[3]
    norm_best = norm[best] if shared else norm[best, np.arange(n)]
    e_lo, e_mid, e_hi = (np.square(np.maximum(v, 0.0)) for v in near[:3])
    curvature = 2.0 * e_mid - e_lo - e_hi
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature > 0, 0.5 * (e_hi - e_lo) / np.where(curvature > 0, curvature, 1.0), 0.0)
        a = np.where(norm_best > 0, at_best / norm_best, 0.0)
    step = (grid[-1] - grid[0]) / (n_grid - 1)
    inner = (best > 0) & (best < n_grid - 1) & ((at_best != 0) if two_sided else (at_best > 0))
    energy = np.square(at_best if two_sided else np.maximum(at_best, 0.0))
    return GridFit(grid[centre] + np.clip(shift, -0.5, 0.5) * step, a, energy, inner)
