"""Lesion quantification on hand-made images with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.quantify import (
    LGE_FRACTIONS,
    VNE_ADJUSTED_FRACTIONS,
    SliceBurden,
    burdens,
    dice,
    lesion_mask,
    patient_burden,
    slice_burden,
    threshold,
)

# Lesion groups inside the myocardium: (intensity, number of pixels).
# Remote mean 100, blood mean 500 -> threshold = 100 + f * 400:
#   LGE:  FWHM 300, FWQM 200, FWEM 150;  VNE adjusted: 0.35 -> 240, 0.20 -> 180, 0.10 -> 140.
LESIONS = [(310.0, 4), (250.0, 6), (210.0, 3), (160.0, 8), (145.0, 2), (130.0, 5)]


def make_slice() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """20 x 20 slice: blood ROI 20 px (mean 500), myocardium 100 px with remote ROI 20 px (mean 100).

    Returns (image, myo, remote, blood, lesion_value_map) where the last holds each myocardium
    pixel's intended value (for building expected masks).
    """
    img = np.zeros((20, 20))
    blood = np.zeros((20, 20), bool)
    blood[0:4, 0:5] = True
    img[0:2, 0:5] = 400.0  # 10 px at 400, 10 px at 600 -> mean exactly 500
    img[2:4, 0:5] = 600.0
    myo = np.zeros((20, 20), bool)
    myo[10:15, :] = True  # 5 x 20 = 100 px
    img[myo] = 100.0
    remote = np.zeros((20, 20), bool)
    remote[10:12, 0:10] = True  # 20 px alternating 90 / 110 -> mean exactly 100
    img[10:12, 0:10] = np.where(np.indices((2, 10)).sum(axis=0) % 2 == 0, 90.0, 110.0)
    # lesion pixels: myocardium rows 12..14 (60 px, outside the remote ROI), filled in order
    free = list(zip(*np.nonzero(myo & ~remote), strict=True))[20:]  # skip rows 10-11 (right halves)
    k = 0
    for value, n in LESIONS:
        for _ in range(n):
            img[free[k]] = value
            k += 1
    # a bright pixel outside the myocardium must never count
    img[18, 18] = 1000.0
    return img, myo, remote, blood, img.copy()


def test_fixture_is_what_the_comments_say() -> None:
    img, myo, remote, blood, _ = make_slice()
    assert myo.sum() == 100 and remote.sum() == 20 and blood.sum() == 20
    assert not (remote & ~myo).any() and not (blood & myo).any()
    assert img[remote].mean() == 100.0 and img[blood].mean() == 500.0
    for value, n in LESIONS:
        assert np.count_nonzero(img[myo] == value) == n


@pytest.mark.parametrize(("name", "expected"), [("FWHM", 300.0), ("FWQM", 200.0), ("FWEM", 150.0)])
def test_threshold_lge(name: str, expected: float) -> None:
    img, _, remote, blood, _ = make_slice()
    assert threshold(img, remote, blood, LGE_FRACTIONS[name]) == expected


def test_threshold_endpoints_and_above_one() -> None:
    img, _, remote, blood, _ = make_slice()
    assert threshold(img, remote, blood, 0.0) == 100.0
    assert threshold(img, remote, blood, 1.0) == 500.0
    assert threshold(img, remote, blood, 1.5) == 700.0  # allowed, documented as unusual


# LGE: FWHM 300 -> 310 (4); FWQM 200 -> +250 (6) +210 (3) = 13; FWEM 150 -> +160 (8) = 21.
@pytest.mark.parametrize(("name", "lesion_px"), [("FWHM", 4), ("FWQM", 13), ("FWEM", 21)])
def test_slice_burden_lge(name: str, lesion_px: int) -> None:
    img, myo, remote, blood, _ = make_slice()
    sb = slice_burden(img, myo, remote, blood, LGE_FRACTIONS[name])
    assert sb.myo_area_px == 100
    assert sb.lesion_area_px == lesion_px
    assert sb.burden_percent == pytest.approx(lesion_px)  # 100 px myocardium -> px == %
    assert sb.fraction == LGE_FRACTIONS[name]


# VNE adjusted: 0.35 -> 240: 310, 250 = 10; 0.20 -> 180: + 210 = 13; 0.10 -> 140: + 160, 145 = 23.
def test_burdens_vne_adjusted() -> None:
    img, myo, remote, blood, _ = make_slice()
    out = burdens(img, myo, remote, blood, VNE_ADJUSTED_FRACTIONS)
    assert set(out) == {"FWHM", "FWQM", "FWEM"}
    assert {k: v.lesion_area_px for k, v in out.items()} == {"FWHM": 10, "FWQM": 13, "FWEM": 23}
    assert out["FWHM"].threshold == pytest.approx(240.0)
    assert out["FWQM"].threshold == pytest.approx(180.0)
    assert out["FWEM"].threshold == pytest.approx(140.0)


def test_burdens_matches_slice_burden_and_mm2() -> None:
    img, myo, remote, blood, _ = make_slice()
    out = burdens(img, myo, remote, blood, LGE_FRACTIONS, pixel_area_mm2=1.96)  # 1.4 mm pixels
    for name, f in LGE_FRACTIONS.items():
        assert out[name] == slice_burden(img, myo, remote, blood, f, pixel_area_mm2=1.96)
    fwqm = out["FWQM"]
    assert fwqm.myo_area_mm2 == pytest.approx(196.0)
    assert fwqm.lesion_area_mm2 == pytest.approx(13 * 1.96)
    assert fwqm.burden_percent == pytest.approx(13.0)  # % does not depend on pixel area


def test_lesion_mask_exact_pixels() -> None:
    img, myo, remote, blood, values = make_slice()
    got = lesion_mask(img, myo, remote, blood, 0.25)
    expected = myo & (values >= 200.0)
    assert got.dtype == bool
    assert np.array_equal(got, expected)
    assert got.sum() == 13
    assert not got[18, 18]  # bright but outside the myocardium


def test_pixel_exactly_at_threshold_is_lesion() -> None:
    img, myo, remote, blood, _ = make_slice()
    img[14, 19] = 300.0
    img[14, 18] = np.nextafter(300.0, 0.0)
    m = lesion_mask(img, myo, remote, blood, 0.5)
    assert m[14, 19] and not m[14, 18]
    assert slice_burden(img, myo, remote, blood, 0.5).lesion_area_px == 5


def test_non_finite_pixels_never_lesion_and_ignored_in_means() -> None:
    img, myo, remote, blood, _ = make_slice()
    lesion_px = list(zip(*np.nonzero(myo & (img == 310.0)), strict=True))
    img[lesion_px[0]] = np.nan
    img[lesion_px[1]] = np.inf
    img[10, 0] = np.nan  # in the remote ROI (was 90): remote mean of the rest no longer 100
    img[0, 0] = np.nan  # in the blood ROI
    remote_rest = img[remote & np.isfinite(img)].mean()
    blood_rest = img[blood & np.isfinite(img)].mean()
    assert threshold(img, remote, blood, 0.5) == pytest.approx(remote_rest + 0.5 * (blood_rest - remote_rest))
    m = lesion_mask(img, myo, remote, blood, 0.5)
    assert m.sum() == 2
    assert not m[lesion_px[0]] and not m[lesion_px[1]]
    sb = slice_burden(img, myo, remote, blood, 0.5)
    assert sb.myo_area_px == 100  # geometric area keeps the non-finite pixels
    assert sb.lesion_area_px == 2


def test_integer_image_and_integer_masks() -> None:
    img, myo, remote, blood, _ = make_slice()
    sb = slice_burden(
        img.astype(np.uint16), myo.astype(np.uint8), remote.astype(int), blood.astype(int), 0.25
    )
    assert (sb.myo_area_px, sb.lesion_area_px) == (100, 13)


def test_patient_burden_two_slices() -> None:
    # Slice A: the 20 x 20 slice, FWHM: 4 lesion px of 100 myo px, pixel 1.0 mm^2 -> 4 / 100 mm^2.
    img, myo, remote, blood, _ = make_slice()
    a = slice_burden(img, myo, remote, blood, 0.5, pixel_area_mm2=1.0)
    # Slice B: myocardium cut to 50 px (rows 10-12, first 50 px in row order), of which the lesion
    # pixels at >= 300 are 10 (set below), pixel 1.5 x 1.5 = 2.25 mm^2 -> 22.5 / 112.5 mm^2.
    img_b, myo_b, remote_b, blood_b, _ = make_slice()
    img_b[12:15, :] = 100.0
    myo_b[12:15, :] = False
    myo_b[12, 0:10] = True  # 40 + 10 = 50 px
    img_b[12, 0:10] = 400.0
    b = slice_burden(img_b, myo_b, remote_b, blood_b, 0.5, pixel_area_mm2=2.25)
    assert (a.myo_area_px, a.lesion_area_px) == (100, 4)
    assert (b.myo_area_px, b.lesion_area_px) == (50, 10)
    # (4 + 22.5) / (100 + 112.5) = 26.5 / 212.5 = 12.470588...%  (not the mean of 4 % and 20 % = 12 %,
    # nor the pixel ratio 14 / 150 = 9.33 %)
    assert patient_burden([a, b]) == pytest.approx(100.0 * 26.5 / 212.5)
    assert patient_burden([a]) == pytest.approx(4.0)


def test_patient_burden_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        patient_burden([])
    s1 = SliceBurden(0.5, 300.0, 100, 4, 1.0)
    s2 = SliceBurden(0.25, 200.0, 100, 13, 1.0)
    with pytest.raises(ValueError, match="different fractions"):
        patient_burden([s1, s2])


def test_slice_burden_dataclass_validation() -> None:
    with pytest.raises(ValueError):
        SliceBurden(0.5, 300.0, 0, 0, 1.0)
    with pytest.raises(ValueError):
        SliceBurden(0.5, 300.0, 10, 11, 1.0)
    with pytest.raises(ValueError):
        SliceBurden(0.5, 300.0, 10, 1, 0.0)


def test_empty_rois_raise() -> None:
    img, myo, remote, blood, _ = make_slice()
    empty = np.zeros_like(myo)
    with pytest.raises(ValueError, match="remote ROI is empty"):
        threshold(img, empty, blood, 0.5)
    with pytest.raises(ValueError, match="blood ROI is empty"):
        lesion_mask(img, myo, remote, empty, 0.5)
    with pytest.raises(ValueError, match="myocardium mask is empty"):
        slice_burden(img, empty, remote, blood, 0.5)
    img[blood] = np.nan
    with pytest.raises(ValueError, match="blood ROI has no finite pixel"):
        threshold(img, remote, blood, 0.5)


def test_shape_mismatch_names_shapes() -> None:
    img, myo, remote, blood, _ = make_slice()
    with pytest.raises(ValueError, match=r"\(20, 19\)"):
        slice_burden(img, myo[:, :19], remote, blood, 0.5)
    with pytest.raises(ValueError, match=r"\(19, 20\)"):
        threshold(img, remote, blood[:19], 0.5)
    with pytest.raises(ValueError, match=r"\(21, 20\)"):
        lesion_mask(np.zeros((21, 20)), myo, remote, blood, 0.5)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_fraction_raises(bad: float) -> None:
    img, myo, remote, blood, _ = make_slice()
    with pytest.raises(ValueError, match="fraction"):
        threshold(img, remote, blood, bad)
    with pytest.raises(ValueError, match="fraction"):
        burdens(img, myo, remote, blood, {"x": bad})


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_pixel_area_raises(bad: float) -> None:
    img, myo, remote, blood, _ = make_slice()
    with pytest.raises(ValueError, match="pixel_area_mm2"):
        slice_burden(img, myo, remote, blood, 0.5, pixel_area_mm2=bad)


def test_dice() -> None:
    a = np.zeros((5, 5), bool)
    b = np.zeros((5, 5), bool)
    assert dice(a, b) == 1.0  # both empty
    a[0, 0:4] = True  # 4 px
    assert dice(a, b) == 0.0
    b[0, 1:4] = True  # overlap 3
    b[1, 0:3] = True  # b has 6 px
    assert dice(a, b) == pytest.approx(2 * 3 / (4 + 6))
    assert dice(a, a) == 1.0
    with pytest.raises(ValueError, match="shapes"):
        dice(a, b[:4])


def test_inner_myocardium_leaves_out_the_rim() -> None:
    from vne_inline.quantify import inner_myocardium

    myo = np.zeros((12, 14), bool)
    myo[2:10, 3:11] = True  # 8 x 8 block
    assert np.array_equal(inner_myocardium(myo, (1.0, 1.0), 0.0), myo)
    one = inner_myocardium(myo, (1.0, 1.0), 1.5)  # border pixel centre 0.5 mm deep, the next 1.5 mm
    assert one.sum() == 36 and one[3:9, 4:10].all()
    assert inner_myocardium(myo, (1.0, 1.0), 2.5).sum() == 16
    assert inner_myocardium(myo, (0.5, 0.5), 1.5).sum() == 2 * 2  # depths 0.25, 0.75, 1.25, 1.75 mm: 3 pixels each side go
    edge = np.zeros((6, 6), bool)
    edge[:, :3] = True  # touches the image edge: outside the image counts as outside the mask
    assert inner_myocardium(edge, (1.0, 1.0), 1.5)[:, 0].sum() == 0
    with pytest.raises(ValueError, match="margin_mm"):
        inner_myocardium(myo, (1.0, 1.0), -1.0)
    with pytest.raises(ValueError, match="2-D"):
        inner_myocardium(myo[None], (1.0, 1.0))

