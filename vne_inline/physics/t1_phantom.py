"""A T1 tube phantom under Bloch-simulated MOLLI-type sampling (pure numpy): known answers for the fits.

Tubes of true T1 from 200 to 2500 ms (T2 = T1/10 within 40-250 ms, as in agarose/NiCl2 phantoms of the
T1MES kind: Captur et al., JCMR 2016;18:58), simulated with :func:`.molli_sim.simulate_samples`
(readout, inversion efficiency and incomplete recovery included), complex Gaussian noise, magnitude
images. The reference for each tube is the apparent T1 that the scheme's standard fit gives on
noise-free samples:

* MOLLI: the three-parameter fit with Look-Locker correction of all images of the same sampling
  (what MOLLI maps report, incomplete recovery at long T1 included);
* ShMOLLI-type: the same fit of the same sampling with full recovery before every inversion (the
  quantity ShMOLLI's sampling is designed to estimate: Piechnik et al., JCMR 2010;12:69).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics.ir_schemes import IRScheme
from vne_inline.physics.molli_sim import simulate_samples
from vne_inline.physics.t1 import fit_t1
from vne_inline.physics.t1_mapping import fit_t1_map

__all__ = ["TUBE_T1_MS", "tube_t2_ms", "TubeResult", "reference_t1_ms", "tube_images", "run_tubes",
           "markdown_table", "NOISE_SD"]

TUBE_T1_MS = np.array([200.0, 300.0, 400.0, 500.0, 700.0, 900.0, 1100.0, 1300.0, 1500.0, 1700.0, 2000.0, 2250.0, 2500.0])

#: Noise SD (units of M0) of the real and imaginary channels: the fully recovered images have an SNR of
#: about 120, as in a tube-phantom scan (in-vivo myocardium is nearer 60: twice this SD).
NOISE_SD = 0.002


def tube_t2_ms(t1_ms: np.ndarray) -> np.ndarray:
    """T2 (ms) of the phantom's tubes: T1/10 within 40-250 ms."""
    return np.clip(np.asarray(t1_ms, dtype=np.float64) / 10.0, 40.0, 250.0)


def _full_recovery_reference(scheme: IRScheme) -> bool:
    return min(scheme.recovery_beats, default=3) < 2


def reference_t1_ms(scheme: IRScheme, field_t: float, rr_ms: float, t1_ms: np.ndarray = TUBE_T1_MS) -> np.ndarray:
    """The apparent T1 (ms) of each tube that the scheme's standard fit gives on noise-free samples."""
    ti, signal = simulate_samples(t1_ms, tube_t2_ms(t1_ms), scheme, rr_ms, field_t,
                                  full_recovery=_full_recovery_reference(scheme))
    return fit_t1(signal, ti, magnitude=False, t1_bounds_ms=(1.0, 1e5)).t1_ms


def tube_images(scheme: IRScheme, field_t: float, rr_ms: float, n_pixels: int, rng: np.random.Generator,
                sigma: float = NOISE_SD, t1_ms: np.ndarray = TUBE_T1_MS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TI (K,) in acquisition order, magnitude images (K, tubes, n_pixels), signed images (K, tubes, n_pixels))."""
    ti, signal = simulate_samples(t1_ms, tube_t2_ms(t1_ms), scheme, rr_ms, field_t)
    shape = (*signal.shape, n_pixels)
    noisy = signal[..., None] + rng.normal(0.0, sigma, shape) + 1j * rng.normal(0.0, sigma, shape)
    return ti, np.abs(noisy), noisy.real


@dataclass(frozen=True)
class TubeResult:
    """Per tube: true T1, the reference (apparent) T1, the median fitted T1 and the lowest pixel (ms)."""

    scheme: str
    field_t: float
    t1_true_ms: np.ndarray
    reference_ms: np.ndarray
    median_ms: np.ndarray
    min_ms: np.ndarray
    method: str

    @property
    def error(self) -> np.ndarray:
        """Median error relative to the reference."""
        return self.median_ms / self.reference_ms - 1.0


def run_tubes(scheme: IRScheme, field_t: float, rr_ms: float = 1000.0, n_pixels: int = 100, seed: int = 0,
              signed: bool = False) -> TubeResult:
    """Fit the phantom's noisy magnitude (or signed) images with :func:`fit_t1_map` (no mask)."""
    ti, mag, sig = tube_images(scheme, field_t, rr_ms, n_pixels, np.random.default_rng(seed))
    phase = np.where(sig < 0, np.pi, 0.0) if signed else None
    fit = fit_t1_map(mag, ti, phase_rad=phase, mask=None)
    t1 = np.where(fit.invalid, np.nan, fit.t1_ms)
    with np.errstate(invalid="ignore"):
        return TubeResult(scheme.name, float(field_t), TUBE_T1_MS.copy(), reference_t1_ms(scheme, field_t, rr_ms),
                          np.nanmedian(t1, axis=1), np.nanmin(np.where(fit.invalid, np.inf, t1), axis=1), fit.method)


def markdown_table(results: list[TubeResult]) -> str:
    """One row per tube, two columns (reference, median error) per scheme and field."""
    head = "| true T1 ms | " + " | ".join(f"{r.scheme} {r.field_t:g} T: ref ms / error" for r in results) + " |"
    rows = [head, "|" + "---|" * (len(results) + 1)]
    for i, t1 in enumerate(TUBE_T1_MS):
        cells = [f"{r.reference_ms[i]:.0f} / {100 * r.error[i]:+.1f} %" for r in results]
        rows.append(f"| {t1:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
