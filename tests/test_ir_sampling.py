"""T1-mapping schemes in acquisition order (physics.ir_sampling) and the per-patient acquisition domain."""

from __future__ import annotations

import numpy as np
import pytest

from vne_inline.physics.ir_sampling import SCHEMES, fit_scheme_t1, sampling, scheme_from_ti, scheme_signals
from vne_inline.physics.t1 import fit_t1, ir_signal, look_locker_parameters
from vne_inline.synth.patient import T1_SCHEMES, draw_domain, draw_patient


def test_acquisition_order_of_each_scheme_at_rr_1000():
    assert sampling("shmolli", 1000.0).ti_ms.tolist() == [100, 1100, 2100, 3100, 4100, 180, 260]
    assert sampling("molli-533", 1000.0).ti_ms.tolist() == [100, 1100, 2100, 3100, 4100, 180, 1180, 2180]
    s = sampling("molli-3335", 1000.0)
    assert s.ti_ms.tolist() == [100, 1100, 2100, 180, 1180, 2180, 260, 1260, 2260, 3260, 4260]
    assert s.inversion.tolist() == [0] * 3 + [1] * 3 + [2] * 5
    # second inversion: 3 recovery beats after the last readout (2000 ms), first readout at beat 6
    assert s.inversion_ms[1] == pytest.approx(6000.0 - 180.0 - (-100.0))
    assert [scheme_from_ti(SCHEMES[k].n_images) for k in SCHEMES] == list(SCHEMES) and scheme_from_ti(9) is None


def test_first_inversion_is_the_three_parameter_model():
    s = sampling("molli-533", 900.0)
    t1 = np.array([300.0, 960.0, 1500.0])
    got = scheme_signals(t1, 1.0, s)[:, s.inversion == 0]
    a, b, t1s = look_locker_parameters(t1, 1.0, readout_rate_per_ms=3.0e-4 * 1000.0 / 900.0)
    want = ir_signal(s.ti_ms[s.inversion == 0][None], a[:, None], b[:, None], t1s[:, None])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_incomplete_recovery_lowers_only_long_t1_in_later_inversions():
    s = sampling("shmolli", 1000.0)
    short, long_ = scheme_signals(np.array([250.0, 1800.0]), 1.0, s)
    a, b, t1s = look_locker_parameters(np.array([250.0, 1800.0]), 1.0)
    full = ir_signal(s.ti_ms, a[:, None], b[:, None], t1s[:, None])
    late = s.inversion > 0
    np.testing.assert_allclose(short[late], full[0, late], atol=2e-3)  # fat recovers within a beat
    assert np.all(long_[late] > full[1, late] + 0.1)  # blood starts from a smaller Mz: less negative
    with pytest.raises(ValueError, match="unknown T1 scheme"):
        sampling("molli-999", 1000.0)
    with pytest.raises(ValueError, match="rr_ms"):
        sampling("shmolli", 0.0)


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("rr", [600.0, 1200.0])
def test_model_based_fit_recovers_t1(scheme, rr):
    s = sampling(scheme, rr)
    t1 = np.array([250.0, 500.0, 960.0, 1300.0, 1800.0, 2500.0])
    clean = np.abs(scheme_signals(t1, 1.0, s)).T * 1000.0
    np.testing.assert_allclose(fit_scheme_t1(clean, s), t1, rtol=0.01)
    rng = np.random.default_rng(1)
    noisy = np.abs(np.repeat(clean, 300, axis=1) + rng.normal(0, 1000.0 / 40, (len(s.ti_ms), t1.size * 300)))
    med = np.nanmedian(fit_scheme_t1(noisy, s).reshape(t1.size, 300), axis=1)
    np.testing.assert_allclose(med, t1, rtol=0.03)


def test_shmolli_three_parameter_fit_is_biased_where_the_model_based_fit_is_not():
    """Why the synthetic ShMOLLI map is not the all-image three-parameter fit: one recovery beat."""
    s = sampling("shmolli", 1000.0)
    clean = np.abs(scheme_signals(np.array([1800.0]), 1.0, s)).T * 1000.0
    three = fit_t1(clean, s.ti_ms, magnitude=True).t1_ms
    assert abs(three[0] - 1800.0) > 200.0 and fit_scheme_t1(clean, s)[0] == pytest.approx(1800.0, rel=0.01)


def test_fit_input_checks_and_masks():
    s = sampling("shmolli", 1000.0)
    with pytest.raises(ValueError, match="need 7 images"):
        fit_scheme_t1(np.ones((8, 4)), s)
    images = np.abs(scheme_signals(np.full((2, 3), 960.0), 1.0, s)).transpose(2, 0, 1) * 500.0
    images[:, 0, 0] = 0.0
    images[:, 0, 1] = np.nan
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False
    t1 = fit_scheme_t1(images, s, mask)
    assert np.isnan(t1[0, 0]) and np.isnan(t1[0, 1]) and np.isnan(t1[1, 2])
    assert t1[1, 0] == pytest.approx(960.0, rel=0.01)


def test_domains_mix_and_leave_anatomy_alone():
    domains = [draw_domain(5, i, "mixed", "mixed") for i in range(60)]
    assert {d.field_t for d in domains} == {1.5, 3.0} and {d.t1_scheme for d in domains} == set(T1_SCHEMES)
    assert {d.t1_storage for d in domains} == {"float", "uint16"}
    assert all(0.25 <= d.image_gain <= 4.0 for d in domains)
    fixed = [draw_domain(5, i, 3.0, "molli-533") for i in range(10)]
    assert {(d.field_t, d.t1_scheme) for d in fixed} == {(3.0, "molli-533")}
    a, b = draw_patient(5, 3, 1.5, "shmolli"), draw_patient(5, 3, 3.0, "molli-3335")
    assert a.heart == b.heart and a.tissue == b.tissue and a.quality == b.quality and a.rr_ms == b.rr_ms
    assert all(50.0 <= 60000.0 / draw_patient(5, i).rr_ms <= 100.0 for i in range(20))
    with pytest.raises(ValueError, match="T1 scheme"):
        draw_domain(5, 0, 1.5, "saturation")
    with pytest.raises(ValueError, match="field strength"):
        draw_domain(5, 0, 7.0)
