"""T1-mapping sampling schemes in acquisition order, with the incomplete recovery between inversions
(pure numpy).

A MOLLI-type scheme is a series of Look-Locker experiments: each inversion is followed by a train of
single-shot readouts one RR interval apart, then by a few recovery beats without readout, then by the
next inversion, whose first readout is shifted by a TI increment (Messroghli et al., MRM
2004;52:141-146). The schemes:

- ``shmolli``: ShMOLLI 5(1)1(1)1, 7 images (Piechnik et al., JCMR 2010;12:69); one recovery beat
  before the 2nd and 3rd inversions.
- ``molli-533``: MOLLI 5(3)3, 8 images (Kellman & Hansen, JCMR 2014;16:2).
- ``molli-3335``: the original MOLLI 3(3)3(3)5, 11 images (Messroghli 2004).

Images are sent in acquisition order (all readouts of the first inversion, then the second, ...),
not TI order. The magnetisation before a later inversion has not fully recovered: with T1 long
against the recovery period the later images start from a smaller Mz, which is why a single
three-parameter curve does not hold for them (Kellman & Hansen 2014).

Signal model: the continuous-readout Look-Locker approximation of `physics.t1.look_locker_parameters`
(T1_true = T1 / d for inversion efficiency d, 1/T1* = 1/T1_true + r while the readout train runs),
extended piecewise: during a train Mz relaxes towards M* = M0 T1*/T1_true with T1*; from the end of a
train (its last readout) to the next inversion, towards M0 with T1_true; an inversion maps Mz to
-d Mz. With full recovery before every inversion this reduces exactly to the three-parameter model.
The readout rate r scales with the heart rate (one readout of fixed duration per beat): r = r_1000
(1000 ms / RR). Units: ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics.grid_fit import grid_fit
from vne_inline.physics.ir_schemes import SCHEME_LABELS, SCHEMES
from vne_inline.physics.t1 import INVERSION_EFFICIENCY, MOLLI_TI0_MS, MOLLI_TI_STEP_MS, READOUT_RATE_PER_MS

__all__ = ["SCHEMES", "SCHEME_LABELS", "IRSampling", "sampling", "scheme_signals", "scheme_from_ti", "fit_scheme_t1"]


@dataclass(frozen=True)
class IRSampling:
    """The images of one scheme at one RR interval, in acquisition order.

    `ti_ms` (K,): inversion time of each image; `inversion` (K,): which inversion (0, 1, ...) it follows;
    `inversion_ms` (n_inv,): time of each inversion and `end_ms` (n_inv,): time of each train's last
    readout, on one clock starting at the first inversion.
    """

    scheme: str
    rr_ms: float
    ti_ms: np.ndarray
    inversion: np.ndarray
    inversion_ms: np.ndarray
    end_ms: np.ndarray


def sampling(scheme: str, rr_ms: float, ti0_ms: float = MOLLI_TI0_MS, ti_step_ms: float = MOLLI_TI_STEP_MS) -> IRSampling:
    """The acquisition-order TIs (ms) of `scheme` (a key of SCHEMES) at RR `rr_ms` (ms)."""
    try:
        s = SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown T1 scheme {scheme!r}; known: {sorted(SCHEMES)}") from None
    rr = float(rr_ms)
    ti = s.acquisition_ti_ms(rr, ti0_ms, ti_step_ms)  # ValueError for a bad RR or TI
    # heartbeat of each inversion's first readout: the readouts and recovery beats before it
    first_beat = np.concatenate([[0], np.cumsum(np.add(s.images[:-1], s.recovery_beats))])
    t_inv = first_beat * rr - s.first_ti_ms(ti0_ms, ti_step_ms)
    t_end = (first_beat + np.asarray(s.images) - 1) * rr
    return IRSampling(scheme, rr, ti, s.groups(), t_inv - t_inv[0], t_end - t_inv[0])


def scheme_signals(
    t1_ms: np.ndarray | float,
    m0: np.ndarray | float,
    s: IRSampling,
    inversion_efficiency: float = INVERSION_EFFICIENCY,
    readout_rate_per_ms: float = READOUT_RATE_PER_MS,
) -> np.ndarray:
    """Signed longitudinal signals (..., K) of tissues of apparent T1 `t1_ms` (ms) and proton density
    `m0`, in acquisition order (module docstring). NaN where T1 is not positive and finite."""
    d = float(inversion_efficiency)
    r = float(readout_rate_per_ms) * 1000.0 / s.rr_ms
    t1, m0_ = np.broadcast_arrays(np.asarray(t1_ms, dtype=np.float64), np.asarray(m0, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1_true = np.where(np.isfinite(t1) & (t1 > 0), t1 / d, np.nan)
        t1_star = 1.0 / (1.0 / t1_true + r)
        m_star = m0_ * t1_star / t1_true
    out = np.empty((*t1.shape, len(s.ti_ms)), dtype=np.float64)
    mz = m0_.copy()  # fully relaxed before the first inversion
    for j, t_inv in enumerate(s.inversion_ms):
        start = -d * mz
        sel = np.flatnonzero(s.inversion == j)
        for k in sel:
            out[..., k] = m_star - (m_star - start) * np.exp(-s.ti_ms[k] / t1_star)
        if j + 1 < len(s.inversion_ms):
            at_end = m_star - (m_star - start) * np.exp(-(s.end_ms[j] - t_inv) / t1_star)
            gap = s.inversion_ms[j + 1] - s.end_ms[j]
            mz = m0_ - (m0_ - at_end) * np.exp(-gap / t1_true)
    return out


def scheme_from_ti(n_images: int) -> str | None:
    """The scheme whose image count is `n_images` (7 ShMOLLI, 8 MOLLI 5(3)3, 11 MOLLI 3(3)3(3)5), or None."""
    return next((name for name, s in SCHEMES.items() if s.n_images == n_images), None)


def fit_scheme_t1(
    images: np.ndarray, s: IRSampling, mask: np.ndarray | None = None, t1_range_ms: tuple[float, float] = (100.0, 4000.0),
    n_grid: int = 128,
) -> np.ndarray:
    """Model-based T1 (ms) from magnitude images (K, ...) in `s`'s acquisition order: the piecewise
    model of :func:`scheme_signals` (incomplete recovery included) fitted per pixel for T1 and M0
    (least squares on the magnitudes; M0 is linear, T1 found on a log grid and refined by a parabola
    through the grid minimum). Model-based fitting of MOLLI-type data with the recovery between
    inversions simulated follows Marty et al., PLoS One 2018;13:e0190321 (Bloch-equation MOLLI
    reconstruction). NaN where masked out, at a grid end, or for all-zero pixels.
    """
    y = np.asarray(images, dtype=np.float64)
    if y.ndim < 1 or y.shape[0] != len(s.ti_ms):
        raise ValueError(f"need {len(s.ti_ms)} images for {s.scheme}, got shape {y.shape}")
    shape = y.shape[1:]
    flat = y.reshape(len(s.ti_ms), -1)
    keep = np.ones(flat.shape[1], bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), shape).ravel()
    log_grid = np.linspace(np.log(t1_range_ms[0]), np.log(t1_range_ms[1]), n_grid)
    out = np.full(flat.shape[1], np.nan)
    idx = np.flatnonzero(keep & np.isfinite(flat).all(axis=0) & (flat.max(axis=0) > 0))
    if idx.size:
        fit = grid_fit(np.abs(scheme_signals(np.exp(log_grid), 1.0, s)), flat[:, idx], log_grid)
        out[idx] = np.where(fit.inner, np.exp(fit.p), np.nan)
    return out.reshape(shape)
