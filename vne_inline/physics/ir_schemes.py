"""Sampling schemes of MOLLI-type T1 mapping: inversions, images per inversion, recovery beats, and the
inversion groups of a series of IR images in the order the scanner acquired them (pure numpy).

Units: TI, RR and gaps in ms.

A scheme ``n1(r1)n2(r2)n3`` inverts, reads one single-shot image per heartbeat ``n1`` times, waits
``r1`` heartbeats without readouts, inverts again with its first TI one TI step later, and so on
(MOLLI: Messroghli et al., MRM 2004;52:141-146; 5(3)3: Kellman & Hansen, JCMR 2014;16:2; ShMOLLI
5(1)1(1)1: Piechnik et al., JCMR 2010;12:69). The readouts sit at one cardiac phase, so the images of
one inversion are one RR apart in TI and the scanner sends them inversion after inversion
(design notes §3: acquisition order, not TI order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.physics.t1 import MOLLI_TI0_MS, MOLLI_TI_STEP_MS

__all__ = ["IRScheme", "SCHEMES", "SCHEME_LABELS", "MOLLI_53", "MOLLI_335", "SHMOLLI", "MIN_RR_MS", "inversion_groups",
           "scheme_for_groups", "estimate_rr_ms"]

#: Consecutive images of one inversion are one heartbeat apart: at least this much (200 beats/min).
MIN_RR_MS = 300.0


@dataclass(frozen=True)
class IRScheme:
    """One sampling scheme: `images` per inversion, `recovery_beats` after each inversion but the last,
    first TI `ti0_ms` and the TI step `ti_step_ms` between the inversions' first TIs (ms)."""

    name: str
    images: tuple[int, ...]
    recovery_beats: tuple[int, ...]
    ti0_ms: float = 100.0
    ti_step_ms: float = 80.0

    def __post_init__(self) -> None:
        if len(self.recovery_beats) != len(self.images) - 1 or min(self.images) < 1:
            raise ValueError(f"scheme {self.name}: need one recovery count per gap and >= 1 image per inversion")

    @property
    def n_images(self) -> int:
        return int(sum(self.images))

    def groups(self) -> np.ndarray:
        """Inversion index (0, 1, ...) of every image in acquisition order."""
        return np.repeat(np.arange(len(self.images)), self.images)

    def first_ti_ms(self, ti0_ms: float | None = None, ti_step_ms: float | None = None) -> np.ndarray:
        """First TI of every inversion (ms)."""
        ti0 = self.ti0_ms if ti0_ms is None else float(ti0_ms)
        step = self.ti_step_ms if ti_step_ms is None else float(ti_step_ms)
        return ti0 + step * np.arange(len(self.images))

    def acquisition_ti_ms(self, rr_ms: float = 1000.0, ti0_ms: float | None = None,
                          ti_step_ms: float | None = None) -> np.ndarray:
        """The TIs (ms, float64) in acquisition order at a constant RR interval `rr_ms`."""
        rr = float(rr_ms)
        if not (np.isfinite(rr) and rr > 0):
            raise ValueError(f"rr_ms must be a positive number, got {rr_ms!r}")
        first = self.first_ti_ms(ti0_ms, ti_step_ms)
        if not (np.all(np.isfinite(first)) and first[0] >= 0 and np.all(np.diff(first) >= 0)):
            raise ValueError(f"ti0_ms and ti_step_ms must be >= 0, got {ti0_ms!r}, {ti_step_ms!r}")
        return np.concatenate([first[j] + rr * np.arange(n) for j, n in enumerate(self.images)])

    def gaps_ms(self, first_ti_ms: np.ndarray, rr_ms: float) -> np.ndarray:
        """Time (ms) from each inversion's last readout to the next inversion: the readouts are one RR
        apart, so the gap after inversion j is (r_j + 1) RR - TI_first(j + 1)."""
        r = np.asarray(self.recovery_beats, dtype=np.float64)
        return (r + 1.0) * float(rr_ms) - np.asarray(first_ti_ms, dtype=np.float64)[1:]


#: Known schemes by key (the names `synth --t1-scheme` takes); TI0 100 ms and TI step 80 ms
#: (Messroghli et al., JMRI 2007;26:1081-1086).
SCHEMES: dict[str, IRScheme] = {
    "shmolli": IRScheme("ShMOLLI", (5, 1, 1), (1, 1), MOLLI_TI0_MS, MOLLI_TI_STEP_MS),
    "molli-533": IRScheme("MOLLI 5(3)3", (5, 3), (3,), MOLLI_TI0_MS, MOLLI_TI_STEP_MS),
    "molli-3335": IRScheme("MOLLI 3(3)3(3)5", (3, 3, 5), (3, 3), MOLLI_TI0_MS, MOLLI_TI_STEP_MS),
}
#: Scanner-like sequence names of the schemes.
SCHEME_LABELS = {key: s.name for key, s in SCHEMES.items()}
MOLLI_53, MOLLI_335, SHMOLLI = SCHEMES["molli-533"], SCHEMES["molli-3335"], SCHEMES["shmolli"]


def inversion_groups(ti_ms_in_order: np.ndarray) -> np.ndarray:
    """Inversion index of every image from its TIs in acquisition order: a new inversion starts where
    the TI does not grow by at least :data:`MIN_RR_MS` (the next readout of one inversion comes one
    heartbeat later; a new inversion restarts near the minimum TI or one TI step above the last)."""
    ti = np.asarray(ti_ms_in_order, dtype=np.float64).reshape(-1)
    if ti.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(np.diff(ti) < MIN_RR_MS)]).astype(np.int64)


def scheme_for_groups(groups: np.ndarray) -> IRScheme | None:
    """The known scheme with these images per inversion, or None."""
    sizes = tuple(int(c) for c in np.bincount(np.asarray(groups, dtype=np.int64)))
    return next((s for s in SCHEMES.values() if s.images == sizes), None)


def estimate_rr_ms(ti_ms: np.ndarray, groups: np.ndarray) -> float | None:
    """Median TI difference between consecutive images of one inversion (the RR interval, ms), or None."""
    ti = np.asarray(ti_ms, dtype=np.float64)
    g = np.asarray(groups)
    d = np.diff(ti)[np.diff(g) == 0]
    return float(np.median(d)) if d.size else None
