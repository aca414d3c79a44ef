"""Agreement statistics against published and independently computed values."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from scipy import stats as sps

from vne_inline.validate.stats import agreement, bland_altman, icc, pearson, wilcoxon

needs_pingouin = pytest.mark.skipif(importlib.util.find_spec("pingouin") is None, reason="ICC needs pingouin")

# Shrout & Fleiss (1979), Psychol Bull 86:420, Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
)
# Their Table 3 (ANOVA mean squares) and Table 4 (ICC values).
BMS, WMS, JMS, EMS = 11.24, 6.26, 32.49, 1.02
PUBLISHED_ICC = {"ICC(1,1)": 0.17, "ICC(2,1)": 0.29, "ICC(3,1)": 0.71}


def icc_from_mean_squares(form: str, n: int = 6, k: int = 4) -> float:
    """Shrout & Fleiss' formulas applied to their published mean squares."""
    return {
        "ICC(1,1)": (BMS - WMS) / (BMS + (k - 1) * WMS),
        "ICC(2,1)": (BMS - EMS) / (BMS + (k - 1) * EMS + k * (JMS - EMS) / n),
        "ICC(3,1)": (BMS - EMS) / (BMS + (k - 1) * EMS),
    }[form]


@needs_pingouin
@pytest.mark.parametrize("form", sorted(PUBLISHED_ICC))
def test_icc_reproduces_shrout_fleiss(form: str) -> None:
    result = icc(SHROUT_FLEISS, form)
    assert result.form == form and result.n == 6
    assert result.value == pytest.approx(PUBLISHED_ICC[form], abs=0.005)
    assert result.value == pytest.approx(icc_from_mean_squares(form), abs=2e-3)  # mean squares rounded
    assert result.ci_low <= result.value <= result.ci_high


@needs_pingouin
def test_icc21_f_test_p_value() -> None:
    # ICC(2,1) F-test: F = BMS / EMS with (n - 1, (n - 1)(k - 1)) degrees of freedom.
    expected = sps.f.sf(BMS / EMS, 5, 15)
    assert icc(SHROUT_FLEISS).p == pytest.approx(expected, rel=0.02)


@needs_pingouin
def test_icc_needs_a_known_form_and_a_table() -> None:
    with pytest.raises(ValueError, match="unknown ICC form"):
        icc(SHROUT_FLEISS, "ICC(2,k)")
    with pytest.raises(ValueError, match="table"):
        icc(np.arange(5.0))
    assert math.isnan(icc(np.ones((4, 2))).value)  # no variance
    assert math.isnan(icc(SHROUT_FLEISS[:2]).value)  # too few targets


def test_pearson_matches_direct_formulas() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0])
    dx, dy = x - x.mean(), y - y.mean()
    r = float((dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum()))
    n = x.size
    t = r * math.sqrt((n - 2) / (1 - r**2))
    p = 2 * sps.t.sf(abs(t), n - 2)
    half = 1.959963984540054 / math.sqrt(n - 3)
    result = pearson(x, y)
    assert result.n == n
    assert result.r == pytest.approx(r, abs=1e-12)
    assert result.p == pytest.approx(p, rel=1e-9)
    assert result.ci_low == pytest.approx(math.tanh(math.atanh(r) - half), abs=1e-9)
    assert result.ci_high == pytest.approx(math.tanh(math.atanh(r) + half), abs=1e-9)


def test_pearson_is_nan_when_undefined() -> None:
    assert math.isnan(pearson([1.0, 2.0], [3.0, 4.0]).r)
    assert math.isnan(pearson([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]).r)
    with pytest.raises(ValueError, match="equal lengths"):
        pearson([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        pearson([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])


def test_bland_altman_by_hand() -> None:
    # differences a - b = -1, 2, 0, 3: mean 1, sample SD sqrt(10 / 3)
    ba = bland_altman([10.0, 12.0, 9.0, 15.0], [11.0, 10.0, 9.0, 12.0])
    sd = math.sqrt(10.0 / 3.0)
    assert (ba.n, ba.bias, ba.sd) == (4, pytest.approx(1.0), pytest.approx(sd))
    assert ba.lower == pytest.approx(1.0 - 1.96 * sd)
    assert ba.upper == pytest.approx(1.0 + 1.96 * sd)
    one = bland_altman([2.0], [1.0])
    assert one.bias == 1.0 and math.isnan(one.sd)


def test_wilcoxon_exact_small_sample() -> None:
    # differences 1.5, -0.5, 2.5, ..., 6.5: ranks 2, 1, 3..7 -> W- = 1; exact two-sided
    # p = 2 * #{rank subsets with sum <= 1} / 2^7 = 2 * 2 / 128
    b = np.zeros(7)
    a = np.array([1.5, -0.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    result = wilcoxon(a, b)
    assert result.statistic == 1.0
    assert result.p == pytest.approx(4 / 128)
    assert result.median_difference == 3.5
    assert math.isnan(wilcoxon([1.0, 2.0], [1.0, 2.0]).p)  # no differences


@needs_pingouin
def test_agreement_bundles_the_three() -> None:
    rng = np.random.default_rng(3)
    lge = rng.uniform(0, 30, 20)
    vne = lge + rng.normal(1.0, 2.0, 20)
    result = agreement(vne, lge)
    assert result.n == 20
    assert result.pearson == pearson(vne, lge)
    assert result.bland_altman == bland_altman(vne, lge)
    assert result.icc.form == "ICC(2,1)" and 0.9 < result.icc.value <= 1.0
