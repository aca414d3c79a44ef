"""In-plane translation between two images on the same grid (SimpleITK, Mattes mutual information).

Used by training-data preparation to undo the breath-hold position change between the T1-mapping
and the LGE scan: the LGE, already resampled onto the T1 grid, is registered to the T1 map. The two
contrasts differ (fat is dark on a T1 map and bright on LGE, remote myocardium is grey on one and
nulled on the other), so the metric is mutual information, evaluated inside a disc around the heart.
Search: every translation on a 1 mm grid within ``max_shift_mm`` (exhaustive, so a local optimum
near zero cannot trap it), then regular-step gradient descent from the best grid point for a
sub-millimetre answer (kept only when it stays within the search range).

Convention (ITK's): the registered image is ``moving(p + shift)`` at every point p of the fixed grid,
with x along the columns (the grid's read direction) and y along the rows (its phase direction).
:func:`register_matched` applies it to a matched slice by moving the slice's own grid by
``-shift`` (in patient coordinates) and resampling its image once from there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from vne_inline.core.match import Matched, resample_onto
from vne_inline.geometry import SliceGeometry

__all__ = ["HEART_RADIUS_MM", "MAX_SHIFT_MM", "Shift", "register_matched", "register_translation"]

K = TypeVar("K")

#: Radius (mm) of the disc around the heart centre in which the metric is evaluated.
HEART_RADIUS_MM = 35.0
#: Largest translation searched (mm, along x and along y).
MAX_SHIFT_MM = 6.0
_BINS = 32
_MIN_PIXELS = 200


@dataclass(frozen=True)
class Shift:
    """Translation (mm) along the grid's x (columns) and y (rows); ``metric`` is ITK's Mattes value
    at the answer (negative mutual information: lower is better)."""

    x_mm: float
    y_mm: float
    metric: float


def _image(array: np.ndarray, spacing: tuple[float, float]):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(spacing)
    return image


def _method(mask, sitk):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(_BINS)
    method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def register_translation(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing_mm: tuple[float, float],
    centre_px: tuple[float, float],
    valid: np.ndarray | None = None,
    radius_mm: float = HEART_RADIUS_MM,
    max_shift_mm: float = MAX_SHIFT_MM,
) -> Shift:
    """Translation that best aligns `moving` to `fixed` (both (y, x) on one grid of pixel spacing
    `spacing_mm` = (x, y) mm), judged inside the disc of `radius_mm` around `centre_px` = (row,
    column) where `valid` (moving's coverage) is true. ValueError on non-finite or mismatched input
    or when fewer than 200 pixels can be compared."""
    import SimpleITK as sitk

    fixed, moving = np.asarray(fixed, dtype=np.float64), np.asarray(moving, dtype=np.float64)
    if fixed.ndim != 2 or fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must be 2-D images of one shape")
    valid = np.ones(fixed.shape, bool) if valid is None else np.asarray(valid, bool)
    if not (np.isfinite(fixed).all() and np.isfinite(moving[valid]).all()):
        raise ValueError("images hold NaN or infinite values")
    sx, sy = (float(s) for s in spacing_mm)
    yy, xx = np.indices(fixed.shape)
    region = valid & (((yy - centre_px[0]) * sy) ** 2 + ((xx - centre_px[1]) * sx) ** 2 <= radius_mm**2)
    if region.sum() < _MIN_PIXELS:
        raise ValueError(f"only {int(region.sum())} pixels to compare (need {_MIN_PIXELS})")
    fixed_image = _image(fixed, (sx, sy))
    moving_image = _image(np.where(valid, moving, 0.0), (sx, sy))
    mask = sitk.GetImageFromArray(region.astype(np.uint8))
    mask.SetSpacing((sx, sy))

    steps = int(np.floor(max_shift_mm))
    grid = _method(mask, sitk)
    grid.SetOptimizerAsExhaustive([steps, steps], stepLength=1.0)
    grid.SetInitialTransform(sitk.TranslationTransform(2), inPlace=False)
    coarse = grid.Execute(fixed_image, moving_image).GetParameters()

    fine = _method(mask, sitk)
    fine.SetOptimizerAsRegularStepGradientDescent(learningRate=0.5, minStep=0.01, numberOfIterations=100)
    fine.SetInitialTransform(sitk.TranslationTransform(2, coarse), inPlace=False)
    refined = fine.Execute(fixed_image, moving_image).GetParameters()

    def metric(offset: tuple[float, ...]) -> float:
        method = _method(mask, sitk)
        method.SetInitialTransform(sitk.TranslationTransform(2, offset))
        return float(method.MetricEvaluate(fixed_image, moving_image))

    candidates = [coarse] + ([refined] if max(abs(v) for v in refined) <= max_shift_mm else [])
    value, best = min((metric(c), c) for c in candidates)
    return Shift(float(best[0]), float(best[1]), value)


def register_matched(
    target: SliceGeometry,
    fixed: np.ndarray,
    matched: Matched[K],
    image: np.ndarray,
    centre_px: tuple[float, float],
    max_shift_mm: float = MAX_SHIFT_MM,
) -> tuple[Matched[K], Shift]:
    """Register a slice already matched and resampled onto `target` (``matched``, of ``image`` on its
    own grid) to `fixed` on `target`, then resample ``image`` once more from its source grid moved by
    the shift (one interpolation in all). ValueError as :func:`register_translation` or when the
    moved slice no longer covers the target."""
    shift = register_translation(fixed, matched.resampled.data, target.pixel_spacing, centre_px,
                                 valid=~matched.resampled.outside, max_shift_mm=max_shift_mm)
    moved = matched.match.geometry.translated(-target.in_plane_vector(shift.x_mm, shift.y_mm))
    resampled = resample_onto(target, image, moved)
    return Matched(replace(matched.match, geometry=moved), resampled), shift
