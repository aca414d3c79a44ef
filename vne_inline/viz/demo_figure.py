"""The demo montage: per T1 slice the T1 map, the VNE and the matching LGE, with the true lesion outlines.

All three images are on the T1 map's grid (the LGE resampled onto it) and cropped to the heart (the
LV myocardium mask plus a margin). Each image is windowed on its own robust range (1st-99th
percentile of the crop); the T1 map has a colour bar in ms. Outlines, named in the figure's legend: LV
myocardium (cyan), hyperintense lesion (red), intermediate lesion (yellow), from the synthetic exam's
ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DemoSlice", "figure", "montage"]

#: Pixels kept around the myocardium when cropping.
CROP_MARGIN_PX = 25
OUTLINES = (("myocardium", "cyan"), ("lesion_hyperintense", "red"), ("lesion_intermediate", "yellow"))
LEGEND = {"myocardium": "LV myocardium", "lesion_hyperintense": "hyperintense lesion",
          "lesion_intermediate": "intermediate lesion"}


@dataclass
class DemoSlice:
    """One T1 slice for the figure: images (H, W) on the T1 grid; `lge` None when no LGE slice matched;
    `masks` by name (myocardium, lesion_hyperintense, lesion_intermediate, remote, blood)."""

    slice: int
    t1_ms: np.ndarray
    vne: np.ndarray
    lge: np.ndarray | None
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _crop(s: DemoSlice) -> tuple[slice, slice]:
    myo = s.masks.get("myocardium")
    if myo is None or not myo.any():
        return slice(None), slice(None)
    rows, cols = np.nonzero(myo)
    h, w = myo.shape
    return (slice(max(rows.min() - CROP_MARGIN_PX, 0), min(rows.max() + CROP_MARGIN_PX + 1, h)),
            slice(max(cols.min() - CROP_MARGIN_PX, 0), min(cols.max() + CROP_MARGIN_PX + 1, w)))


def _show(ax, image: np.ndarray | None, masks: dict[str, np.ndarray], title: str, cmap: str = "gray"):
    """Draw one cropped image with the outlines; the image artist (None without an image)."""
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    if image is None:
        ax.text(0.5, 0.5, "no matching slice", ha="center", va="center", transform=ax.transAxes)
        return None
    finite = image[np.isfinite(image)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    artist = ax.imshow(image, cmap=cmap, vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
    for name, colour in OUTLINES:
        mask = masks.get(name)
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
    return artist


def figure(slices: list[DemoSlice], title: str):
    """The montage figure (one row per slice: T1 map with its colour bar in ms, VNE, LGE) with a legend
    of the outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = max(len(slices), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(9.6, 3 * rows + 0.6), squeeze=False)
    for row, s in zip(axes, slices, strict=False):
        ys, xs = _crop(s)
        masks = {k: v[ys, xs] for k, v in s.masks.items()}
        t1 = _show(row[0], s.t1_ms[ys, xs], masks, f"slice {s.slice}: T1 map", cmap="viridis")
        bar = fig.colorbar(t1, ax=row[0], fraction=0.046, pad=0.03)
        bar.set_label("T1 (ms)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        _show(row[1], s.vne[ys, xs], masks, "VNE")
        _show(row[2], None if s.lge is None else s.lge[ys, xs], masks, "LGE (PSIR)")
    handles = [Line2D([], [], color=colour, linewidth=1.5, label=LEGEND[name]) for name, colour in OUTLINES
               if any(name in s.masks for s in slices)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                   title="true outlines (synthetic ground truth)", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig


def montage(slices: list[DemoSlice], path: str | Path, title: str) -> Path:
    """Write :func:`figure` as a PNG; returns the path."""
    import matplotlib.pyplot as plt

    fig = figure(slices, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
