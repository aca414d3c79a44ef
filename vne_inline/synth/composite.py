"""Painter's partial-volume compositing of soft-edged structures into label fractions."""

from __future__ import annotations

import numpy as np

from vne_inline.synth.labels import N_LABELS, Label

__all__ = ["Layers"]


class Layers:
    """Label fractions (L, N) of N points built front to back: a structure painted earlier covers later
    ones (label-major, so that painting one label touches contiguous memory).

    `paint(label, coverage)` takes the structure's solid coverage (0..1) at each point; the label gets
    `coverage * rest` and `rest` (what is still uncovered) shrinks. Paint contained structures before
    their containers (cavity before wall) so that nested soft edges add up exactly.
    """

    def __init__(self, n: int) -> None:
        self.fractions = np.zeros((N_LABELS, n), dtype=np.float32)
        self.rest = np.ones(n, dtype=np.float32)

    def paint(self, label: Label, coverage: np.ndarray, idx: np.ndarray | None = None) -> None:
        """Paint `label` with `coverage` at all points, or at the points `idx` (coverage per index)."""
        if idx is None:
            f = coverage * self.rest
            self.fractions[label] += f
            self.rest -= f
        else:
            f = coverage * self.rest[idx]
            self.fractions[label, idx] += f
            self.rest[idx] -= f

    def under(self, background: np.ndarray) -> np.ndarray:
        """These fractions over `background` fractions (L, N) of the same points."""
        return self.fractions + self.rest * background
