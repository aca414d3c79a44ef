"""Figures of the validation report (matplotlib ``Figure`` objects, Agg canvas, no pyplot state).

- :func:`agreement_figure`: per threshold a scatter of VNE vs LGE burden (regression line and
  identity) above a Bland-Altman panel (bias and 95 % limits of agreement).
- :func:`montage`: per example patient, one row per T1 slice: T1 map, VNE, LGE (on the T1 grid),
  and the lesion regions of VNE and LGE at the three thresholds in three colours (truth if known).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from vne_inline.validate.evaluate import READINGS, THRESHOLDS, PatientResult, SliceResult
from vne_inline.validate.summary import AgreementRow

__all__ = ["agreement_figure", "montage", "THRESHOLD_COLOURS"]

#: Lesion colours, from the most lenient threshold (drawn first) to the strictest (drawn on top).
THRESHOLD_COLOURS = {"FWEM": "#ffd92f", "FWQM": "#fc8d62", "FWHM": "#d7191c"}
TRUTH_COLOUR = "#1f78b4"
T1_WINDOW_MS = (400.0, 2000.0)
CROP_MARGIN = 0.35  # of the myocardium's bounding box, on each side


def agreement_figure(rows: list[AgreementRow], path: Path, title: str) -> Path:
    """Scatter (top) and Bland-Altman (bottom) per threshold for one reading's rows (in threshold order)."""
    fig = Figure(figsize=(4.2 * len(rows), 8.0), layout="constrained")
    axes = fig.subplots(2, len(rows), squeeze=False)
    for col, row in enumerate(rows):
        a, ba = row.stats, row.stats.bland_altman
        top, bottom = axes[0, col], axes[1, col]
        top.scatter(row.lge, row.vne, s=18, alpha=0.8, color="#333333")
        hi = max(float(np.max(row.lge, initial=0)), float(np.max(row.vne, initial=0)), 1.0) * 1.05
        top.plot([0, hi], [0, hi], ls="--", color="grey", lw=1, label="identity")
        if np.ptp(row.lge) > 0:
            slope, intercept = np.polyfit(row.lge, row.vne, 1)
            top.plot([0, hi], [intercept, intercept + slope * hi], color="#d7191c", lw=1.5,
                     label=f"y = {slope:.2f} x {intercept:+.2f}")
        top.set(xlim=(0, hi), ylim=(0, hi), xlabel="LGE burden (%)", ylabel="VNE burden (%)",
                title=f"{row.threshold}: r = {a.pearson.r:.2f}, ICC = {a.icc.value:.2f} (n = {a.n})")
        top.legend(loc="upper left", fontsize=8)
        mean, diff = 0.5 * (row.vne + row.lge), row.vne - row.lge
        bottom.scatter(mean, diff, s=18, alpha=0.8, color="#333333")
        for value, style, label in ((ba.bias, "-", "bias"), (ba.lower, "--", "-1.96 SD"), (ba.upper, "--", "+1.96 SD")):
            if np.isfinite(value):
                bottom.axhline(value, ls=style, color="#2c7bb6", lw=1)
                bottom.annotate(f"{label} {value:.2f}", (1.0, value), xycoords=("axes fraction", "data"),
                                ha="right", va="bottom", fontsize=8, color="#2c7bb6")
        bottom.set(xlabel="mean of VNE and LGE burden (%)", ylabel="VNE - LGE burden (%)")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path


def _crop(s: SliceResult) -> tuple[slice, slice]:
    ys, xs = np.nonzero(s.rois.myo | s.rois.blood)
    my, mx = int(CROP_MARGIN * np.ptp(ys)) + 4, int(CROP_MARGIN * np.ptp(xs)) + 4
    return slice(max(ys.min() - my, 0), ys.max() + my + 1), slice(max(xs.min() - mx, 0), xs.max() + mx + 1)


def _window(image: np.ndarray, low: float | None = None) -> dict:
    """Grey-scale display settings: 1st to 99.5th percentile of the finite pixels (or from `low`)."""
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1.0, 99.5]) if finite.size else (0.0, 1.0)
    return {"cmap": "gray", "vmin": float(lo) if low is None else low, "vmax": float(hi)}


def _lesion_labels(s: SliceResult, reading_name: str) -> np.ndarray:
    """0 = none, then 1, 2, 3 for FWEM, FWQM, FWHM (stricter thresholds drawn on top)."""
    reading = next(r for r in READINGS if r.name == reading_name)
    labels = np.zeros(s.rois.myo.shape, np.uint8)
    for k, t in enumerate(reversed(THRESHOLDS), start=1):
        labels[s.lesion(reading, t)] = k
    return labels


LESION_CMAP = ListedColormap(["none", *(THRESHOLD_COLOURS[t] for t in reversed(THRESHOLDS))])
TRUTH_CMAP = ListedColormap(["none", TRUTH_COLOUR])


def _panels(s: SliceResult, vne_reading: str, truth: bool) -> list[tuple[str, np.ndarray, dict, np.ndarray | None, Colormap]]:
    """(title, image, display settings, overlay labels or None, overlay colour map) per column."""
    t1 = {"cmap": "viridis", "vmin": T1_WINDOW_MS[0], "vmax": T1_WINDOW_MS[1]}
    vne, lge = _window(s.vne, low=0.0), _window(s.lge)
    out = [
        ("T1 map (ms)", s.t1_ms, t1, None, LESION_CMAP),
        ("VNE", s.vne, vne, None, LESION_CMAP),
        ("LGE (on T1 grid)", s.lge, lge, None, LESION_CMAP),
        (f"{vne_reading} lesions", s.vne, vne, _lesion_labels(s, vne_reading), LESION_CMAP),
        ("LGE lesions", s.lge, lge, _lesion_labels(s, "LGE"), LESION_CMAP),
    ]
    if truth:
        out.append(("true lesion", s.lge, lge, (s.truth.lesion & s.rois.myo).astype(np.uint8), TRUTH_CMAP))
    return out


def montage(patient: PatientResult, path: Path, vne_reading: str = "VNE adjusted") -> Path:
    """One row per slice: T1 map, VNE, LGE, VNE lesions (`vne_reading`), LGE lesions, truth lesion if known."""
    truth = patient.has_truth
    n_cols = 6 if truth else 5
    fig = Figure(figsize=(2.6 * n_cols, 2.7 * len(patient.slices) + 0.6), layout="constrained")
    axes = fig.subplots(len(patient.slices), n_cols, squeeze=False)
    for i, s in enumerate(patient.slices):
        crop = _crop(s)
        for j, (title, image, style, overlay, cmap) in enumerate(_panels(s, vne_reading, truth)):
            ax = axes[i, j]
            ax.imshow(image[crop], interpolation="nearest", **style)
            if overlay is not None:
                ax.imshow(np.ma.masked_equal(overlay[crop], 0), cmap=cmap, vmin=0, vmax=cmap.N - 1, alpha=0.75,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        axes[i, 0].set_ylabel(f"T1 slice {s.slice}", fontsize=9)
    handles = [Patch(color=THRESHOLD_COLOURS[t], label=t) for t in THRESHOLDS]
    if truth:
        handles.append(Patch(color=TRUTH_COLOUR, label="true lesion"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(f"{patient.name}: lesion burden FWHM, {vne_reading} {patient.burden(vne_reading, 'FWHM'):.1f} %, "
                 f"LGE {patient.burden('LGE', 'FWHM'):.1f} %", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
