"""The demo montage: per T1 slice the T1 map, the VNE and the matching LGE, with the true lesion outlines.

All three images are on the T1 map's grid (the LGE resampled onto it) and cropped to the heart (the
LV myocardium mask plus a margin). Each image is windowed on its own robust range (1st-99th
percentile of the crop). Outlines: LV myocardium (cyan), hyperintense lesion (red), intermediate
lesion (yellow), from the synthetic exam's ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DemoSlice", "montage"]

#: Pixels kept around the myocardium when cropping.
CROP_MARGIN_PX = 25
OUTLINES = (("myocardium", "cyan"), ("lesion_hyperintense", "red"), ("lesion_intermediate", "yellow"))


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


def _show(ax, image: np.ndarray | None, masks: dict[str, np.ndarray], title: str, cmap: str = "gray") -> None:
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    if image is None:
        ax.text(0.5, 0.5, "no matching slice", ha="center", va="center", transform=ax.transAxes)
        return
    finite = image[np.isfinite(image)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    ax.imshow(image, cmap=cmap, vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
    for name, colour in OUTLINES:
        mask = masks.get(name)
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)


def montage(slices: list[DemoSlice], path: str | Path, title: str) -> Path:
    """Write the montage (one row per slice: T1 map, VNE, LGE) as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(len(slices), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for row, s in zip(axes, slices, strict=False):
        ys, xs = _crop(s)
        masks = {k: v[ys, xs] for k, v in s.masks.items()}
        _show(row[0], s.t1_ms[ys, xs], masks, f"slice {s.slice}: T1 map (ms)", cmap="viridis")
        _show(row[1], s.vne[ys, xs], masks, "VNE")
        _show(row[2], None if s.lge is None else s.lge[ys, xs], masks, "LGE (PSIR)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
