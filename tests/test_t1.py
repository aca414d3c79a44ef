"""Tests for vne_inline.physics.t1: TI sets, IR model, Look-Locker correction and the T1 fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vne_inline.physics.t1 import (
    MOLLI_33_35_TI_MS,
    MOLLI_53_TI_MS,
    SHMOLLI_TI_MS,
    T1Fit,
    fit_t1,
    ir_signal,
    look_locker_parameters,
    molli_ti_ms,
    shmolli_ti_ms,
    t1_from_fit,
)

SCHEMES = {
    "shmolli": SHMOLLI_TI_MS,
    "molli53": MOLLI_53_TI_MS,
    "molli335": MOLLI_33_35_TI_MS,
}
TISSUE_T1_MS = [260.0, 960.0, 1200.0, 1500.0]  # fat, myocardium, lesion, blood (design §5)


def simulate(t1_ms, ti_ms, m0=1000.0, sigma=0.0, magnitude=True, rng=None):
    """Images (K, ...) for T1 maps `t1_ms` (...), with complex Gaussian noise (Rician magnitude)."""
    t1 = np.asarray(t1_ms, dtype=float)
    a, b, ts = look_locker_parameters(t1, m0=m0)
    ti = np.asarray(ti_ms, dtype=float).reshape((-1,) + (1,) * t1.ndim)
    s = ir_signal(ti, a, b, ts)
    if sigma > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        s = s + rng.normal(0.0, sigma, s.shape) + (1j * rng.normal(0.0, sigma, s.shape) if magnitude else 0.0)
    return np.abs(s) if magnitude else np.real(s)


# --- TI sets ---------------------------------------------------------------------------------------


def test_shmolli_ti_design_values():
    np.testing.assert_allclose(SHMOLLI_TI_MS, [100, 180, 260, 1100, 2100, 3100, 4100])
    np.testing.assert_array_equal(shmolli_ti_ms(), SHMOLLI_TI_MS)
    assert SHMOLLI_TI_MS.dtype == np.float64


@pytest.mark.parametrize(
    ("ti", "n"),
    [(shmolli_ti_ms(800.0), 7), (molli_ti_ms(800.0, "5(3)3"), 8), (molli_ti_ms(800.0, "3(3)3(3)5"), 11)],
)
def test_ti_sets_sorted_and_sized(ti, n):
    assert ti.shape == (n,)
    assert ti.dtype == np.float64
    assert np.all(np.diff(ti) > 0)
    assert ti[0] == pytest.approx(100.0)


def test_molli_values_and_rr_dependence():
    np.testing.assert_allclose(MOLLI_53_TI_MS, [100, 180, 1100, 1180, 2100, 2180, 3100, 4100])
    np.testing.assert_allclose(
        MOLLI_33_35_TI_MS, [100, 180, 260, 1100, 1180, 1260, 2100, 2180, 2260, 3260, 4260]
    )
    np.testing.assert_allclose(shmolli_ti_ms(rr_ms=750.0), [100, 180, 260, 850, 1600, 2350, 3100])
    with pytest.raises(ValueError, match="scheme"):
        molli_ti_ms(scheme="4(1)3(1)2")
    with pytest.raises(ValueError, match="rr_ms"):
        shmolli_ti_ms(rr_ms=0.0)


# --- model and Look-Locker correction ---------------------------------------------------------------


def test_ir_signal_broadcasts():
    ti = SHMOLLI_TI_MS.reshape(-1, 1, 1)
    s = ir_signal(ti, np.ones((2, 3)), 2.0, 800.0)
    assert s.shape == (7, 2, 3)
    assert ir_signal(0.0, 1.0, 2.0, 800.0) == pytest.approx(-1.0)
    assert ir_signal(1e9, 1.0, 2.0, 800.0) == pytest.approx(1.0)


def test_t1_from_fit_and_invalid():
    assert t1_from_fit(1.0, 2.0, 800.0) == pytest.approx(800.0)
    assert t1_from_fit(-1.0, -2.0, 800.0) == pytest.approx(800.0)  # common sign flip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = t1_from_fit(
            np.array([0.0, 1.0, 1.0, np.nan]), np.array([1.0, 0.5, 2.0, 2.0]), np.array([800, 800, -1, 800])
        )
    assert np.all(np.isnan(out))


def test_look_locker_identity_and_ratios():
    t1 = np.array([50.0, 260.0, 960.0, 1200.0, 1500.0, 4000.0])
    for m0 in (1.0, 1234.5):
        a, b, ts = look_locker_parameters(t1, m0=m0)
        np.testing.assert_allclose(t1_from_fit(a, b, ts), t1, rtol=1e-12)
        assert np.all(a > 0) and np.all(b > a)
    a, b, ts = look_locker_parameters(t1, inversion_efficiency=0.9, readout_rate_per_ms=1e-3)
    np.testing.assert_allclose(ts * (b / a - 1.0), t1, rtol=1e-12)
    _, _, ts = look_locker_parameters(960.0)
    assert 0.75 <= ts / 960.0 <= 0.85  # myocardium at 1.5 T
    a, b, ts = look_locker_parameters(np.array([np.nan, -5.0]))
    assert np.all(np.isnan(a)) and np.all(np.isnan(ts))
    with pytest.raises(ValueError, match="inversion_efficiency"):
        look_locker_parameters(960.0, inversion_efficiency=1.5)


# --- fit --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("magnitude", [True, False])
def test_noiseless_fit(scheme, magnitude):
    ti = SCHEMES[scheme]
    t1 = np.array(TISSUE_T1_MS)
    fit = fit_t1(simulate(t1, ti, magnitude=magnitude), ti, magnitude=magnitude)
    assert isinstance(fit, T1Fit)
    assert fit.t1_ms.shape == t1.shape
    np.testing.assert_allclose(fit.t1_ms, t1, atol=1.0)
    a, b, ts = look_locker_parameters(t1, m0=1000.0)
    np.testing.assert_allclose(fit.a, a, rtol=1e-4)
    np.testing.assert_allclose(fit.b, b, rtol=1e-4)
    np.testing.assert_allclose(fit.t1_star_ms, ts, rtol=1e-4)
    assert np.all(fit.residual < 1e-3)
    # null index: number of TI-sorted images with negative signed signal
    expected_null = np.count_nonzero(ir_signal(ti[:, None], a, b, ts) < 0, axis=0)
    np.testing.assert_array_equal(fit.null_index, expected_null)


def test_fit_2d_unsorted_tis_and_per_slice_tis():
    rng = np.random.default_rng(3)
    t1 = rng.uniform(250.0, 2500.0, (2, 9, 11))
    ti = np.stack([shmolli_ti_ms(1000.0), shmolli_ti_ms(700.0)], axis=1)  # (K, slices)
    images = simulate(t1, SHMOLLI_TI_MS)
    perm = rng.permutation(7)
    fit = fit_t1(images[perm], SHMOLLI_TI_MS[perm])
    np.testing.assert_allclose(fit.t1_ms, t1, atol=1.0)
    # per-slice TIs given as (K, S, 1, 1)
    a, b, ts = look_locker_parameters(t1, m0=1.0)
    images = np.abs(ir_signal(ti[:, :, None, None], a, b, ts))
    fit = fit_t1(images, ti[:, :, None, None])
    np.testing.assert_allclose(fit.t1_ms, t1, atol=1.0)
    # fully per-pixel TIs (RR varying pixel by pixel, as with a motion-corrected series)
    ti_px = np.stack([shmolli_ti_ms(rr) for rr in rng.uniform(700, 1200, t1.size)], axis=1).reshape(
        (7,) + t1.shape
    )
    images = np.abs(ir_signal(ti_px, a, b, ts))
    fit = fit_t1(images, ti_px)
    np.testing.assert_allclose(fit.t1_ms, t1, atol=1.0)


@settings(max_examples=25, deadline=None)
@given(
    t1=st.floats(300.0, 2000.0),
    m0=st.floats(10.0, 5000.0),
    scheme=st.sampled_from(sorted(SCHEMES)),
)
def test_noiseless_fit_property(t1, m0, scheme):
    ti = SCHEMES[scheme]
    fit = fit_t1(simulate(np.array([t1]), ti, m0=m0), ti)
    assert abs(fit.t1_ms[0] - t1) < 1.0


@pytest.mark.parametrize(("scheme", "sigma"), [("shmolli", 45.0), ("molli53", 45.0), ("molli335", 60.0)])
def test_noise_bias_myocardium(scheme, sigma):
    ti = SCHEMES[scheme]
    t1 = np.full(2000, 960.0)
    rng = np.random.default_rng(11)
    fit = fit_t1(simulate(t1, ti, m0=1000.0, sigma=sigma, rng=rng), ti)
    sd = np.nanstd(fit.t1_ms)
    assert 30.0 <= sd <= 60.0  # the design's myocardial pixel SD
    assert np.count_nonzero(np.isnan(fit.t1_ms)) < 10
    assert abs(np.nanmedian(fit.t1_ms) / 960.0 - 1.0) < 0.02


def test_noise_bias_signed():
    ti = SHMOLLI_TI_MS
    t1 = np.full(2000, 960.0)
    fit = fit_t1(
        simulate(t1, ti, sigma=45.0, magnitude=False, rng=np.random.default_rng(5)), ti, magnitude=False
    )
    assert abs(np.nanmedian(fit.t1_ms) / 960.0 - 1.0) < 0.02


def test_nan_pixels_and_mask():
    t1 = np.array([[960.0, 1500.0], [260.0, 1200.0]])
    images = simulate(t1, SHMOLLI_TI_MS)
    images[3, 0, 1] = np.nan
    images[0, 1, 1] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_t1(images, SHMOLLI_TI_MS)
    assert np.isnan(fit.t1_ms[0, 1]) and np.isnan(fit.t1_ms[1, 1])
    assert np.isnan(fit.a[0, 1]) and np.isnan(fit.residual[1, 1]) and fit.null_index[0, 1] == -1
    np.testing.assert_allclose(fit.t1_ms[:, 0], t1[:, 0], atol=1.0)
    np.testing.assert_array_equal(fit.valid, [[True, False], [True, False]])

    mask = np.array([[True, True], [False, True]])
    fit = fit_t1(simulate(t1, SHMOLLI_TI_MS), SHMOLLI_TI_MS, mask=mask)
    assert np.isnan(fit.t1_ms[1, 0])
    np.testing.assert_allclose(fit.t1_ms[mask], t1[mask], atol=1.0)
    fit = fit_t1(simulate(t1, SHMOLLI_TI_MS), SHMOLLI_TI_MS, mask=np.zeros((2, 2), bool))
    assert np.all(np.isnan(fit.t1_ms)) and fit.t1_ms.shape == (2, 2)


def test_degenerate_and_out_of_bounds_pixels_are_nan():
    images = np.zeros((7, 3))
    images[:, 1] = 5.0  # constant signal: no recovery
    images[:, 2] = simulate(np.array([960.0]), SHMOLLI_TI_MS)[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_t1(images, SHMOLLI_TI_MS, t1_bounds_ms=(50.0, 900.0))
    assert np.all(np.isnan(fit.t1_ms))


def test_fit_errors():
    images = simulate(np.full((4, 4), 960.0), SHMOLLI_TI_MS)
    with pytest.raises(ValueError, match="K=7"):
        fit_t1(images, SHMOLLI_TI_MS[:6])
    with pytest.raises(ValueError, match="at least 3"):
        fit_t1(images[:2], SHMOLLI_TI_MS[:2])
    with pytest.raises(ValueError, match="distinct"):
        fit_t1(images[:3], np.array([100.0, 100.0, 200.0]))
    with pytest.raises(ValueError, match="mask"):
        fit_t1(images, SHMOLLI_TI_MS, mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="broadcast"):
        fit_t1(images, np.ones((7, 3)))
    with pytest.raises(ValueError, match="t1_bounds_ms"):
        fit_t1(images, SHMOLLI_TI_MS, t1_bounds_ms=(500.0, 100.0))


def test_null_after_last_ti_and_before_first_ti():
    ti = SHMOLLI_TI_MS
    a = np.array([1.0, 1.0])
    b = np.array([3.0, 1.2])
    ts = np.array([5000.0, 300.0])  # nulls at 5493 ms (after 4100) and 55 ms (before 100)
    fit = fit_t1(np.abs(ir_signal(ti[:, None], a, b, ts)), ti, t1_bounds_ms=(10.0, 20000.0))
    np.testing.assert_array_equal(fit.null_index, [7, 0])
    np.testing.assert_allclose(fit.t1_ms, t1_from_fit(a, b, ts), rtol=1e-4)  # the fit's precision: T1* to 2e-5
    np.testing.assert_allclose(fit.a, a, rtol=1e-4)


def test_complex_images_rejected():
    with pytest.raises(ValueError, match="real"):
        fit_t1(np.ones((7, 2), complex), SHMOLLI_TI_MS)
