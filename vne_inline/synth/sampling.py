"""Partial-volume sampling of the anatomy on the slice planes of one scan.

Each pixel is the mean of `n_sub` sub-slices through the slice thickness (through-plane partial
volume); in plane, structure edges are soft over the pixel size (in-plane partial volume, see
`fields.Edge`), so no in-plane supersampling is needed. The static body is evaluated once; the heart
only in the pixels it can reach (`boxes`), once per cardiac phase, for all slices of the stack in one
vectorised call. Patient movement shifts the anatomy, not the planes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.geometry import SliceGeometry
from vne_inline.synth.anatomy import Anatomy
from vne_inline.synth.fields import Edge
from vne_inline.synth.heart import HeartPoints

__all__ = ["PixelMix", "StackSampler", "SUB_SLICES"]

SUB_SLICES = 2  # samples through an 8 mm slice (4 mm apart; oblique edges are widened, see fields.Edge)
BOX_MARGIN_MM = 6.0  # margin around the end-diastolic heart (atrial stretch, twist)


@dataclass(frozen=True)
class PixelMix:
    """Per-pixel partial-volume mixture: label fractions (L, P) and LV lesion fractions (2, P:
    hyperintense, intermediate; parts of the LV_MYO fraction)."""

    labels: np.ndarray
    lesion: np.ndarray


class StackSampler:
    """The anatomy seen by the planes of one scan, the anatomy moved by `shifts_mm` (one (3,) per slice).

    Points are kept ordered (n_sub, all pixels of all slices), the order `fields.Edge` expects.
    `tight=True` first finds the pixels within reach of the heart at any phase and evaluates the heart
    only there: worth it when many phases follow (cine).
    """

    def __init__(self, anatomy: Anatomy, geometries, shifts_mm, n_sub: int = SUB_SLICES, tight: bool = False) -> None:
        self.anatomy = anatomy
        self.geometries: tuple[SliceGeometry, ...] = tuple(geometries)
        self.n_sub = n_sub
        spacing = {g.pixel_spacing for g in self.geometries}
        if len(spacing) != 1:
            raise ValueError("all planes of a stack must share the pixel spacing")
        self.edge = Edge(float(np.mean(spacing.pop())), n_sub)
        shifts = np.broadcast_to(np.asarray(shifts_mm, dtype=np.float64), (len(self.geometries), 3))
        centres = [g.pixel_centres().reshape(-1, 3) - s for g, s in zip(self.geometries, shifts, strict=True)]
        self.anatomy_points = centres  # pixel centres in anatomy coordinates, per slice
        self.sizes = np.array([c.shape[0] for c in centres])
        offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
        points = np.concatenate(
            [np.concatenate([c + o * g.thickness * g.normal for c, g in zip(centres, self.geometries, strict=True)]) for o in offsets]
        )
        n_px = int(self.sizes.sum())
        static = anatomy.static_layer(points, self.edge).reshape(-1, n_sub, n_px)
        heart = HeartPoints.from_local(anatomy.frame.local(points))
        box = anatomy.heart.near(heart).reshape(n_sub, n_px).any(axis=0)
        if tight and box.any():
            box = self._tight(heart, box)
        self.box = box
        self.heart_points = heart.subset(self._sub_index(box))
        self.static_box = static[:, :, box].reshape(static.shape[0], -1)
        self.static_mean = static.mean(axis=1)

    def _sub_index(self, box: np.ndarray) -> np.ndarray:
        """Indices of the `box` pixels in every sub-slice, sub-slice major."""
        return np.flatnonzero(np.broadcast_to(box, (self.n_sub, box.size)).reshape(-1))

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-slice parts of an array whose last axis runs over all pixels of all slices."""
        return np.split(flat, np.cumsum(self.sizes)[:-1], axis=-1)

    def _tight(self, heart: HeartPoints, box: np.ndarray) -> np.ndarray:
        """The box pixels within reach of the heart at some phase (end-diastolic heart plus a margin)."""
        sel = self._sub_index(box)
        hit = np.zeros(self.n_sub * box.size, bool)
        hit[sel] = self.anatomy.heart.reach(heart.subset(sel), BOX_MARGIN_MM)
        return hit.reshape(self.n_sub, -1).any(axis=0) & box

    # ------------------------------------------------------------------ mixtures
    def static_mixes(self) -> list[PixelMix]:
        """Per slice, the mixture without the heart."""
        return [PixelMix(lab, np.zeros((2, lab.shape[1]), np.float32)) for lab in self._split(self.static_mean)]

    def boxes(self) -> list[np.ndarray]:
        """Per slice, the pixels (flat boolean) where the heart is evaluated."""
        return self._split(self.box)

    def box_mixes(self, phase: float) -> list[PixelMix]:
        """Per slice, the mixture of its box pixels at cardiac `phase` (fraction of RR)."""
        layers, lesion = self.anatomy.heart_layer(self.heart_points, phase, self.edge)
        n_box = int(self.box.sum())
        labels = layers.under(self.static_box).reshape(-1, self.n_sub, n_box).mean(axis=1)
        lesion = lesion.reshape(2, self.n_sub, n_box).mean(axis=1)
        cuts = np.cumsum([b.sum() for b in self.boxes()])[:-1]
        return [PixelMix(lab, les) for lab, les in zip(np.split(labels, cuts, axis=1), np.split(lesion, cuts, axis=1), strict=True)]

    def mixes(self, phase: float) -> list[PixelMix]:
        """Per slice, the mixture of every pixel at cardiac `phase`."""
        out = []
        for static, box, inside in zip(self.static_mixes(), self.boxes(), self.box_mixes(phase), strict=True):
            labels, lesion = static.labels.copy(), static.lesion.copy()
            labels[:, box] = inside.labels
            lesion[:, box] = inside.lesion
            out.append(PixelMix(labels, lesion))
        return out
