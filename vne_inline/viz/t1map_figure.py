"""PNG of fitted T1 maps: one column per slice, the map (colour bar in ms) above its R^2 map; invalid
pixels black."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vne_inline.physics.t1_mapping import T1Map  # noqa: E402

__all__ = ["t1map_figure", "T1_DISPLAY_MAX_MS"]

T1_DISPLAY_MAX_MS = 2500.0  # colour-bar top: blood at 3 T stays in range


def t1map_figure(path: str | Path, fits: Sequence[tuple[int, T1Map]], title: str = "") -> Path:
    """Write the figure of `fits` ((slice index, map) pairs) to `path` (PNG); returns the path."""
    if not fits:
        raise ValueError("no T1 maps to draw")
    n = len(fits)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n + 1.0, 6.6), squeeze=False, constrained_layout=True)
    t1_cmap = plt.get_cmap("viridis").with_extremes(bad="black")
    r2_cmap = plt.get_cmap("magma").with_extremes(bad="black")
    for col, (index, fit) in enumerate(fits):
        t1 = np.ma.masked_where(fit.invalid, fit.t1_ms)
        r2 = np.ma.masked_where(fit.invalid, fit.r_squared)
        valid = ~fit.invalid
        median = float(np.median(fit.t1_ms[valid])) if valid.any() else float("nan")
        im = axes[0, col].imshow(t1, cmap=t1_cmap, vmin=0.0, vmax=T1_DISPLAY_MAX_MS, interpolation="nearest")
        axes[0, col].set_title(f"slice {index}: T1, median {median:.0f} ms", fontsize=9)
        fig.colorbar(im, ax=axes[0, col], shrink=0.8, label="T1 (ms)")
        im = axes[1, col].imshow(r2, cmap=r2_cmap, vmin=0.9, vmax=1.0, interpolation="nearest")
        axes[1, col].set_title(f"R$^2$ ({valid.mean():.0%} of pixels valid)", fontsize=9)
        fig.colorbar(im, ax=axes[1, col], shrink=0.8, label="R$^2$")
        for ax in axes[:, col]:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
