"""T1 mapping on real sampling: schemes and inversion groups, Bloch simulation, the recovery-model fit,
fit_t1_map (polarity from magnitude or phase, scanner order, TI order) and the tube phantom."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.physics.ir_schemes import (
    MOLLI_53,
    MOLLI_335,
    SCHEMES,
    SHMOLLI,
    estimate_rr_ms,
    inversion_groups,
    scheme_for_groups,
)
from vne_inline.physics.molli_sim import Readout, simulate_samples
from vne_inline.physics.t1 import INVERSION_EFFICIENCY, fit_t1
from vne_inline.physics.t1_mapping import fit_t1_map, signal_mask, signed_from_phase
from vne_inline.physics.t1_phantom import TUBE_T1_MS, reference_t1_ms, run_tubes, tube_images, tube_t2_ms
from vne_inline.physics.t1_recovery import (
    fit_t1_fixed_rate,
    fit_t1_recovery,
    readout_rate,
    recovery_model,
)

ISSUE_ORDER_MS = [100, 1100, 2100, 3100, 4100, 180, 260]  # ShMOLLI as a scanner sends it


# --- schemes ----------------------------------------------------------------------------------------


def test_acquisition_order_and_groups():
    np.testing.assert_allclose(SHMOLLI.acquisition_ti_ms(), ISSUE_ORDER_MS)
    np.testing.assert_allclose(MOLLI_53.acquisition_ti_ms(), [100, 1100, 2100, 3100, 4100, 180, 1180, 2180])
    np.testing.assert_allclose(MOLLI_335.acquisition_ti_ms(800.0)[:4], [100, 900, 1700, 180])
    for scheme in SCHEMES.values():
        ti = scheme.acquisition_ti_ms(850.0)
        groups = inversion_groups(ti)
        np.testing.assert_array_equal(groups, scheme.groups())
        assert scheme_for_groups(groups) is scheme
        assert estimate_rr_ms(ti, groups) == pytest.approx(850.0)
    assert scheme_for_groups(np.array([0, 0, 0, 0])) is None
    # gap from the last readout of inversion j to inversion j + 1: (r + 1) RR - first TI of j + 1
    np.testing.assert_allclose(SHMOLLI.gaps_ms(SHMOLLI.first_ti_ms(), 1000.0), [1820.0, 1740.0])
    np.testing.assert_allclose(MOLLI_53.gaps_ms(MOLLI_53.first_ti_ms(), 1000.0), [3820.0])


# --- Bloch simulation --------------------------------------------------------------------------------


def test_bloch_simulation_behaves_like_molli():
    t1 = np.array([300.0, 1000.0, 2000.0])
    ti, s = simulate_samples(t1, tube_t2_ms(t1), MOLLI_53, 1000.0, 1.5)
    np.testing.assert_allclose(ti, MOLLI_53.acquisition_ti_ms())
    assert s.shape == (8, 3)
    assert np.all(s[0] < 0) and np.all(s[4] > 0)  # inverted at TI 100 ms, recovered at 4100 ms
    # the readouts shorten the apparent recovery: the Look-Locker corrected T1 underestimates (MOLLI)
    apparent = fit_t1(s, ti, magnitude=False).t1_ms
    assert np.all(apparent < t1) and np.all(apparent > 0.8 * t1)
    # incomplete recovery: only the second inversion's images change when the tissue rests first
    _, full = simulate_samples(t1, tube_t2_ms(t1), MOLLI_53, 1000.0, 1.5, full_recovery=True)
    np.testing.assert_allclose(full[:5], s[:5])
    assert np.all(np.abs(full[5:, 2] - s[5:, 2]) > 1e-3)
    # 3 T: lower effective flip angle, less readout disturbance, different samples
    _, s3 = simulate_samples(t1, tube_t2_ms(t1), MOLLI_53, 1000.0, 3.0)
    assert not np.allclose(s3, s)
    with pytest.raises(ValueError, match="field_t"):
        simulate_samples(t1, 50.0, MOLLI_53, field_t=7.0)
    with pytest.raises(ValueError, match="minimum TI"):
        simulate_samples(t1, 50.0, MOLLI_53, readout=Readout(n_lines=120, centre_line=60))


# --- recovery model --------------------------------------------------------------------------------


def test_recovery_model_jacobian_matches_finite_differences():
    rng = np.random.default_rng(0)
    a, x, r = rng.uniform(50, 100, 5), np.log(rng.uniform(150, 1800, 5)), rng.uniform(0.0, 0.6, 5)
    ti = SHMOLLI.acquisition_ti_ms()
    gaps = SHMOLLI.gaps_ms(SHMOLLI.first_ti_ms(), 1000.0)
    s, jac = recovery_model(a, x, r, ti, SHMOLLI.groups(), gaps, jacobian=True)
    for i, h in enumerate(np.eye(3) * 1e-3):  # the exponential is float32: steps well above its rounding
        sp, _ = recovery_model(a + h[0], x + h[1], r + h[2], ti, SHMOLLI.groups(), gaps)
        sm, _ = recovery_model(a - h[0], x - h[1], r - h[2], ti, SHMOLLI.groups(), gaps)
        np.testing.assert_allclose(jac[i], (sp - sm) / 2e-3, rtol=2e-3, atol=2e-2)
    # full recovery (very long gaps) gives the plain three-parameter curve
    s_long, _ = recovery_model(a, x, r, ti, SHMOLLI.groups(), np.array([1e7, 1e7]))
    b = a * (1 + np.exp(r))
    np.testing.assert_allclose(s_long, a - b * np.exp(-ti[:, None] / np.exp(x)), rtol=1e-6)


@pytest.mark.parametrize("magnitude", [True, False])
def test_recovery_fit_recovers_hand_made_parameters(magnitude):
    """Images made with the model itself (ShMOLLI order, one recovery beat): exact parameters back."""
    t1 = np.array([220.0, 480.0, 960.0, 1500.0, 2400.0])
    t1_star = t1 * np.array([0.97, 0.9, 0.8, 0.7, 0.6])
    a = np.full(5, 80.0)
    ti, groups = SHMOLLI.acquisition_ti_ms(), SHMOLLI.groups()
    gaps = SHMOLLI.gaps_ms(SHMOLLI.first_ti_ms(), 1000.0)
    s, _ = recovery_model(a, np.log(t1_star), np.log(t1 / t1_star), ti, groups, gaps)
    data = np.abs(s) if magnitude else s
    fit = fit_t1_recovery(data, ti, groups, gaps, magnitude=magnitude)
    np.testing.assert_allclose(fit.t1_ms, t1, rtol=1e-3)
    np.testing.assert_allclose(fit.t1_star_ms, t1_star, rtol=1e-3)
    assert np.all(fit.r_squared > 0.999999)
    # the standard fit of the same data is wrong for long T1 (the later inversions start lower)
    assert fit_t1(data, ti, magnitude).t1_ms[-1] < 0.8 * t1[-1]
    with pytest.raises(ValueError, match="groups"):
        fit_t1_recovery(data, ti, groups[::-1], gaps)
    with pytest.raises(ValueError, match="gaps"):
        fit_t1_recovery(data, ti, groups, gaps[:1])


@pytest.mark.parametrize("magnitude", [True, False])
def test_fixed_rate_second_pass_recovers_t1_and_lowers_the_noise(magnitude):
    """Pixels sharing one readout rate c (1/T1* = d/T1 + c): the first pass finds c, the second pass gives
    T1 back exactly without noise, and with noise at least as precise as the three-parameter fit."""
    d, c = INVERSION_EFFICIENCY, 0.0008  # per ms
    t1 = np.repeat(np.array([400.0, 960.0, 1500.0, 2000.0]), 400)
    t1_star = 1.0 / (d / t1 + c)
    a = np.full(t1.size, 100.0)
    ti, groups = SHMOLLI.acquisition_ti_ms(), SHMOLLI.groups()
    gaps = SHMOLLI.gaps_ms(SHMOLLI.first_ti_ms(), 1000.0)
    s, _ = recovery_model(a, np.log(t1_star), np.log(t1 / t1_star), ti, groups, gaps)
    clean = np.abs(s) if magnitude else s
    first = fit_t1_recovery(clean, ti, groups, gaps, magnitude=magnitude)
    assert readout_rate(first) == pytest.approx(c, rel=1e-3)
    second = fit_t1_fixed_rate(clean, ti, groups, gaps, readout_rate(first), magnitude=magnitude)
    np.testing.assert_allclose(second.t1_ms, t1, rtol=2e-3)
    np.testing.assert_allclose(second.t1_star_ms, t1_star, rtol=2e-3)
    noisy = clean + np.random.default_rng(1).normal(0.0, 2.0, clean.shape)
    first = fit_t1_recovery(noisy, ti, groups, gaps, magnitude=magnitude)
    rate = readout_rate(first)
    assert rate == pytest.approx(c, rel=0.1)
    second = fit_t1_fixed_rate(noisy, ti, groups, gaps, rate, magnitude=magnitude)
    blood = t1 == 1500.0
    assert np.nanmedian(second.t1_ms[blood]) == pytest.approx(1500.0, rel=0.02)
    assert np.nanstd(second.t1_ms[blood]) < np.nanstd(first.t1_ms[blood])
    # too few well-fitted pixels: no rate
    assert readout_rate(fit_t1_recovery(clean[:, :10], ti, groups, gaps, magnitude=magnitude)) is None


# --- fit_t1_map ----------------------------------------------------------------------------------------


def test_issue_collapse_is_gone():
    """ShMOLLI-type magnitude images in scanner order: the plain fit of all images collapses for long
    T1; the map's recovery-model fit stays within 4 % of the fully recovered apparent T1."""
    t1 = np.array([800.0, 1300.0, 1600.0, 2000.0, 2500.0])
    for field in (1.5, 3.0):
        ti, s = simulate_samples(t1, tube_t2_ms(t1), SHMOLLI, 1000.0, field)
        np.testing.assert_allclose(ti, ISSUE_ORDER_MS)
        reference = reference_t1_ms(SHMOLLI, field, 1000.0, t1)
        plain = fit_t1(np.abs(s), ti).t1_ms
        assert plain[-1] < 0.5 * reference[-1] and plain[0] < 0.95 * reference[0]
        fitted = fit_t1_map(np.abs(s), ti, mask=None)
        assert fitted.scheme == SHMOLLI.name and fitted.method.startswith("recovery-model")
        np.testing.assert_allclose(fitted.t1_ms, reference, rtol=0.04)


def test_ti_order_with_a_named_scheme_equals_scanner_order():
    t1 = np.array([300.0, 1000.0, 2000.0])
    ti, s = simulate_samples(t1, tube_t2_ms(t1), SHMOLLI, 900.0, 1.5)
    order = np.argsort(ti)
    sent = fit_t1_map(np.abs(s), ti, mask=None)
    sorted_named = fit_t1_map(np.abs(s[order]), ti[order], scheme="shmolli", mask=None)
    np.testing.assert_allclose(sorted_named.t1_ms, sent.t1_ms, rtol=1e-6)
    # in TI order without a scheme the acquisition order is unknown: the standard fit is used
    unnamed = fit_t1_map(np.abs(s[order]), ti[order], mask=None)
    assert unnamed.scheme is None and unnamed.method.startswith("three-parameter")
    with pytest.raises(ValueError, match="recovery-model fit needs a known sampling"):
        fit_t1_map(np.abs(s[order]), ti[order], method="recovery")
    with pytest.raises(ValueError, match="unknown T1 sampling scheme"):
        fit_t1_map(np.abs(s), ti, scheme="molli-9(9)9")
    with pytest.raises(ValueError, match="has 8 images"):
        fit_t1_map(np.abs(s), ti, scheme="molli-533")
    with pytest.raises(ValueError, match="method"):
        fit_t1_map(np.abs(s), ti, method="best")


def test_polarity_from_phase_images():
    rng = np.random.default_rng(4)
    t1 = np.array([250.0, 400.0, 1200.0])
    ti, s = simulate_samples(t1, tube_t2_ms(t1), MOLLI_335, 1000.0, 1.5)
    background = rng.uniform(-np.pi, np.pi, t1.shape)  # coil and B0 phase, the same in every image
    phase = background + np.where(s < 0, np.pi, 0.0) + rng.normal(0, 0.05, s.shape)
    signed = signed_from_phase(np.abs(s), phase, ti)
    np.testing.assert_allclose(signed, s)
    fitted = fit_t1_map(np.abs(s), ti, phase_rad=phase, mask=None)
    assert "phase-sensitive" in fitted.method
    np.testing.assert_allclose(fitted.t1_ms, fit_t1(s, ti, magnitude=False).t1_ms, rtol=1e-5)
    complex_images = np.abs(s) * np.exp(1j * phase)  # complex input carries its own phase
    np.testing.assert_allclose(fit_t1_map(complex_images, ti, mask=None).t1_ms, fitted.t1_ms, rtol=1e-6)
    with pytest.raises(ValueError, match="phase images"):
        signed_from_phase(np.abs(s), phase[:3], ti)


def test_goodness_of_fit_and_invalid_mask():
    """Tissue pixels fit with R^2 near 1; air (noise only) is masked out and marked invalid."""
    rng = np.random.default_rng(2)
    ti, mag, _ = tube_images(MOLLI_53, 1.5, 1000.0, 20, rng, t1_ms=np.array([900.0, 1500.0]))
    air = np.abs(rng.normal(0, 0.002, (8, 1, 20)) + 1j * rng.normal(0, 0.002, (8, 1, 20)))
    images = np.concatenate([mag, air], axis=1)  # (K, 3, 20): two tubes and air
    mask = signal_mask(images)
    assert mask[:2].all() and not mask[2].any()
    fitted = fit_t1_map(images, ti)
    assert fitted.t1_ms.dtype == np.float32 and fitted.t1_ms.shape == (3, 20)
    assert fitted.invalid[2].all() and not fitted.invalid[:2].any()
    assert np.all(fitted.t1_ms[2] == 0) and np.all(fitted.r_squared[2] == 0)
    assert np.all(fitted.r_squared[:2] > 0.99) and np.all(fitted.residual[:2] > 0)
    strict = fit_t1_map(images, ti, min_r_squared=0.99999)
    assert strict.invalid[:2].sum() > 10  # noise puts R^2 below the bar


# --- tube phantom ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", [1.5, 3.0])
@pytest.mark.parametrize(("scheme", "tolerance"), [(MOLLI_53, 0.02), (MOLLI_335, 0.02), (SHMOLLI, 0.04)])
def test_tube_phantom(scheme, tolerance, field):
    """Tubes 200-2500 ms, Bloch-simulated sampling with noise, magnitude images in scanner order:
    the median of every tube within tolerance of the scheme's apparent T1; no tube collapses."""
    result = run_tubes(scheme, field, n_pixels=100, seed=7)
    assert np.all(np.abs(result.error) < tolerance), np.round(100 * result.error, 1)
    assert np.all(result.min_ms[TUBE_T1_MS > 1000] >= 500.0)
    assert np.all(result.reference_ms < TUBE_T1_MS)  # apparent T1 below the true T1 (MOLLI-type)


@pytest.mark.parametrize("scheme", [MOLLI_53, SHMOLLI])
def test_tube_phantom_signed(scheme):
    result = run_tubes(scheme, 3.0, n_pixels=60, seed=3, signed=True)
    assert "phase-sensitive" in result.method
    assert np.all(np.abs(result.error) < (0.02 if scheme is MOLLI_53 else 0.04))
