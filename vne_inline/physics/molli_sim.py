"""Bloch simulation of MOLLI-type T1-mapping sampling with single-shot bSSFP readouts (pure numpy).

Simulates, for any number of tissues at once, the longitudinal and transverse magnetisation through
the whole scheme: adiabatic inversions of finite efficiency, every RF pulse and TR of each
single-shot balanced SSFP readout (linear start-up ramp, alternating RF phase, T1 and T2 relaxation
between pulses), free T1 recovery between readouts and during the recovery beats. Each image's signal
is the demodulated transverse magnetisation at the echo of its centre k-space line, so the readout's
own disturbance of the recovery (the reason for the Look-Locker correction and for MOLLI's known
T1 underestimation: Kellman & Hansen, JCMR 2014;16:2; Gai et al., MRM 2013;69:329-336) and incomplete
recovery between inversions are in the samples. The tissue is at rest (fully relaxed) before the
first inversion; on-resonance isochromats, no slice profile, no magnetisation transfer.

Units: T1, T2, TI, RR, TR in ms; flip angles in degrees; signals in units of M0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics.ir_schemes import IRScheme
from vne_inline.physics.t1 import INVERSION_EFFICIENCY

__all__ = ["Readout", "FIELD_READOUTS", "readout_for_field", "simulate_samples"]


@dataclass(frozen=True)
class Readout:
    """Single-shot bSSFP readout: nominal flip (deg), TR (ms), linearly ramped start-up pulses, phase
    encode lines (linear order) with the centre line at `centre_line`, relative B1 (actual/nominal flip)."""

    flip_deg: float = 35.0
    tr_ms: float = 2.7
    n_ramp: int = 5
    n_lines: int = 66
    centre_line: int = 28
    b1: float = 1.0

    @property
    def centre_offset_ms(self) -> float:
        """Time from the first RF pulse to the echo of the centre line (ms)."""
        return (self.n_ramp + self.centre_line + 0.5) * self.tr_ms

    def flips_rad(self) -> np.ndarray:
        """Signed flip angle of every pulse (rad): ramp alpha (i+1)/(n_ramp+1), then alpha; alternating phase."""
        n = self.n_ramp + self.n_lines
        scale = np.minimum((np.arange(n) + 1.0) / (self.n_ramp + 1.0), 1.0)
        return np.deg2rad(self.flip_deg * self.b1) * scale * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


# Typical MOLLI/ShMOLLI readouts (flip 35 deg, TR about 2.7 ms, 5 ramp pulses, about 66 lines with
# parallel imaging and partial Fourier: Messroghli et al., MRM 2004; Kellman & Hansen, JCMR 2014).
# At 3 T the transmit field over the heart is lower than nominal, about 0.8-0.9 (Sung & Nayak,
# JMRI 2008;27:643-648): B1 0.85 here, and a slightly shorter TR for the higher gradient duty.
FIELD_READOUTS: dict[float, Readout] = {
    1.5: Readout(),
    3.0: Readout(tr_ms=2.6, b1=0.85),
}


def readout_for_field(field_t: float) -> Readout:
    """The typical readout at 1.5 or 3 T (ValueError otherwise)."""
    try:
        return FIELD_READOUTS[float(field_t)]
    except KeyError:
        raise ValueError(f"field_t must be one of {sorted(FIELD_READOUTS)}, got {field_t!r}") from None


def _relax(m: np.ndarray, dt: float, t1: np.ndarray, t2: np.ndarray) -> None:
    """Free relaxation over dt (ms) in place; m (3, n) = (Mx, My, Mz) in units of M0."""
    e2 = np.exp(-dt / t2)
    m[0] *= e2
    m[1] *= e2
    m[2] = 1.0 - (1.0 - m[2]) * np.exp(-dt / t1)


def _readout(m: np.ndarray, readout: Readout, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """Play one readout on m (3, n) in place; returns the centre line's demodulated echo signal (n,)."""
    tr = readout.tr_ms
    e1, e2 = np.exp(-0.5 * tr / t1), np.exp(-0.5 * tr / t2)
    signal = None
    for i, theta in enumerate(readout.flips_rad()):
        c, s = np.cos(theta), np.sin(theta)
        my = m[1] * c + m[2] * s
        m[2] = m[2] * c - m[1] * s
        m[1] = my
        for half in range(2):  # relaxation to the echo (TE = TR/2), then to the next pulse
            m[0] *= e2
            m[1] *= e2
            m[2] = 1.0 - (1.0 - m[2]) * e1
            if half == 0 and i == readout.n_ramp + readout.centre_line:
                signal = (1.0 if i % 2 == 0 else -1.0) * m[1]
    m[0] = 0.0  # spoiled after the shot
    m[1] = 0.0
    return signal


def simulate_samples(
    t1_ms: np.ndarray | float,
    t2_ms: np.ndarray | float,
    scheme: IRScheme,
    rr_ms: float = 1000.0,
    field_t: float = 1.5,
    readout: Readout | None = None,
    inversion_efficiency: float = INVERSION_EFFICIENCY,
    full_recovery: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Signals of `scheme` for tissues with true `t1_ms`, `t2_ms` (broadcast to one shape S).

    Returns (TI (K,) ms in acquisition order, signed signal (K, *S) in units of M0): TI is the time from
    the inversion to the centre line's echo, as scanners report it. `readout` defaults to the typical
    one at `field_t` (1.5 or 3 T). `full_recovery` rests the tissue to equilibrium before every
    inversion (the ideal, fully recovered version of the same sampling). Magnitude images are
    ``abs(signal)``; a phase-sensitive reconstruction keeps the sign.
    """
    ro = readout or readout_for_field(field_t)
    d = float(inversion_efficiency)
    if not 0.0 < d <= 1.0:
        raise ValueError(f"inversion_efficiency must be in (0, 1], got {inversion_efficiency!r}")
    t1, t2 = np.broadcast_arrays(np.asarray(t1_ms, dtype=np.float64), np.asarray(t2_ms, dtype=np.float64))
    if not (np.all(np.isfinite(t1)) and np.all(t1 > 0) and np.all(np.isfinite(t2)) and np.all(t2 > 0)):
        raise ValueError("t1_ms and t2_ms must be positive and finite")
    shape = t1.shape
    t1, t2 = t1.reshape(-1), t2.reshape(-1)
    ti = scheme.acquisition_ti_ms(rr_ms)
    first = scheme.first_ti_ms()
    if first[0] < ro.centre_offset_ms:
        raise ValueError(f"minimum TI {first[0]:.0f} ms is shorter than the readout's {ro.centre_offset_ms:.0f} ms to centre")
    # Event times (ms): the readouts sit at one cardiac phase (centre echo at beat * RR + TI0), each
    # inversion precedes its first readout by that inversion's first TI.
    beats, inversions = [], []
    beat = 0
    for j, n in enumerate(scheme.images):
        inversions.append(beat * rr_ms + first[0] - first[j])
        beats.extend(range(beat, beat + n))
        beat += n + (scheme.recovery_beats[j] if j < len(scheme.recovery_beats) else 0)
    centres = np.asarray(beats, dtype=np.float64) * rr_ms + first[0]
    starts = centres - ro.centre_offset_ms
    duration = (ro.n_ramp + ro.n_lines) * ro.tr_ms
    events = sorted([(t, "inv", j) for j, t in enumerate(inversions)] + [(t, "ro", k) for k, t in enumerate(starts)])
    m = np.zeros((3, t1.size))
    m[2] = 1.0
    now = min(inversions)
    out = np.empty((ti.size, t1.size))
    for t, kind, idx in events:
        if t < now - 1e-9:
            raise ValueError(f"scheme {scheme.name} at RR {rr_ms:.0f} ms overlaps an inversion with a readout")
        _relax(m, t - now, t1, t2)
        if kind == "inv":
            if full_recovery:
                m[:] = 0.0
                m[2] = 1.0
            m[0] = m[1] = 0.0
            m[2] *= -d
            now = t
        else:
            out[idx] = _readout(m, ro, t1, t2)
            now = t + duration
    return ti, out.reshape((ti.size, *shape))
