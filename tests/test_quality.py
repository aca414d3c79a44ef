"""Border sharpness (`edge_width`): the 10-90 % width of an error-function edge is 2.563 sigma."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.special import erfc

from vne_inline.quantify import inner_myocardium
from vne_inline.validate.quality import edge_width, signed_border_distance

ERF_10_90 = 2 * 1.2816  # 10-90 % width of a Gaussian-blurred step, in units of sigma
R_BLOOD, WALL = 20.0, 14.0  # mm


def _radius(spacing: tuple[float, float], size_mm: float = 80.0) -> np.ndarray:
    """Distance (mm) of every pixel centre from an off-grid centre; spacing (dx, dy)."""
    dx, dy = spacing
    x = (np.arange(int(size_mm / dx)) + 0.5) * dx - size_mm / 2 + 0.3
    y = (np.arange(int(size_mm / dy)) + 0.5) * dy - size_mm / 2 - 0.2
    return np.hypot(*np.meshgrid(x, y))


def phantom(sigma: float, spacing: tuple[float, float], lesion_deg: float = 0.0) -> dict[str, np.ndarray]:
    """A disc of blood (1) in a ring of myocardium (0) with fat outside (0.4), every edge an error
    function of width `sigma` (mm); optionally a bright (0.8) sector of the wall `lesion_deg` wide."""
    r = _radius(spacing)
    image = 0.5 * erfc((r - R_BLOOD) / (math.sqrt(2) * sigma)) + 0.4 * 0.5 * erfc(
        (R_BLOOD + WALL - r) / (math.sqrt(2) * sigma))
    myo = (r >= R_BLOOD) & (r < R_BLOOD + WALL)
    remote = myo & (r > R_BLOOD + 5) & (r < R_BLOOD + WALL - 5)
    if lesion_deg:
        dx, dy = spacing
        x = (np.arange(r.shape[1]) + 0.5) * dx - 40.0 + 0.3
        y = (np.arange(r.shape[0]) + 0.5) * dy - 40.0 - 0.2
        angle = np.degrees(np.arctan2(*np.meshgrid(y, x, indexing="ij")))
        lesion = myo & (np.abs(angle) < lesion_deg / 2)
        image = image + 0.8 * gaussian_filter(lesion.astype(float), (sigma / dy, sigma / dx))
        remote &= np.abs(angle) > lesion_deg
    return {"image": image, "myo": myo, "remote": remote, "blood": r < R_BLOOD - 3}


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 1.6), (1.4, 0.9)])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_error_function_edge_has_the_analytic_width(spacing, sigma) -> None:
    p = phantom(sigma, spacing)
    width = edge_width(p["image"], p["myo"], p["remote"], p["blood"], spacing)
    assert width == pytest.approx(ERF_10_90 * sigma, rel=0.1)


def test_gaussian_blurred_step_and_inner_myocardium_mask() -> None:
    """A pixel step blurred with scipy, read with a myocardium mask that lost its 1.5 mm rim."""
    spacing, sigma = (1.2, 1.5), 1.8
    r = _radius(spacing)
    step = (r < R_BLOOD) * 1.0 + (r >= R_BLOOD + WALL) * 0.4
    image = gaussian_filter(step, (sigma / spacing[1], sigma / spacing[0]))
    myo = inner_myocardium((r >= R_BLOOD) & (r < R_BLOOD + WALL), spacing, 1.5)
    remote = myo & (r > R_BLOOD + 5) & (r < R_BLOOD + WALL - 5)
    width = edge_width(image, myo, remote, r < R_BLOOD - 3, spacing)
    assert width == pytest.approx(ERF_10_90 * sigma, rel=0.1)


def test_sharper_image_scores_smaller_with_noise() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for sigma in (0.8, 1.4, 2.0):
        p = phantom(sigma, (1.3, 1.3))
        noisy = p["image"] + rng.normal(0.0, 0.1, p["image"].shape)  # CNR 10
        widths.append(edge_width(noisy, p["myo"], p["remote"], p["blood"], (1.3, 1.3)))
    assert widths[0] < widths[1] < widths[2]
    assert widths[1] == pytest.approx(ERF_10_90 * 1.4, rel=0.1)


def test_a_lesion_sector_at_the_border_does_not_bend_the_profile() -> None:
    """The per-distance median ignores a bright sector covering a quarter of the wall."""
    p = phantom(1.5, (1.0, 1.0), lesion_deg=90.0)
    width = edge_width(p["image"], p["myo"], p["remote"], p["blood"], (1.0, 1.0))
    assert width == pytest.approx(ERF_10_90 * 1.5, rel=0.1)


def test_undefined_cases_give_nan() -> None:
    p = phantom(1.5, (1.0, 1.0))
    image, myo, remote, blood = p["image"], p["myo"], p["remote"], p["blood"]
    open_ring = myo.copy()
    open_ring[:, open_ring.shape[1] // 2:] = False  # a crescent encloses no cavity
    assert math.isnan(edge_width(image, open_ring, remote, blood))
    assert math.isnan(edge_width(np.full_like(image, 3.0), myo, remote, blood))  # flat: no contrast
    assert math.isnan(edge_width(1.0 - image, myo, remote, blood))  # myocardium brighter than blood
    assert math.isnan(edge_width(np.full_like(image, np.nan), myo, remote, blood))
    lonely = np.zeros_like(myo)
    lonely[40:43, 40:43] = True
    lonely[41, 41] = False  # a one-pixel cavity: too few pixels for a profile
    assert math.isnan(edge_width(image, lonely, remote, blood))


def test_signed_distance_is_metric_on_anisotropic_pixels() -> None:
    spacing = (0.8, 1.6)
    r = _radius(spacing)
    d = signed_border_distance(r < R_BLOOD, spacing)
    near = np.abs(r - R_BLOOD) < 6
    assert np.abs(d[near] - (r[near] - R_BLOOD)).mean() < 0.2
    assert d[r < R_BLOOD - 1].max() < 0 < d[r > R_BLOOD + 1].min()
