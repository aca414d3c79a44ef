"""Lesion quantification at threshold fractions (FWHM / FWQM / FWEM and any other).

Method of Zhang et al., Circulation 2021 ("Virtual Native Enhancement", HCM): a lesion threshold
lies a fraction ``f`` of the way from the remote-myocardium mean (``f = 0``) to the LV blood-pool
mean (``f = 1``)::

    threshold = remote_mean + f * (blood_mean - remote_mean)

Lesion pixels are the pixels inside the LV myocardium mask whose intensity is ``>= threshold``
(a pixel exactly at the threshold counts as lesion). For LGE the paper uses FWHM / FWQM / FWEM
(``f = 0.5 / 0.25 / 0.125``, :data:`LGE_FRACTIONS`); for VNE also the adjusted fractions
``0.35 / 0.20 / 0.10`` (:data:`VNE_ADJUSTED_FRACTIONS`).

Units: areas in pixels (``*_px``) and mm^2 (``*_mm2``); burden in % of the LV myocardial area.
Per patient, burden = sum of lesion areas / sum of myocardial areas over all slices
(:func:`patient_burden`), i.e. slices are weighted by their myocardial area, not averaged.

Partial volume: a myocardium pixel on the blood-pool border holds blood too, and at 50 % blood it
reaches the FWHM threshold by itself. Readers contour inside that rim; :func:`inner_myocardium`
leaves out the pixels within :data:`BORDER_MARGIN_MM` of the mask's edge (the report and training
validation use it; the burden functions themselves count every pixel of the mask they are given).

Pure numpy (scipy for the distance transform); masks may be any array that converts to ``bool`` (non-zero = inside); arrays may have
any number of dimensions as long as all shapes agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import distance_transform_edt

__all__ = [
    "BORDER_MARGIN_MM",
    "LGE_FRACTIONS",
    "VNE_ADJUSTED_FRACTIONS",
    "SliceBurden",
    "burdens",
    "dice",
    "inner_myocardium",
    "lesion_mask",
    "patient_burden",
    "roi_mean",
    "slice_burden",
    "threshold",
]

#: Full width at half / quarter / eighth maximum, as fractions from remote (0) to blood (1).
LGE_FRACTIONS: dict[str, float] = {"FWHM": 0.5, "FWQM": 0.25, "FWEM": 0.125}
#: The paper's adjusted fractions for VNE images (same keys as :data:`LGE_FRACTIONS`).
VNE_ADJUSTED_FRACTIONS: dict[str, float] = {"FWHM": 0.35, "FWQM": 0.20, "FWEM": 0.10}
#: Depth (mm) of the partial-volume rim left out by :func:`inner_myocardium`: about half the blur
#: of an LGE acquired at 1.4-1.8 mm pixels, one to two pixels of a 1 mm T1 grid.
BORDER_MARGIN_MM = 1.5


def _as_image(image: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(image)
    if np.iscomplexobj(arr):
        raise ValueError("image must be real-valued (take the magnitude or real part first)")
    return arr.astype(np.float64, copy=False)


def _as_mask(mask: ArrayLike) -> NDArray[np.bool_]:
    return np.asarray(mask).astype(bool, copy=False)


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes must agree: {listed}")


def _check_fraction(fraction: float) -> float:
    f = float(fraction)
    if not math.isfinite(f) or f < 0.0:
        raise ValueError(f"fraction must be finite and >= 0, got {fraction!r}")
    return f


def _check_pixel_area(pixel_area_mm2: float) -> float:
    a = float(pixel_area_mm2)
    if not math.isfinite(a) or a <= 0.0:
        raise ValueError(f"pixel_area_mm2 must be finite and > 0, got {pixel_area_mm2!r}")
    return a


def roi_mean(image: ArrayLike, mask: ArrayLike, name: str = "ROI") -> float:
    """Mean of the finite image pixels inside ``mask``.

    Raises ``ValueError`` if the shapes differ, the ROI is empty, or it holds no finite pixel.
    """
    img, m = _as_image(image), _as_mask(mask)
    _check_shapes(image=img, **{name: m})
    if not m.any():
        raise ValueError(f"{name} is empty")
    values = img[m]
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError(f"{name} has no finite pixel")
    return float(values.mean())


def _threshold_from_means(remote_mean: float, blood_mean: float, fraction: float) -> float:
    return remote_mean + fraction * (blood_mean - remote_mean)


def threshold(image: ArrayLike, remote_mask: ArrayLike, blood_mask: ArrayLike, fraction: float) -> float:
    """Lesion threshold ``remote_mean + fraction * (blood_mean - remote_mean)`` (image units).

    Means are over the finite pixels of each ROI. ``fraction`` must be finite and ``>= 0``;
    values above 1 are allowed (threshold beyond the blood-pool mean) but are unusual. The
    threshold is only meaningful when blood is brighter than remote myocardium (as in LGE/VNE);
    that is not checked. Raises ``ValueError`` for an empty ROI, an ROI with no finite pixel,
    a bad fraction, or mismatched shapes.
    """
    f = _check_fraction(fraction)
    img = _as_image(image)
    remote, blood = _as_mask(remote_mask), _as_mask(blood_mask)
    _check_shapes(image=img, remote_mask=remote, blood_mask=blood)
    return _threshold_from_means(roi_mean(img, remote, "remote ROI"), roi_mean(img, blood, "blood ROI"), f)


def _lesion_at(img: NDArray[np.float64], myo: NDArray[np.bool_], thr: float) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        above = img >= thr  # NaN compares False; +inf would pass, so filter explicitly
    return myo & above & np.isfinite(img)


def lesion_mask(
    image: ArrayLike,
    myo_mask: ArrayLike,
    remote_mask: ArrayLike,
    blood_mask: ArrayLike,
    fraction: float,
) -> NDArray[np.bool_]:
    """Boolean lesion mask: myocardium pixels with intensity ``>= threshold(...)``.

    Non-finite image pixels (NaN, +/-inf) are never lesion. Shapes must agree (``ValueError``).
    """
    img, myo = _as_image(image), _as_mask(myo_mask)
    remote, blood = _as_mask(remote_mask), _as_mask(blood_mask)
    _check_shapes(image=img, myo_mask=myo, remote_mask=remote, blood_mask=blood)
    return _lesion_at(img, myo, threshold(img, remote, blood, fraction))


@dataclass(frozen=True)
class SliceBurden:
    """Lesion burden of one slice at one threshold fraction.

    ``threshold`` is in image units; ``myo_area_px`` / ``lesion_area_px`` are pixel counts;
    ``pixel_area_mm2`` is the area of one pixel in mm^2.
    """

    fraction: float
    threshold: float
    myo_area_px: int
    lesion_area_px: int
    pixel_area_mm2: float = 1.0

    def __post_init__(self) -> None:
        if self.myo_area_px <= 0:
            raise ValueError(f"myo_area_px must be > 0, got {self.myo_area_px}")
        if not 0 <= self.lesion_area_px <= self.myo_area_px:
            raise ValueError(
                f"lesion_area_px must be in [0, myo_area_px={self.myo_area_px}], got {self.lesion_area_px}"
            )
        _check_pixel_area(self.pixel_area_mm2)

    @property
    def burden_percent(self) -> float:
        """Lesion area in % of the LV myocardial area of this slice."""
        return 100.0 * self.lesion_area_px / self.myo_area_px

    @property
    def lesion_area_mm2(self) -> float:
        """Lesion area in mm^2."""
        return self.lesion_area_px * self.pixel_area_mm2

    @property
    def myo_area_mm2(self) -> float:
        """LV myocardial area in mm^2."""
        return self.myo_area_px * self.pixel_area_mm2


def burdens(
    image: ArrayLike,
    myo_mask: ArrayLike,
    remote_mask: ArrayLike,
    blood_mask: ArrayLike,
    fractions: Mapping[str, float],
    pixel_area_mm2: float = 1.0,
) -> dict[str, SliceBurden]:
    """:class:`SliceBurden` for each named fraction, e.g. ``burdens(..., LGE_FRACTIONS)``.

    The ROI means are computed once. The myocardial area counts every pixel of ``myo_mask``
    (geometric area, including non-finite image pixels, which are never lesion). Raises
    ``ValueError`` for mismatched shapes, an empty myocardium or ROI, a bad fraction or pixel area.
    """
    fs = {name: _check_fraction(f) for name, f in fractions.items()}
    area = _check_pixel_area(pixel_area_mm2)
    img, myo = _as_image(image), _as_mask(myo_mask)
    remote, blood = _as_mask(remote_mask), _as_mask(blood_mask)
    _check_shapes(image=img, myo_mask=myo, remote_mask=remote, blood_mask=blood)
    myo_px = int(np.count_nonzero(myo))
    if myo_px == 0:
        raise ValueError("LV myocardium mask is empty")
    remote_mean = roi_mean(img, remote, "remote ROI")
    blood_mean = roi_mean(img, blood, "blood ROI")
    out: dict[str, SliceBurden] = {}
    for name, f in fs.items():
        thr = _threshold_from_means(remote_mean, blood_mean, f)
        lesion_px = int(np.count_nonzero(_lesion_at(img, myo, thr)))
        out[name] = SliceBurden(f, thr, myo_px, lesion_px, area)
    return out


def slice_burden(
    image: ArrayLike,
    myo_mask: ArrayLike,
    remote_mask: ArrayLike,
    blood_mask: ArrayLike,
    fraction: float,
    pixel_area_mm2: float = 1.0,
) -> SliceBurden:
    """:class:`SliceBurden` of one slice at one fraction (see :func:`burdens` for the rules)."""
    return burdens(image, myo_mask, remote_mask, blood_mask, {"f": fraction}, pixel_area_mm2)["f"]


def patient_burden(slices: Sequence[SliceBurden]) -> float:
    """Patient lesion burden in %: sum of lesion areas / sum of myocardial areas (mm^2), all slices.

    All slices must use the same fraction (mixing thresholds is an error). Raises ``ValueError``
    for an empty sequence or mixed fractions.
    """
    if len(slices) == 0:
        raise ValueError("patient_burden needs at least one slice")
    fractions = {s.fraction for s in slices}
    if len(fractions) > 1:
        raise ValueError(f"slices use different fractions: {sorted(fractions)}")
    lesion = math.fsum(s.lesion_area_mm2 for s in slices)
    myo = math.fsum(s.myo_area_mm2 for s in slices)
    return 100.0 * lesion / myo


def inner_myocardium(
    myo_mask: ArrayLike, pixel_spacing_mm: tuple[float, float] = (1.0, 1.0), margin_mm: float = BORDER_MARGIN_MM
) -> NDArray[np.bool_]:
    """The pixels of ``myo_mask`` (y, x) whose centre lies at least ``margin_mm`` inside its edge.

    The edge runs half a pixel beyond the outermost pixel centres, so depth = (distance to the
    nearest pixel outside the mask) - half the smaller pixel spacing; ``pixel_spacing_mm`` is
    (x, y) in mm. ``margin_mm = 0`` keeps the whole mask.
    """
    myo = _as_mask(myo_mask)
    if myo.ndim != 2:
        raise ValueError(f"myo_mask must be 2-D (y, x), got shape {myo.shape}")
    margin = float(margin_mm)
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin_mm must be finite and >= 0, got {margin_mm!r}")
    dx, dy = (_check_pixel_area(v) for v in pixel_spacing_mm)
    if margin == 0 or not myo.any():
        return myo.copy()
    padded = np.pad(myo, 1)  # pixels beyond the image are outside the mask
    depth = distance_transform_edt(padded, sampling=(dy, dx))[1:-1, 1:-1] - 0.5 * min(dx, dy)
    return myo & (depth >= margin - 1e-9)


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice coefficient ``2|A & B| / (|A| + |B|)`` of two masks; 1.0 when both are empty."""
    ma, mb = _as_mask(a), _as_mask(b)
    _check_shapes(a=ma, b=mb)
    total = int(np.count_nonzero(ma)) + int(np.count_nonzero(mb))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(ma & mb)) / total
