"""Agreement statistics for method comparison (VNE vs LGE), from the field's libraries.

- Pearson r with its p-value and 95 % CI (Fisher z): :func:`scipy.stats.pearsonr`.
- ICC(2,1) (Shrout & Fleiss 1979; McGraw & Wong 1996 "ICC(A,1)"): two-way random effects, absolute
  agreement, single measures -- the usual form when two methods measure the same patients. Computed
  by :func:`pingouin.intraclass_corr` (F-test p-value; 95 % CI, which pingouin rounds to 2 decimals).
  ICC(1,1) and ICC(3,1) are available for checks.
- Bland-Altman: bias = mean of the differences (a - b); 95 % limits of agreement = bias +/- 1.96 SD
  of the differences (sample SD, ddof = 1; Bland & Altman, Lancet 1986).
- Wilcoxon signed-rank test on paired scores: :func:`scipy.stats.wilcoxon` (two-sided).

Statistics that cannot be computed (too few pairs, constant data) come back as NaN, never raise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "ICC_FORMS",
    "PINGOUIN_HINT",
    "Agreement",
    "BlandAltman",
    "Icc",
    "Pearson",
    "Wilcoxon",
    "agreement",
    "bland_altman",
    "icc",
    "pearson",
    "wilcoxon",
]

NAN = float("nan")
PINGOUIN_HINT = "pip install 'vne-inline[validate]' or pip install pingouin"

#: Our names of the single-measures ICC forms -> pingouin's row names (0.5.x, then >= 0.6).
ICC_FORMS: dict[str, tuple[str, str]] = {
    "ICC(1,1)": ("ICC1", "ICC(1,1)"),  # one-way random, single measures
    "ICC(2,1)": ("ICC2", "ICC(A,1)"),  # two-way random, absolute agreement, single measures
    "ICC(3,1)": ("ICC3", "ICC(C,1)"),  # two-way mixed, consistency, single measures
}


def _pairs(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired data must have equal lengths, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired data must be finite")
    return x, y


@dataclass(frozen=True)
class Pearson:
    """Pearson correlation coefficient, two-sided p-value and 95 % CI (Fisher z)."""

    r: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def pearson(a: ArrayLike, b: ArrayLike) -> Pearson:
    """Pearson r of paired data (NaN when n < 3 or either variable is constant)."""
    x, y = _pairs(a, b)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Pearson(NAN, NAN, NAN, NAN, int(x.size))
    result = stats.pearsonr(x, y)
    ci = result.confidence_interval(confidence_level=0.95)
    return Pearson(float(result.statistic), float(ci.low), float(ci.high), float(result.pvalue), int(x.size))


@dataclass(frozen=True)
class Icc:
    """An intraclass correlation coefficient: `form` (e.g. "ICC(2,1)"), F-test p-value, 95 % CI."""

    form: str
    value: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def icc(ratings: ArrayLike, form: str = "ICC(2,1)") -> Icc:
    """ICC of a (targets, raters) table, e.g. columns (VNE, LGE) with one row per patient.

    NaN when there are fewer than 3 targets or the ratings have no variance.
    """
    if form not in ICC_FORMS:
        raise ValueError(f"unknown ICC form {form!r}; use one of {sorted(ICC_FORMS)}")
    table = np.asarray(ratings, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] < 2:
        raise ValueError(f"ratings must be a (targets, raters >= 2) table, got shape {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("ratings must be finite")
    n, k = table.shape
    if n < 3 or np.ptp(table) == 0:
        return Icc(form, NAN, NAN, NAN, NAN, n)
    try:  # heavy (pandas, statsmodels): imported only when an ICC is needed
        import pandas as pd
        import pingouin
    except ImportError as exc:
        raise ImportError(f"the ICC needs pingouin ({PINGOUIN_HINT})") from exc

    long = pd.DataFrame(
        {"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n), "rating": table.ravel()}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-data RuntimeWarnings, pandas deprecation notes
        result = pingouin.intraclass_corr(long, targets="target", raters="rater", ratings="rating")
    row = result[result["Type"].isin(ICC_FORMS[form])].iloc[0]
    ci = row[next(c for c in result.columns if c.startswith("CI95"))]
    return Icc(form, float(row["ICC"]), float(ci[0]), float(ci[1]), float(row["pval"]), n)


@dataclass(frozen=True)
class BlandAltman:
    """Bias (mean of a - b), SD of the differences and the 95 % limits of agreement."""

    bias: float
    sd: float
    lower: float
    upper: float
    n: int


def bland_altman(a: ArrayLike, b: ArrayLike) -> BlandAltman:
    """Bland-Altman statistics of paired data (differences a - b; SD NaN when n < 2)."""
    x, y = _pairs(a, b)
    d = x - y
    if d.size == 0:
        return BlandAltman(NAN, NAN, NAN, NAN, 0)
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else NAN
    return BlandAltman(bias, sd, bias - 1.96 * sd, bias + 1.96 * sd, int(d.size))


@dataclass(frozen=True)
class Wilcoxon:
    """Wilcoxon signed-rank test of paired scores: statistic, two-sided p, median of a - b."""

    statistic: float
    p: float
    median_difference: float
    n: int


def wilcoxon(a: ArrayLike, b: ArrayLike) -> Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of a vs b (NaN when fewer than 2 pairs or all differences are 0)."""
    x, y = _pairs(a, b)
    d = x - y
    median = float(np.median(d)) if d.size else NAN
    if d.size < 2 or not np.any(d != 0):
        return Wilcoxon(NAN, NAN, median, int(d.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small-sample / ties notes
        result = stats.wilcoxon(x, y)
    return Wilcoxon(float(result.statistic), float(result.pvalue), median, int(d.size))


@dataclass(frozen=True)
class Agreement:
    """Agreement of a new method (`a`, e.g. VNE burden) with a reference (`b`, LGE burden)."""

    pearson: Pearson
    icc: Icc
    bland_altman: BlandAltman

    @property
    def n(self) -> int:
        return self.bland_altman.n


def agreement(a: ArrayLike, b: ArrayLike) -> Agreement:
    """Pearson r, ICC(2,1) and Bland-Altman of paired measurements a (new) vs b (reference)."""
    x, y = _pairs(a, b)
    return Agreement(pearson(x, y), icc(np.column_stack([x, y])), bland_altman(x, y))

