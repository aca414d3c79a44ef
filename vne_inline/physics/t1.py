"""Inversion-recovery T1 physics: ShMOLLI/MOLLI TI sets, the three-parameter model, Look-Locker
correction and a vectorised, polarity-restoring T1 fit (pure numpy).

Units: T1, T1*, TI and RR in ms. Signal amplitudes (A, B, M0) are in arbitrary image units.

Model (Messroghli et al., MRM 2004;52:141-146, "MOLLI"; Piechnik et al., JCMR 2010;12:69, "ShMOLLI")::

    S(TI) = A - B exp(-TI / T1*)        (signed; magnitude images hold |S|)
    T1    = T1* (B / A - 1)             (Look-Locker correction, Deichmann & Haase, JMR 1992;96:608-612)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics.grid_fit import grid_fit

__all__ = [
    "SHMOLLI_TI0_MS",
    "SHMOLLI_TI_STEP_MS",
    "MOLLI_TI0_MS",
    "MOLLI_TI_STEP_MS",
    "MOLLI_SCHEMES",
    "INVERSION_EFFICIENCY",
    "READOUT_RATE_PER_MS",
    "shmolli_ti_ms",
    "molli_ti_ms",
    "SHMOLLI_TI_MS",
    "MOLLI_53_TI_MS",
    "MOLLI_33_35_TI_MS",
    "ir_signal",
    "t1_from_fit",
    "look_locker_parameters",
    "T1Fit",
    "fit_t1",
    "scattered_fit",
]

# ---------------------------------------------------------------------------------------------------
# TI sets
# ---------------------------------------------------------------------------------------------------

# ShMOLLI 5(1)1(1)1 (Piechnik et al., JCMR 2010;12:69): three inversions at TI0, TI0 + dTI, TI0 + 2 dTI;
# the first is followed by 5 single-shot readouts one RR apart, the 2nd and 3rd by one readout each.
# TI0 about 100 ms and dTI 80 ms give 100, 180, 260, 1100, 2100, 3100, 4100 ms at RR 1000 ms.
SHMOLLI_TI0_MS = 100.0
SHMOLLI_TI_STEP_MS = 80.0

# MOLLI (Messroghli et al., MRM 2004;52:141-146): several Look-Locker experiments whose first TIs are
# shifted by a TI increment; minimum TI about 100 ms and increment 80 ms as in the optimised protocol
# (Messroghli et al., JMRI 2007;26:1081-1086). Schemes: the original 3(3)3(3)5 (11 images) and the
# shorter 5(3)3 (8 images; Kellman & Hansen, JCMR 2014;16:2). Numbers in brackets are recovery beats.
MOLLI_TI0_MS = 100.0
MOLLI_TI_STEP_MS = 80.0
MOLLI_SCHEMES: dict[str, tuple[int, ...]] = {
    "5(3)3": (5, 3),  # images per inversion
    "3(3)3(3)5": (3, 3, 5),
}


def _ti_set(
    images_per_inversion: tuple[int, ...], rr_ms: float, ti0_ms: float, ti_step_ms: float
) -> np.ndarray:
    rr, ti0, step = float(rr_ms), float(ti0_ms), float(ti_step_ms)
    if not (np.isfinite(rr) and rr > 0):
        raise ValueError(f"rr_ms must be a positive number, got {rr_ms!r}")
    if not (np.isfinite(ti0) and ti0 >= 0 and np.isfinite(step) and step >= 0):
        raise ValueError(f"ti0_ms and ti_step_ms must be >= 0, got {ti0_ms!r}, {ti_step_ms!r}")
    tis = [ti0 + j * step + i * rr for j, n in enumerate(images_per_inversion) for i in range(n)]
    return np.sort(np.asarray(tis, dtype=np.float64))


def shmolli_ti_ms(
    rr_ms: float = 1000.0, ti0_ms: float = SHMOLLI_TI0_MS, ti_step_ms: float = SHMOLLI_TI_STEP_MS
) -> np.ndarray:
    """The 7 ShMOLLI inversion times (ms, sorted float64) for an RR interval `rr_ms` (ms)."""
    return _ti_set((5, 1, 1), rr_ms, ti0_ms, ti_step_ms)


def molli_ti_ms(
    rr_ms: float = 1000.0,
    scheme: str = "5(3)3",
    ti0_ms: float = MOLLI_TI0_MS,
    ti_step_ms: float = MOLLI_TI_STEP_MS,
) -> np.ndarray:
    """MOLLI inversion times (ms, sorted float64): `scheme` "5(3)3" (8 images) or "3(3)3(3)5" (11 images)."""
    try:
        per_inversion = MOLLI_SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown MOLLI scheme {scheme!r}; known: {sorted(MOLLI_SCHEMES)}") from None
    return _ti_set(per_inversion, rr_ms, ti0_ms, ti_step_ms)


SHMOLLI_TI_MS: np.ndarray = shmolli_ti_ms()
MOLLI_53_TI_MS: np.ndarray = molli_ti_ms(scheme="5(3)3")
MOLLI_33_35_TI_MS: np.ndarray = molli_ti_ms(scheme="3(3)3(3)5")
for _a in (SHMOLLI_TI_MS, MOLLI_53_TI_MS, MOLLI_33_35_TI_MS):
    _a.flags.writeable = False

# ---------------------------------------------------------------------------------------------------
# Model and Look-Locker correction
# ---------------------------------------------------------------------------------------------------

# Adiabatic inversion pulses used by MOLLI-type sequences invert about 95-97 % of the magnetisation
# (Kellman, Herzka & Hansen, MRM 2014;71:1428-1434).
INVERSION_EFFICIENCY = 0.96

# Extra longitudinal relaxation rate (1/ms) caused by the bSSFP readouts, averaged over the RR interval.
# During bSSFP, 1/T1* = cos^2(a/2)/T1 + sin^2(a/2)/T2 (Schmitt et al., MRM 2004;51:661-667), i.e. an
# extra rate sin^2(a/2) (1/T2 - 1/T1); with a = 35 deg, myocardial T2 = 50 ms and a single-shot readout
# taking about 18 % of a 1000 ms RR this is about 3e-4 /ms, which gives T1*/T1 about 0.8 in myocardium
# at 1.5 T (an assumed effective value, not a measured constant).
READOUT_RATE_PER_MS = 3.0e-4


def ir_signal(
    ti_ms: np.ndarray | float, a: np.ndarray | float, b: np.ndarray | float, t1_star_ms: np.ndarray | float
) -> np.ndarray:
    """Signed three-parameter IR signal A - B exp(-TI/T1*) (TI, T1* in ms); numpy broadcasting.

    Magnitude images are ``np.abs(ir_signal(...))``. To get images (K, ...) from per-pixel maps (...),
    pass ``ti_ms.reshape(-1, 1, 1)`` and maps of shape (H, W).
    """
    ti = np.asarray(ti_ms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) * np.exp(
            -ti / np.asarray(t1_star_ms, dtype=np.float64)
        )


def t1_from_fit(a: np.ndarray | float, b: np.ndarray | float, t1_star_ms: np.ndarray | float) -> np.ndarray:
    """Look-Locker corrected T1 = T1* (B/A - 1) in ms (Deichmann & Haase, JMR 1992).

    NaN where the inputs are not finite, A == 0, T1* <= 0 or the result is not a positive number.
    Invariant under a common sign flip of A and B.
    """
    a_, b_, ts = np.broadcast_arrays(
        np.asarray(a, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        np.asarray(t1_star_ms, dtype=np.float64),
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t1 = ts * (b_ / a_ - 1.0)
        ok = np.isfinite(t1) & (a_ != 0) & (ts > 0) & (t1 > 0)
    return np.where(ok, t1, np.nan)


def look_locker_parameters(
    t1_ms: np.ndarray | float,
    m0: np.ndarray | float = 1.0,
    inversion_efficiency: float = INVERSION_EFFICIENCY,
    readout_rate_per_ms: float = READOUT_RATE_PER_MS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward model for simulation: (A, B, T1*) of the IR signal of a tissue whose *apparent*
    (Look-Locker corrected, i.e. scanner-reported MOLLI/ShMOLLI) T1 is `t1_ms` (ms).

    Derivation (continuous-readout Look-Locker, Deichmann & Haase 1992). Let d be the inversion
    efficiency (Mz(0+) = -d M0) and r the extra relaxation rate of the readout. In this model an
    incomplete inversion makes the Look-Locker corrected value d times the true T1 (one source of MOLLI's
    known underestimation, Kellman & Hansen, JCMR 2014;16:2), so take T1_true = T1 / d. Then

        1/T1* = 1/T1_true + r,        M*  = M0 T1* / T1_true       (readout-driven steady state)
        Mz(TI) = M* - (M* + d M0) exp(-TI/T1*)
        =>  A = d M0 T1*/T1,          B = A + d M0,

    and T1* (B/A - 1) = T1* d M0 / (d M0 T1*/T1) = T1 holds exactly for every d and r, so a fit of the
    simulated images recovers `t1_ms` (the design's T1 values are ShMOLLI-reported values).
    With the defaults T1*/T1 is about 0.96 (fat, 260 ms), 0.80 (myocardium, 960 ms), 0.71 (blood, 1500 ms).
    Signal range: |S(0)| = d M0 at TI = 0 and S -> A < M0 at long TI. NaN outputs where T1 <= 0 or not finite.
    """
    d = float(inversion_efficiency)
    r = float(readout_rate_per_ms)
    if not (0.0 < d <= 1.0):
        raise ValueError(f"inversion_efficiency must be in (0, 1], got {inversion_efficiency!r}")
    if not (np.isfinite(r) and r >= 0.0):
        raise ValueError(f"readout_rate_per_ms must be >= 0, got {readout_rate_per_ms!r}")
    t1, m0_ = np.broadcast_arrays(np.asarray(t1_ms, dtype=np.float64), np.asarray(m0, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        good = np.isfinite(t1) & (t1 > 0)
        t1g = np.where(good, t1, np.nan)
        t1_star = 1.0 / (d / t1g + r)
        a = d * m0_ * t1_star / t1g
        b = a + d * m0_
    return a, b, t1_star


# ---------------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------------


# Above this many distinct per-pixel TI vectors the fit evaluates per-pixel exponentials instead of
# looping over groups of pixels that share their TIs.
_MAX_TI_GROUPS = 64
#: Pixels fitted together when each has its own TIs.
_PER_PIXEL_BLOCK = 2048
#: Pixels per matrix product when ranking the polarity candidates.
_RANK_BLOCK = 2048


@dataclass(frozen=True)
class T1Fit:
    """Result of :func:`fit_t1`; every array has the images' trailing shape.

    `t1_ms`, `t1_star_ms` in ms; `a`, `b` in image units (A > 0 for magnitude data); `residual` is the
    RMS of the fit residual (image units); `null_index` is the number of TI-sorted images whose signal
    is negative in the fit (the polarity-restoration choice for magnitude data), -1 where invalid;
    `r_squared` is the coefficient of determination 1 - RSS / sum (y - mean y)^2 of the fitted data.
    Floats are NaN where the fit is invalid, masked out or the input is not finite.
    """

    t1_ms: np.ndarray
    a: np.ndarray
    b: np.ndarray
    t1_star_ms: np.ndarray
    residual: np.ndarray
    null_index: np.ndarray
    r_squared: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Pixels with a valid fit."""
        return np.isfinite(self.t1_ms)


def _decay(ti: np.ndarray, x: np.ndarray) -> np.ndarray:
    """exp(-TI / T1*) at T1* = exp(x): ti (K, 1) or (K, n), x (n,) -> (K, n), float64.

    The exponential is taken in float32 (about ten times faster than float64 here; relative error
    about 1e-7, far below any fit's noise) and the sums that use it run in float64.
    """
    return np.exp((-ti * np.exp(-x)[None, :]).astype(np.float32)).astype(np.float64)


def _projection(ys: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear least squares of ys (K, n) on [1, -e] (e (K, n)): rss, A, B (model A - B e)."""
    k = ys.shape[0]
    s1 = e.sum(axis=0)
    s2 = np.einsum("kn,kn->n", e, e)
    z1 = ys.sum(axis=0)
    z2 = np.einsum("kn,kn->n", e, ys)
    det = k * s2 - s1 * s1
    det = np.where(det > 1e-12 * k * k, det, np.nan)
    a = (s2 * z1 - s1 * z2) / det
    b = (s1 * z1 - k * z2) / det
    res = ys - (a - b * e)
    rss = np.einsum("kn,kn->n", res, res)
    return np.where(np.isfinite(rss), rss, np.inf), a, b


def _shape_energy(ys: np.ndarray, ti: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(ys . U)^2 at ln T1* = x (n,), U = exp(-TI/T1*) centred and normalised: the part of the
    projection energy that depends on T1* (variable projection, Golub & Pereyra 1973)."""
    e = _decay(ti, x)
    u = e - e.mean(axis=0)
    norm2 = np.einsum("kn,kn->n", u, u)
    w = np.einsum("kn,kn->n", u, ys)
    return np.where(norm2 > 1e-18, w * w / np.where(norm2 > 0, norm2, 1.0), 0.0)


def _refine(ys: np.ndarray, ti: np.ndarray, x0: np.ndarray, dx: float, x_lim: tuple[float, float]) -> np.ndarray:
    """ln T1* maximising the projection energy, from x0 (the grid's parabola, within a small fraction of
    the grid step `dx` of the optimum): a three-point parabolic step on a bracket of dx/20 (noiseless
    data: T1* within 2e-5, T1 within 0.01 ms)."""
    h = 0.05 * dx
    fm, fc, fp = (_shape_energy(ys, ti, np.clip(x0 + s, *x_lim)) for s in (-h, 0.0, h))
    den = fm - 2.0 * fc + fp
    step = np.where(den < 0, 0.5 * h * (fm - fp) / np.where(den < 0, den, -1.0), np.sign(fp - fm) * h)
    return np.clip(x0 + np.clip(step, -h, h), *x_lim)


def _centred_decays(ti: np.ndarray, x_grid: np.ndarray) -> np.ndarray:
    """U = exp(-TI/T1*) centred over the images and normalised, at every grid ln T1*: (G, K, 1) for TIs
    shared by all pixels (ti (K, 1)), (G, K, n) for per-pixel TIs (ti (K, n))."""
    e = np.exp(-ti[None] / np.exp(x_grid)[:, None, None])
    u = e - e.mean(axis=1, keepdims=True)
    return u / np.sqrt(np.maximum((u * u).sum(axis=1, keepdims=True), 1e-300))


def _grid_start(ys: np.ndarray, ti: np.ndarray, x_grid: np.ndarray) -> np.ndarray:
    """ln T1* (n,) of the best grid curve for signed data ys (K, n), refined by a parabola through its
    neighbours. For a fixed T1* the energy of ys on span{1, E} is (sum ys)^2 / K + (ys . U)^2 with U the
    centred, normalised E: a dictionary fit of either sign on the curves U."""
    u = _centred_decays(ti, x_grid)
    return grid_fit(u[..., 0] if ti.shape[1] == 1 else u, ys, x_grid, two_sided=True).p


def _best_nulls(y: np.ndarray, ti: np.ndarray, x_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two polarity candidates p (n,) of largest projection energy over the T1* grid, for
    magnitude data y (K, n): the first p TI-sorted images negated, p = 0 .. K - 1 (p = K, all
    negative, is the global sign flip of p = 0 and is told apart by the sign of the fitted A). For a
    fixed T1* the energy is (sum ys)^2 / K + (ys . U)^2 (U the centred, normalised exp(-TI/T1*)), so
    with TIs shared by all pixels every candidate and grid point comes from one matrix product per
    block of pixels."""
    k, n = y.shape
    signs = np.where(np.arange(k)[None, :] < np.arange(k)[:, None], -1.0, 1.0)  # (P, K)
    u = _centred_decays(ti, x_grid)
    energy = np.empty((k, n), dtype=np.float32)
    shared = (signs[None, :, :] * u[:, None, :, 0]).reshape(-1, k).astype(np.float32) if ti.shape[1] == 1 else None
    for s in range(0, n, _RANK_BLOCK):
        block = y[:, s:s + _RANK_BLOCK].astype(np.float32)
        if shared is not None:
            w = (shared @ block).reshape(x_grid.size, k, -1)  # (G, P, m): the maximum over G runs row-wise
        else:
            w = np.einsum("pk,km,gkm->gpm", signs.astype(np.float32), block, u[..., s:s + _RANK_BLOCK].astype(np.float32))
        energy[:, s:s + _RANK_BLOCK] = np.abs(w, out=w).max(axis=0)
    energy = np.square(energy, dtype=np.float64) + np.square(signs @ y) / k  # (P, n)
    first = np.argmax(energy, axis=0)
    energy[first, np.arange(n)] = -np.inf
    return first, np.argmax(energy, axis=0)


def _fit_block(
    y: np.ndarray, ti: np.ndarray, magnitude: bool, x_grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit y (K, n), sorted by TI along axis 0; ti is (K, 1) (shared) or (K, n). Returns a, b, t1*, rss, p
    of the best polarity candidate and T1 (ms; for magnitude data averaged over the two candidates)."""
    k, n = y.shape
    dx = float(x_grid[1] - x_grid[0])
    x_lim = (float(x_grid[0]) - 2.0, float(x_grid[-1]) + 2.0)
    nulls = _best_nulls(y, ti, x_grid) if magnitude else (np.zeros(n, dtype=np.int64),)
    cands = []
    for p in nulls:
        ys = np.where(np.arange(k)[:, None] < p[None, :], -y, y)
        x = _refine(ys, ti, _grid_start(ys, ti, x_grid), dx, x_lim)
        f, a, b = _projection(ys, _decay(ti, x))
        if magnitude:
            flip = (p == 0) & (a < 0)  # all images negative: null after the last TI
            a, b, p = np.where(flip, -a, a), np.where(flip, -b, b), np.where(flip, k, p)
            physical = (a > 0) & (b > a)
        else:
            p = np.count_nonzero(a[None, :] - b[None, :] * _decay(ti, x) < 0, axis=0)
            physical = b / a > 1.0
        cands.append((a, b, np.exp(x), f, p, physical))
    best = cands[0]
    if len(cands) == 2:  # prefer a physically valid candidate (T1 > 0, A > 0), then the smaller residual
        other = cands[1]
        swap = (other[5] & ~best[5]) | ((other[5] == best[5]) & (other[3] < best[3]))
        best, other = (tuple(np.where(swap, o, b_) for o, b_ in zip(first, second, strict=True))
                       for first, second in ((other, best), (best, other)))
    t1 = t1_from_fit(*best[:3])
    if len(cands) == 2:
        # A sample near the null fits either sign about equally well, and taking the better one biases
        # T1 (the sign follows the noise). Average the two polarities' T1 with their likelihood weights
        # exp(-(RSS_2 - RSS_1) / 2 sigma^2), sigma^2 from the median residual of the pixels fitted
        # together (all pixels sharing their TIs: the slice; model averaging).
        rss_b = best[3][np.isfinite(best[3])]
        sigma2 = max(float(np.median(rss_b)) / max(k - 3, 1), 1e-300) if rss_b.size else 1e-300
        t1_o = t1_from_fit(*other[:3])
        w = np.where(best[5] & other[5] & np.isfinite(t1_o) & np.isfinite(t1),
                     np.exp(-np.clip((other[3] - best[3]) / (2.0 * sigma2), 0.0, 700.0)), 0.0)
        t1 = (t1 + w * np.nan_to_num(t1_o)) / (1.0 + w)
    return (*best[:5], t1)


def fit_t1(
    images: np.ndarray,
    ti_ms: np.ndarray,
    magnitude: bool = True,
    mask: np.ndarray | None = None,
    t1_bounds_ms: tuple[float, float] = (50.0, 5000.0),
    n_grid: int = 64,
) -> T1Fit:
    """Fit S(TI) = A - B exp(-TI/T1*) per pixel and return the Look-Locker corrected T1 (ms).

    images: (K, ...) IR-weighted images, K >= 3, any order of TIs. ti_ms: (K,) inversion times in ms, or
    an array broadcastable to images.shape for per-pixel TIs (fast when all pixels share one TI vector;
    distinct per-pixel vectors are supported but slower).
    magnitude: True for magnitude images: polarity restoration around the smallest TI-sorted sample
    (the first p images negated, p its index or the next; Barral et al., MRM 2010;64:1057-1067, after
    Nekolla et al., J Comput Assist Tomogr 1992;16:327-332); the physically valid (A > 0, B > A), then
    least-squares better candidate is kept and T1 is averaged over the two with likelihood weights.
    False: the images are signed (phase-sensitive, e.g. Xue et al., MRM 2013;69:1408-1420) and fitted
    as they are.
    mask: boolean, broadcastable to the trailing shape; False pixels are not fitted (NaN).
    t1_bounds_ms: T1 outside [lo, hi] is reported as NaN.

    Method (reduced-dimension least squares as in Barral et al. 2010): for a log-spaced grid of n_grid
    T1* values the model is linear in (A, B), so the residual of every T1* follows in closed form for
    all pixels at once (a dictionary fit, :func:`.grid_fit.grid_fit`, one matrix product per block of
    pixels); the grid optimum, refined by a parabola through its neighbours, is refined further by one
    three-point parabolic step of the variable-projection objective (Golub & Pereyra, SIAM J Numer
    Anal 1973;10:413-432) on a bracket of a twentieth of the grid step.
    Noiseless data are fitted to well under 1 ms. Invalid pixels (non-finite input, masked, A = 0,
    T1 <= 0 or outside t1_bounds_ms, e.g. background noise) are NaN: replace them before storing a map.
    ShMOLLI's conditional use of images 6-7 (Piechnik et al. 2010) is not applied: all images are fitted.
    """
    if np.iscomplexobj(images):
        raise ValueError(
            "images must be real: magnitude, or phase-corrected signed data with magnitude=False"
        )
    y_all = np.asarray(images, dtype=np.float64)
    if y_all.ndim < 1:
        raise ValueError("images must have shape (K, ...) with K IR images")
    k = y_all.shape[0]
    if k < 3:
        raise ValueError(f"need at least 3 IR images to fit 3 parameters, got K={k}")
    trailing = y_all.shape[1:]
    n = int(np.prod(trailing, dtype=np.int64))
    lo, hi = (float(v) for v in t1_bounds_ms)
    if not (0.0 <= lo < hi and np.isfinite(hi)):
        raise ValueError(f"t1_bounds_ms must be (lo, hi) with 0 <= lo < hi, got {t1_bounds_ms!r}")
    n_grid = int(n_grid)
    if n_grid < 8:
        raise ValueError(f"n_grid must be >= 8, got {n_grid}")

    ti = np.asarray(ti_ms, dtype=np.float64)
    if ti.ndim == 0 or ti.shape[0] != k:
        raise ValueError(
            f"ti_ms must have K={k} entries along axis 0 to match images {y_all.shape}, got shape {ti.shape}"
        )
    if ti.ndim == 1:
        if not np.all(np.isfinite(ti)):
            raise ValueError(f"ti_ms must be finite, got {ti.tolist()}")
        if np.unique(ti).size < 3:
            raise ValueError(f"need at least 3 distinct inversion times, got {ti.tolist()}")
        ti_flat = ti[:, None]
    else:
        try:
            ti_flat = np.broadcast_to(ti, y_all.shape).reshape(k, n)
        except ValueError:
            raise ValueError(
                f"ti_ms of shape {ti.shape} does not broadcast to images {y_all.shape}"
            ) from None
        if ti_flat.shape[1] > 0 and np.all(ti_flat == ti_flat[:, :1]):
            ti_flat = ti_flat[:, :1]

    y = y_all.reshape(k, n)
    valid = np.all(np.isfinite(y), axis=0) & np.all(np.isfinite(ti_flat), axis=0)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        try:
            m = np.broadcast_to(m, trailing)
        except ValueError:
            raise ValueError(
                f"mask of shape {m.shape} does not broadcast to the image shape {trailing}"
            ) from None
        valid &= m.reshape(n)

    idx = np.flatnonzero(valid)
    yv = y[:, idx]
    if ti_flat.shape[1] == 1:
        order = np.argsort(ti_flat[:, 0], kind="stable")
        yv = yv[order]
        tiv = ti_flat[order]
    else:
        tiv = ti_flat[:, idx]
        order = np.argsort(tiv, axis=0, kind="stable")
        yv = np.take_along_axis(yv, order, axis=0)
        tiv = np.take_along_axis(tiv, order, axis=0)

    x_grid = np.linspace(np.log(max(0.2 * lo, 5.0)), np.log(hi), n_grid)
    nv = idx.size
    a = np.full(nv, np.nan)
    b = np.full(nv, np.nan)
    t1s = np.full(nv, np.nan)
    t1 = np.full(nv, np.nan)
    rss = np.full(nv, np.nan)
    pnull = np.full(nv, -1, dtype=np.int64)
    if tiv.shape[1] == 1 or nv == 0:
        groups = [(np.arange(nv), tiv[:, :1] if nv else tiv)]
    else:  # per-pixel TIs: pixels sharing one TI vector (e.g. one slice) are fitted together
        uniq, inverse = np.unique(tiv, axis=1, return_inverse=True)
        inverse = inverse.reshape(-1)
        if uniq.shape[1] <= _MAX_TI_GROUPS:
            groups = [(np.flatnonzero(inverse == j), uniq[:, j : j + 1]) for j in range(uniq.shape[1])]
        else:  # blocks of pixels with their own TIs (their curves take memory per pixel)
            groups = [(np.arange(s, min(s + _PER_PIXEL_BLOCK, nv)), None) for s in range(0, nv, _PER_PIXEL_BLOCK)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for members, ti_shared in groups:
            if members.size:
                ti_c = tiv[:, members] if ti_shared is None else ti_shared
                a[members], b[members], t1s[members], rss[members], pnull[members], t1[members] = _fit_block(
                    yv[:, members], ti_c, magnitude, x_grid
                )
        r2 = 1.0 - rss / np.sum((yv - yv.mean(axis=0)) ** 2, axis=0)
        good = np.isfinite(t1) & (t1 >= lo) & (t1 <= hi) & np.isfinite(rss)
        if magnitude:
            good &= a > 0

    return scattered_fit(n, trailing, idx[good], good, t1, a, b, t1s, np.sqrt(rss / k), pnull, r2)


def scattered_fit(n: int, trailing: tuple[int, ...], where: np.ndarray, good: np.ndarray, t1, a, b, t1_star,
                  residual, null_index, r_squared) -> T1Fit:
    """A :class:`T1Fit` of `trailing` shape from per-fitted-pixel values: those where `good` go to the
    flat pixel indices `where` (of `n`), every other pixel is NaN (-1 for `null_index`)."""

    def scatter(values: np.ndarray, fill, dtype) -> np.ndarray:
        out = np.full(n, fill, dtype=dtype)
        out[where] = values[good]
        return out.reshape(trailing)

    return T1Fit(
        t1_ms=scatter(t1, np.nan, np.float64),
        a=scatter(a, np.nan, np.float64),
        b=scatter(b, np.nan, np.float64),
        t1_star_ms=scatter(t1_star, np.nan, np.float64),
        residual=scatter(residual, np.nan, np.float64),
        null_index=scatter(null_index, -1, np.int64),
        r_squared=scatter(r_squared, np.nan, np.float64),
    )
