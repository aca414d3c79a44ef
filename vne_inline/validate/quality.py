"""Automated image-quality scores, paired per patient for VNE vs LGE (Wilcoxon signed-rank).

The paper compared readers' image-quality grades; without readers we use two objective scores:

``cnr`` (every exam) -- blood-pool / remote-myocardium contrast-to-noise ratio::

    cnr = (mean_blood - mean_remote) / sqrt((sd_blood**2 + sd_remote**2) / 2)

It is the quantity the lesion thresholds depend on: a threshold lies a fraction f of the way from
the remote to the blood mean, so remote pixels cross it at about f * cnr standard deviations --
noise, ghosts, an inhomogeneous or badly nulled remote myocardium (wrong TI) all lower the score
and raise spurious burden. The noise is the pooled SD inside the two ROIs (Cohen's d form), not an
air-background SD, because PSIR reconstructions and the network output have no usable background
noise, and because the VNE clips negative values to 0, which can leave the remote ROI with no spread.
A smooth network output scores high here whether or not it is right, hence:

``fidelity`` (synthetic exams, which hold the artefact-free LGE) -- Pearson correlation between the
image and the true LGE over the LV (myocardium and blood pool). Correlation is invariant to the
linear intensity scale, the one free choice between PSIR units and VNE units (it is the structure
term of SSIM); it is lowered by noise, artefacts, wrong contrast and misplaced lesions alike.

Both ignore non-finite pixels (LGE pixels outside the resampled LGE slice are NaN). A score that is
undefined (no finite pixels, no spread) is NaN.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["QUALITY_SCORES", "cnr", "fidelity"]

#: Score name -> one-line description for the report.
QUALITY_SCORES: dict[str, str] = {
    "cnr": "blood / remote-myocardium contrast-to-noise ratio (pooled ROI SD)",
    "fidelity": "Pearson correlation with the artefact-free true LGE over the LV (synthetic truth)",
}


def _finite(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)[np.asarray(mask, dtype=bool)]
    return values[np.isfinite(values)]


def cnr(image: np.ndarray, remote: np.ndarray, blood: np.ndarray) -> float:
    """Blood / remote contrast over the pooled ROI SD (NaN if an ROI has < 2 finite pixels or no spread)."""
    r, b = _finite(image, remote), _finite(image, blood)
    if r.size < 2 or b.size < 2:
        return math.nan
    noise = math.sqrt(0.5 * (r.var(ddof=1) + b.var(ddof=1)))
    return (b.mean() - r.mean()) / noise if noise > 0 else math.nan


def fidelity(image: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Pearson correlation of `image` with `truth` over the finite pixels of `region` (NaN if undefined)."""
    inside = np.asarray(region, dtype=bool) & np.isfinite(image) & np.isfinite(truth)
    x = np.asarray(image, dtype=np.float64)[inside]
    y = np.asarray(truth, dtype=np.float64)[inside]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])
