"""T1 map from the IR-weighted images of a MOLLI-type scan, as the scanner sends them (pure numpy).

:func:`fit_t1_map` takes the images in the order they were sent with their TIs, works out the
inversions (:mod:`.ir_schemes`), restores the signal polarity (from the phase images where given,
else by trying the sign flip at every sample position in TI order) and fits:

* MOLLI (3 or more recovery beats): the standard three-parameter fit of all images with the
  Look-Locker correction (:func:`.t1.fit_t1`; Messroghli et al., MRM 2004;52:141-146), i.e. the
  MOLLI T1 the scanners report, including MOLLI's known dependence on heart rate at long T1.
* ShMOLLI-type sampling (one recovery beat): the recovery-model fit (:mod:`.t1_recovery`), which uses
  every image and models the incomplete recovery before the later inversions, in two passes: the
  three-parameter fit gives the slice's readout rate (the median of 1/T1* - d/T1 over its well-fitted
  pixels, :func:`.t1_recovery.readout_rate`), then every pixel is fitted again with that rate fixed
  (two parameters, :func:`.t1_recovery.fit_t1_fixed_rate`), which lowers the noise where the samples
  barely constrain T1* (blood, long T1). This is not ShMOLLI's own conditional fit; it estimates the
  same quantity, the Look-Locker corrected T1 of a fully recovered experiment.
* TIs in TI order with no scheme named (acquisition order unknown): the standard fit of all images.

Each map comes with R^2, the RMS residual and a mask of invalid pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics.ir_schemes import (
    SCHEMES,
    IRScheme,
    estimate_rr_ms,
    inversion_groups,
    scheme_for_groups,
)
from vne_inline.physics.t1 import fit_t1
from vne_inline.physics.t1_recovery import fit_t1_fixed_rate, fit_t1_recovery, readout_rate

__all__ = ["T1Map", "METHODS", "fit_t1_map", "signal_mask", "signed_from_phase", "resolve_scheme"]

METHODS = ("auto", "standard", "recovery", "recovery-3p")

#: Pixels whose brightest IR image is below this fraction of the image's 99th percentile are not fitted
#: (air, most of the lung): they would give noise-driven T1 values. The synthetic exams' maps use the
#: same fraction, so fitted maps and theirs cover the same pixels.
SIGNAL_FRACTION = 0.12
#: Pixels of the three-parameter pass that finds a slice's readout rate (spread over the slice).
RATE_SAMPLE_PIXELS = 4096


@dataclass(frozen=True)
class T1Map:
    """A fitted T1 map. `t1_ms` float32 (ms), 0 where invalid; `r_squared` and `residual` (RMS, image
    units) float32, 0 where invalid; `invalid` bool (not fitted, fit failed, outside the T1 bounds or
    R^2 below the minimum); `method` names the fit (for ImageComments); `scheme` the sampling found."""

    t1_ms: np.ndarray
    r_squared: np.ndarray
    residual: np.ndarray
    invalid: np.ndarray
    method: str
    scheme: str | None

    @property
    def comment(self) -> str:
        """Image comment naming the fit."""
        return f"T1 map fitted by vne-inline: {self.method}"


def resolve_scheme(scheme: str | IRScheme | None) -> IRScheme | None:
    """A scheme from its name (``shmolli``, ``molli-533``, ``molli-3335``), None for auto."""
    if scheme is None or isinstance(scheme, IRScheme):
        return scheme
    key = str(scheme).strip().lower()
    if key in ("", "auto"):
        return None
    if key not in SCHEMES:
        raise ValueError(f"unknown T1 sampling scheme {scheme!r}; known: auto, {', '.join(SCHEMES)}")
    return SCHEMES[key]


def signal_mask(images: np.ndarray, fraction: float = SIGNAL_FRACTION) -> np.ndarray:
    """Pixels worth fitting: brightest IR image above `fraction` of its 99th percentile over the image."""
    brightest = np.max(np.abs(np.asarray(images, dtype=np.float64)), axis=0)
    finite = np.isfinite(brightest)
    if not finite.any():
        return finite
    return finite & (brightest > fraction * float(np.percentile(brightest[finite], 99)))


def signed_from_phase(magnitude: np.ndarray, phase_rad: np.ndarray, ti_ms: np.ndarray) -> np.ndarray:
    """Phase-sensitive polarity restoration (Kellman et al., MRM 2002;47:372-383; for T1 mapping Xue
    et al., MRM 2013;69:1408-1420): the image with the longest TI is fully recovered (positive), so each
    image's sign is that of cos(phase - phase of the longest-TI image), pixel by pixel."""
    mag = np.asarray(magnitude, dtype=np.float64)
    ph = np.asarray(phase_rad, dtype=np.float64)
    if ph.shape != mag.shape:
        raise ValueError(f"phase images {ph.shape} do not match the magnitude images {mag.shape}")
    ref = ph[int(np.argmax(np.asarray(ti_ms)))]
    return mag * np.where(np.cos(ph - ref) < 0, -1.0, 1.0)


def _rate_sample(y: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Images (K, m) of at most :data:`RATE_SAMPLE_PIXELS` pixels spread evenly over the fitted ones: the
    three-parameter pass that finds the slice's readout rate needs no more."""
    k, trailing = y.shape[0], y.shape[1:]
    flat = y.reshape(k, -1)
    where = np.arange(flat.shape[1]) if mask is None else np.flatnonzero(np.broadcast_to(np.asarray(mask, bool), trailing))
    step = max(1, -(-where.size // RATE_SAMPLE_PIXELS))
    return flat[:, where[::step]]


def _acquisition_order(ti: np.ndarray, scheme: IRScheme | None) -> tuple[np.ndarray, np.ndarray]:
    """(permutation into acquisition order, inversion index per image in that order)."""
    k = ti.size
    groups = inversion_groups(ti)
    if scheme is None:
        return np.arange(k), groups
    if scheme.n_images != k:
        raise ValueError(f"{scheme.name} has {scheme.n_images} images, got {k}")
    if np.array_equal(groups, scheme.groups()):
        return np.arange(k), groups
    if np.all(np.diff(ti) > 0):  # sent in TI order: the ranks of the scheme's own TIs give the inversions
        nominal_rank = np.argsort(np.argsort(scheme.acquisition_ti_ms(), kind="stable"), kind="stable")
        return nominal_rank, scheme.groups()
    raise ValueError(f"the TIs {np.round(ti).tolist()} are neither in {scheme.name}'s acquisition order nor in TI order")


def fit_t1_map(
    images: np.ndarray,
    ti_ms: np.ndarray,
    phase_rad: np.ndarray | None = None,
    scheme: str | IRScheme | None = None,
    method: str = "auto",
    rr_ms: float | None = None,
    mask: np.ndarray | str | None = "auto",
    t1_bounds_ms: tuple[float, float] = (50.0, 5000.0),
    min_r_squared: float = 0.0,
) -> T1Map:
    """Fit the T1 map of one slice.

    images (K, ...) magnitude IR images (complex images: magnitude and phase are taken from them) in the
    order sent; ti_ms (K,) their inversion times (ms). phase_rad: optional phase images (K, ...) for
    phase-sensitive polarity restoration. scheme: None/"auto" (inversions from the order of the TIs)
    or a name of :data:`~.ir_schemes.SCHEMES`; needed for the recovery model when the images come in
    TI order. method: "auto" (recovery model for ShMOLLI-type sampling, standard otherwise), "standard"
    (three-parameter fit of all images), "recovery" (the recovery model in two passes, the readout rate
    of the slice fixed in the second) or "recovery-3p" (its first pass only: three parameters per
    pixel). rr_ms: the RR interval for the gaps between inversions (default: from the TIs). mask: "auto"
    (:func:`signal_mask`), a boolean array or None (all pixels). Pixels with R^2 below `min_r_squared`
    are marked invalid. The pixels of a slice are fitted together, so the fit of a pixel does not
    depend on how the slice is divided.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    y = np.asarray(images)
    if np.iscomplexobj(y):
        if phase_rad is None:
            phase_rad = np.angle(y)
        y = np.abs(y)
    y = y.astype(np.float64)
    ti = np.asarray(ti_ms, dtype=np.float64).reshape(-1)
    if y.ndim < 2 or y.shape[0] != ti.size:
        raise ValueError(f"images must be (K, ...) with one TI each: images {y.shape}, {ti.size} TIs")
    if not np.all(np.isfinite(ti)):
        raise ValueError(f"TIs must be finite, got {ti.tolist()}")
    order, groups = _acquisition_order(ti, resolve_scheme(scheme))
    y, ti = y[order], ti[order]
    known = resolve_scheme(scheme) or scheme_for_groups(groups)
    magnitude = phase_rad is None
    if not magnitude:
        y = signed_from_phase(y, np.asarray(phase_rad)[order], ti)
    if isinstance(mask, str):
        if mask != "auto":
            raise ValueError(f"mask must be 'auto', None or a boolean array, got {mask!r}")
        mask = signal_mask(y)
    if method == "auto":
        method = "recovery" if known is not None and min(known.recovery_beats, default=3) < 2 else "standard"
    polarity = "phase-sensitive polarity" if not magnitude else "magnitude, polarity restored by sign-flip search"
    where = f"{known.name}, " if known is not None else ""
    if method in ("recovery", "recovery-3p"):
        if known is None or known.images != tuple(np.bincount(groups)):
            raise ValueError("the recovery-model fit needs a known sampling scheme (name it, or send the "
                             "images in acquisition order)")
        rr = float(rr_ms) if rr_ms is not None else estimate_rr_ms(ti, groups)
        if rr is None or not rr > 0:
            raise ValueError("cannot tell the RR interval from the TIs; give rr_ms")
        firsts = np.array([ti[groups == j].min() for j in range(groups.max() + 1)])
        gaps = known.gaps_ms(firsts, rr)
        three = lambda yp, mp: fit_t1_recovery(yp, ti, groups, gaps, magnitude, mp, t1_bounds_ms)  # noqa: E731
        rate = readout_rate(three(_rate_sample(y, mask), None)) if method == "recovery" else None
        if rate is not None:
            fit = fit_t1_fixed_rate(y, ti, groups, gaps, rate, magnitude, mask, t1_bounds_ms)
            name = (f"recovery-model fit with Look-Locker correction, readout rate of the slice "
                    f"({1000 * rate:.2f}/s) fixed ({where}{ti.size} images, {polarity})")
        else:
            fit = three(y, mask)
            name = f"recovery-model three-parameter fit with Look-Locker correction ({where}{ti.size} images, {polarity})"
    else:
        fit = fit_t1(y, ti, magnitude, mask, t1_bounds_ms)
        name = f"three-parameter fit with Look-Locker correction ({where}{ti.size} images, {polarity})"
    invalid = ~fit.valid
    with np.errstate(invalid="ignore"):
        invalid |= ~(fit.r_squared >= min_r_squared)

    def clean(values: np.ndarray) -> np.ndarray:
        return np.where(invalid, 0.0, values).astype(np.float32)

    return T1Map(clean(fit.t1_ms), clean(fit.r_squared), clean(fit.residual), invalid, name,
                 None if known is None else known.name)
