"""T1 fit with the recovery between inversions modelled: every sample of every inversion is used, the
later inversions starting from the magnetisation that the readouts and the recovery beats left
(pure numpy, vectorised over pixels).

Model (continuous-readout Look-Locker, Deichmann & Haase, JMR 1992;96:608-612; the inversion-group
view of MOLLI, in which each inversion has its own starting magnetisation but all share A and T1*,
Sussman et al., MRM 2016;75:2332-2340). During the readouts of inversion j the
signal is ``S_j(t) = A - B_j exp(-t/T1*)`` (t: time since inversion j). The first inversion starts from
equilibrium, ``B_1 = B``, and ``T1 = T1* (B/A - 1)`` is the Look-Locker corrected T1 (the apparent T1
of a fully recovered MOLLI-type experiment). Unlike the inversion-group fit, the later B_j are not
free: with ``mu_j`` the longitudinal magnetisation before inversion j (units of M0),

    B_j = A + (B - A) mu_j,     mu_1 = 1,
    mu_{j+1} = 1 - (1 - z_j) exp(-gap_j d / T1),    z_j = d S_j(t_last) / (B - A),

i.e. free T1 recovery (true T1 = T1 / d, d the inversion efficiency) over the `gap_j` from the last
readout of inversion j to inversion j + 1, starting from the signal of that readout. So a sample after
an incomplete recovery (ShMOLLI's later inversions, MOLLI at long T1 or fast heart rates) adds
information instead of bias, with three parameters per pixel as in the standard fit. Which samples
are used never depends on the fitted T1.

Fit: Levenberg-Marquardt (analytic Jacobian through the recursion) on |S| for magnitude data or S
for signed data, started from the best curve of a grid over T1* and T1/T1* (one matrix product).
"""

from __future__ import annotations

import numpy as np

from vne_inline.physics.grid_fit import grid_fit
from vne_inline.physics.t1 import INVERSION_EFFICIENCY, T1Fit, scattered_fit

__all__ = ["recovery_model", "fit_t1_recovery", "readout_rate", "fit_t1_fixed_rate"]

_X_LIMITS = (np.log(5.0), np.log(20000.0))  # ln T1* (ms)
_R_LIMITS = (-3.0, 3.0)  # ln(B/A - 1) = ln(T1/T1*)
#: Starting grid of the fit: ln T1* (ms) and ln(T1/T1*) (T1*/T1 from about 0.25 to 1.1).
_START_X = np.linspace(np.log(10.0), np.log(5000.0), 40)
_START_R = np.linspace(-0.1, 1.4, 12)
_START_BLOCK = 8192  # pixels per block of the grid search


def recovery_model(
    a: np.ndarray, x: np.ndarray, r: np.ndarray, ti_ms: np.ndarray, groups: np.ndarray, gaps_ms: np.ndarray,
    inversion_efficiency: float = INVERSION_EFFICIENCY, jacobian: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Signed signal (K, n) for parameters A, ln T1*, ln(T1/T1*) (each (n,)); `ti_ms` (K,) time since
    each sample's own inversion, `groups` (K,) inversion index 0.. in acquisition order, `gaps_ms`
    (J - 1,) from each inversion's last readout to the next inversion. With `jacobian`, also
    d S / d (A, x, r) as (3, K, n)."""
    d = float(inversion_efficiency)
    ti = np.asarray(ti_ms, dtype=np.float64)[:, None]
    inv_ts = np.exp(-x)
    e = np.exp((-ti * inv_ts).astype(np.float32)).astype(np.float64)  # (K, n)
    er, emr = np.exp(r), np.exp(-r)
    g = np.empty_like(e)
    gx = np.empty_like(e) if jacobian else None
    gr = np.empty_like(e) if jacobian else None
    mu, mux, mur = np.ones_like(x), np.zeros_like(x), np.zeros_like(x)
    n_groups = int(groups.max()) + 1
    for j in range(n_groups):
        k = np.flatnonzero(groups == j)
        c = 1.0 + er * mu
        g[k] = 1.0 - c * e[k]
        if jacobian:
            gx[k] = -(er * mux) * e[k] - c * e[k] * ti[k] * inv_ts
            gr[k] = -(er * (mu + mur)) * e[k]
        if j + 1 < n_groups:
            last = k[np.argmax(ti[k, 0])]
            z = d * g[last] * emr
            w = float(gaps_ms[j]) * d * inv_ts * emr
            q = np.exp(-w)
            if jacobian:
                zx, zr = d * emr * gx[last], d * emr * (gr[last] - g[last])
                mux = zx * q - (1.0 - z) * q * w
                mur = zr * q - (1.0 - z) * q * w
            mu = 1.0 - (1.0 - z) * q
    s = a * g
    if not jacobian:
        return s, None
    return s, np.stack([g, a * gx, a * gr])


def _solve3(h: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Solve the symmetric 3x3 systems h (n, 3, 3) x = g (n, 3) by the adjugate; 0 where singular."""
    a, b, c = h[:, 0, 0], h[:, 0, 1], h[:, 0, 2]
    e, f, i = h[:, 1, 1], h[:, 1, 2], h[:, 2, 2]
    adj = np.stack([e * i - f * f, c * f - b * i, b * f - c * e,
                    a * i - c * c, b * c - a * f, a * e - b * b])  # (6, n): 00 01 02 11 12 22
    det = a * adj[0] + b * adj[1] + c * adj[2]
    ok = np.isfinite(det) & (np.abs(det) > 1e-300)
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    g0, g1, g2 = g[:, 0], g[:, 1], g[:, 2]
    return np.stack([adj[0] * g0 + adj[1] * g1 + adj[2] * g2,
                     adj[1] * g0 + adj[3] * g1 + adj[4] * g2,
                     adj[2] * g0 + adj[4] * g1 + adj[5] * g2], axis=1) * inv_det[:, None]


def _residual(y, a, x, r, ti, groups, gaps, d, magnitude, jacobian):
    s, jac = recovery_model(a, x, r, ti, groups, gaps, d, jacobian)
    if magnitude:
        sign = np.where(s < 0, -1.0, 1.0)
        s = s * sign
        if jac is not None:
            jac = jac * sign
    res = y - s
    return np.einsum("kn,kn->n", res, res), res, jac


def _dictionary_start(y: np.ndarray, args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starting (A, ln T1*, ln(T1/T1*)) per pixel of y (K, n): the best of a grid of model curves
    (|curve| for magnitude data, so no polarity search is needed), scored by the normalised
    projection y . g / |g| with A = y . g / |g|^2 > 0, one matrix product per block of pixels."""
    ti, groups, gaps, d, magnitude = args
    xg, rg = (v.ravel() for v in np.meshgrid(_START_X, _START_R, indexing="ij"))
    g, _ = recovery_model(np.ones_like(xg), xg, rg, ti, groups, gaps, d)  # (K, D)
    if magnitude:
        g = np.abs(g)
    norm = np.sqrt(np.einsum("kd,kd->d", g, g))
    atoms = (g / norm).astype(np.float32)
    best = np.empty(y.shape[1], dtype=np.int64)
    score = np.empty(y.shape[1])
    for s in range(0, y.shape[1], _START_BLOCK):
        w = y[:, s:s + _START_BLOCK].T.astype(np.float32) @ atoms  # (n, D)
        best[s:s + _START_BLOCK] = np.argmax(w, axis=1)
        score[s:s + _START_BLOCK] = w[np.arange(w.shape[0]), best[s:s + _START_BLOCK]]
    return score / norm[best], xg[best], rg[best]


def _levenberg_marquardt(y, a, x, r, args, n_iter):
    """Levenberg-Marquardt on the pixels of y (K, n) from (A, ln T1*, ln(T1/T1*)); converged pixels
    (an accepted step changing the RSS by < 1e-4 relative, or damping exhausted) drop out."""
    a, x, r = a.copy(), x.copy(), r.copy()
    rss, res, jac = _residual(y, a, x, r, *args, jacobian=True)
    lam = np.full(a.size, 1e-3)
    active = np.arange(a.size)
    for _ in range(n_iter):
        if active.size == 0:
            break
        ja, ra = jac[:, :, active], res[:, active]
        jtj = np.einsum("pkn,qkn->npq", ja, ja)
        jtr = np.einsum("pkn,kn->np", ja, ra)
        diag = np.einsum("npp->np", jtj)
        damp = lam[active, None] * diag + 1e-12 * (diag.max(axis=1, keepdims=True) + 1e-30)
        step = np.nan_to_num(_solve3(jtj + damp[:, :, None] * np.eye(3), jtr), nan=0.0, posinf=0.0, neginf=0.0)
        at = a[active] + step[:, 0]
        xt = np.clip(x[active] + np.clip(step[:, 1], -1.0, 1.0), *_X_LIMITS)
        rt = np.clip(r[active] + np.clip(step[:, 2], -1.0, 1.0), *_R_LIMITS)
        rss_t, res_t, jac_t = _residual(y[:, active], at, xt, rt, *args, jacobian=True)
        old = rss[active]
        better = np.isfinite(rss_t) & (rss_t < old)
        sel = active[better]
        a[sel], x[sel], r[sel], rss[sel] = at[better], xt[better], rt[better], rss_t[better]
        res[:, sel] = res_t[:, better]
        jac[:, :, sel] = jac_t[:, :, better]
        lam[active] = np.where(better, lam[active] / 3.0, lam[active] * 4.0)
        done = (better & (old - rss_t <= 1e-4 * old)) | (lam[active] > 1e6)
        active = active[~done]
    return a, x, r, rss


def _average_null_polarity(y, a, x, r, rss, t1, args, n_iter):
    """T1 averaged over the two polarities of the sample nearest the null.

    A magnitude sample within noise of zero fits either sign about equally well; taking the better one
    biases T1 (the sign follows the noise). Where the fitted signal of that sample is within 2.5 noise
    SDs of zero, refit with its sign flipped (signed data, the other samples keeping the fit's signs)
    and average the two T1 with likelihood weights exp(-(RSS_2 - RSS_1) / 2 sigma^2), sigma^2 from the
    median residual (model averaging, as :func:`vne_inline.physics.t1.fit_t1` does for its polarities).
    """
    ti, groups, gaps, d, _ = args
    k = y.shape[0]
    s, _ = recovery_model(a, x, r, ti, groups, gaps, d)
    sigma2 = max(float(np.median(rss[np.isfinite(rss)])) / max(k - 3, 1), 1e-300) if np.isfinite(rss).any() else 1e-300
    k0 = np.argmin(np.abs(s), axis=0)
    cols = np.arange(y.shape[1])
    amb = np.flatnonzero(np.abs(s[k0, cols]) < 2.5 * np.sqrt(sigma2))
    if amb.size == 0:
        return t1
    signs = np.where(s[:, amb] < 0, -1.0, 1.0)
    signs[k0[amb], np.arange(amb.size)] *= -1.0
    signed_args = (ti, groups, gaps, d, False)
    a2, x2, r2, rss2 = _levenberg_marquardt(signs * y[:, amb], a[amb], x[amb], r[amb], signed_args, n_iter)
    t1_2 = np.exp(x2 + r2)
    ok = np.isfinite(t1_2) & np.isfinite(rss2) & (a2 > 0)
    w = np.where(ok, np.exp(-np.clip((rss2 - rss[amb]) / (2.0 * sigma2), 0.0, 700.0)), 0.0)
    out = t1.copy()
    out[amb] = (t1[amb] + w * np.nan_to_num(t1_2)) / (1.0 + w)
    return out


def _fitted_pixels(images: np.ndarray, mask: np.ndarray | None) -> tuple[tuple[int, ...], int, np.ndarray, np.ndarray]:
    """(trailing shape, pixel count, flat indices of the pixels to fit, their samples (K, m)): finite,
    not all zero, inside `mask`."""
    k, trailing = images.shape[0], images.shape[1:]
    n = int(np.prod(trailing, dtype=np.int64))
    y = images.reshape(k, n)
    keep = np.all(np.isfinite(y), axis=0) & np.any(y != 0, axis=0)
    if mask is not None:
        keep &= np.broadcast_to(np.asarray(mask, dtype=bool), trailing).reshape(n)
    idx = np.flatnonzero(keep)
    return trailing, n, idx, y[:, idx]


def fit_t1_recovery(
    images: np.ndarray,
    ti_ms: np.ndarray,
    groups: np.ndarray,
    gaps_ms: np.ndarray,
    magnitude: bool = True,
    mask: np.ndarray | None = None,
    t1_bounds_ms: tuple[float, float] = (50.0, 5000.0),
    inversion_efficiency: float = INVERSION_EFFICIENCY,
    n_iter: int = 8,
) -> T1Fit:
    """Fit the recovery model to images (K, ...) in acquisition order; returns a :class:`T1Fit` whose
    `t1_ms` is T1* (B/A - 1) of the first inversion (ms), `b` the first inversion's B.

    ti_ms (K,), groups (K,) and gaps_ms (J - 1,) as in :func:`recovery_model`; the first inversion
    needs >= 3 images. Other arguments as in :func:`~vne_inline.physics.t1.fit_t1`.
    """
    y_all = np.asarray(images, dtype=np.float64)
    ti = np.asarray(ti_ms, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    gaps = np.asarray(gaps_ms, dtype=np.float64).reshape(-1)
    k = y_all.shape[0] if y_all.ndim else 0
    if ti.size != k or groups.size != k:
        raise ValueError(f"ti_ms and groups need one entry per image (K={k}), got {ti.size} and {groups.size}")
    n_groups = int(groups.max()) + 1 if k else 0
    if k == 0 or groups[0] != 0 or np.any(np.diff(groups) < 0) or np.any(np.diff(groups) > 1):
        raise ValueError(f"groups must be 0, 0, .., 1, .. in acquisition order, got {groups.tolist()}")
    if gaps.size != n_groups - 1 or not np.all(np.isfinite(gaps) & (gaps >= 0)):
        raise ValueError(f"need {n_groups - 1} non-negative gaps between inversions, got {gaps.tolist()}")
    first = groups == 0
    if np.count_nonzero(first) < 3:
        raise ValueError("the recovery-model fit needs >= 3 images of the first inversion")
    lo, hi = (float(v) for v in t1_bounds_ms)
    trailing, n, idx, yv = _fitted_pixels(y_all, mask)
    d = float(inversion_efficiency)
    args = (ti, groups, gaps, d, magnitude)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        a, x, r = _dictionary_start(yv, args)
        a, x, r, rss = _levenberg_marquardt(yv, a, x, r, args, n_iter)
        t1 = np.exp(x + r)
        if magnitude and idx.size:
            t1 = _average_null_polarity(yv, a, x, r, rss, t1, args, n_iter)
        b = a * (1.0 + np.exp(r))
        s, _ = recovery_model(a, x, r, ti, groups, gaps, d)
        order = np.argsort(ti, kind="stable")
        p_null = np.count_nonzero(s[order] < 0, axis=0)
        r2 = 1.0 - rss / np.sum((yv - yv.mean(axis=0)) ** 2, axis=0)
        good = np.isfinite(t1) & (t1 >= lo) & (t1 <= hi) & np.isfinite(rss) & (a > 0 if magnitude else a != 0)

    return scattered_fit(n, trailing, idx[good], good, t1, a, b, np.exp(x), np.sqrt(rss / k), p_null, r2)


def readout_rate(fit: T1Fit, inversion_efficiency: float = INVERSION_EFFICIENCY, min_r_squared: float = 0.98,
                 t1_range_ms: tuple[float, float] = (300.0, 2500.0), min_pixels: int = 50) -> float | None:
    """The slice's readout rate c = 1/T1* - d/T1 (per ms: the continuous-readout Look-Locker relation
    1/T1* = 1/T1_true + c with T1_true = T1/d), the median over the well-fitted pixels of a
    three-parameter recovery fit; None when fewer than `min_pixels` qualify or the median is not positive.
    The readouts' flip angle, spacing and count set c, the same for every pixel of a slice (up to B1)."""
    ok = (np.isfinite(fit.t1_ms) & np.isfinite(fit.t1_star_ms) & (fit.r_squared >= min_r_squared)
          & (fit.t1_ms >= t1_range_ms[0]) & (fit.t1_ms <= t1_range_ms[1]))
    if np.count_nonzero(ok) < min_pixels:
        return None
    c = float(np.median(1.0 / fit.t1_star_ms[ok] - inversion_efficiency / fit.t1_ms[ok]))
    return c if np.isfinite(c) and c > 0 else None


def fit_t1_fixed_rate(
    images: np.ndarray,
    ti_ms: np.ndarray,
    groups: np.ndarray,
    gaps_ms: np.ndarray,
    rate_per_ms: float,
    magnitude: bool = True,
    mask: np.ndarray | None = None,
    t1_bounds_ms: tuple[float, float] = (50.0, 5000.0),
    inversion_efficiency: float = INVERSION_EFFICIENCY,
    n_grid: int = 256,
) -> T1Fit:
    """The recovery model with the readout rate fixed (:func:`readout_rate`): two parameters per pixel,
    A (linear) and T1, so T1* = 1 / (d/T1 + c). T1 from a log grid of model curves (|curve| for magnitude
    data, A > 0), refined by a parabola through the grid minimum of the residual; pixels at a grid end
    are invalid. Fewer free parameters than the three-parameter fit: lower noise where the samples
    barely constrain T1* (blood, long T1). Arguments and result as :func:`fit_t1_recovery`."""
    y_all = np.asarray(images, dtype=np.float64)
    ti = np.asarray(ti_ms, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    k = y_all.shape[0]
    trailing, n, idx, yv = _fitted_pixels(y_all, mask)
    d, c = float(inversion_efficiency), float(rate_per_ms)
    log_grid = np.linspace(np.log(t1_bounds_ms[0]), np.log(t1_bounds_ms[1]), n_grid)
    grid = np.exp(log_grid)
    x = -np.log(d / grid + c)
    gaps = np.asarray(gaps_ms, np.float64)
    g, _ = recovery_model(np.ones_like(grid), x, log_grid - x, ti, groups, gaps, d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fit = grid_fit(np.abs(g.T) if magnitude else g.T, yv, log_grid)
        t1, a = np.exp(fit.p), fit.a
        rss = np.maximum(np.einsum("kn,kn->n", yv, yv) - fit.energy, 0.0)
        t1_star = 1.0 / (d / t1 + c)
        s, _ = recovery_model(a, np.log(t1_star), np.log(t1 / t1_star), ti, groups, gaps, d)
        order = np.argsort(ti, kind="stable")
        p_null = np.count_nonzero(s[order] < 0, axis=0)
        r2 = 1.0 - rss / np.sum((yv - yv.mean(axis=0)) ** 2, axis=0)
        good = fit.inner & np.isfinite(t1)
    return scattered_fit(n, trailing, idx[good], good, t1, a, a * (1.0 + t1 / t1_star), t1_star,
                         np.sqrt(rss / k), p_null, r2)
