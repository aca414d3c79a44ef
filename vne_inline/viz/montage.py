"""Montages of synthetic (or any similarly tagged) exams: one T1-map slice with its matched cine frame
(end-diastole) and LGE, the IR images, the T1 map and the ground truth; or what a single file holds.

Cine and LGE are matched to the T1 slice and resampled onto its grid with `core.match.match_onto`
(`find_match` + `resample_onto`, as the inline pipeline does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from vne_inline.adapters.scans import Scan, read_scans, scans_of  # noqa: E402
from vne_inline.core.match import Matched, match_onto  # noqa: E402
from vne_inline.core.roles import RoleRules, classify, inversion_time_ms  # noqa: E402
from vne_inline.core.slices import same_plane, t1_map_ms  # noqa: E402
from vne_inline.io.dicom_json import conformed  # noqa: E402
from vne_inline.io.header import ExamHeader, parse_header  # noqa: E402
from vne_inline.io.records import ImageRecord  # noqa: E402
from vne_inline.synth.truth import SliceTruth, read_truth  # noqa: E402

__all__ = ["Panel", "show", "exam_panels", "file_panels"]

T1_MAX_MS = {1.5: 2000.0, 3.0: 2500.0}  # colour-bar top by field strength (T)
MAX_PER_ROW = 7  # wider rows wrap
MAX_PER_SERIES = 2 * MAX_PER_ROW  # images shown of a series no rule recognised, or of the VNE
MIN_COLUMNS = 4  # rows with fewer panels keep this panel width
# Overlay classes (name, colour) drawn over the truth panel, in painting order.
OVERLAY = (("remote", "#3b82f6"), ("blood", "#d946ef"), ("lesion_intermediate", "#f59e0b"), ("lesion_hyperintense", "#ef4444"))


@dataclass
class Panel:
    """One image of a montage: kind "gray" (magnitude), "t1" (ms colour map), "psir" (signed) or "truth"."""

    image: np.ndarray
    title: str
    kind: str = "gray"
    overlay: dict[str, np.ndarray] = field(default_factory=dict)
    vmax: float | None = None  # top of the display window (T1 maps)


# --------------------------------------------------------------------------------------------- roles
def _by_role(scans: list[Scan], rules: RoleRules = RoleRules()) -> tuple[dict[str, list[ImageRecord]], float]:
    """Records grouped by role, and the T1 colour-bar top for the field strength in the headers."""
    out: dict[str, list[ImageRecord]] = {}
    t1_max = T1_MAX_MS[1.5]
    for scan in scans:
        try:
            header = parse_header(scan.header_xml)
        except ValueError:
            header = ExamHeader()
        t1_max = T1_MAX_MS.get(header.field_strength_t, t1_max)
        for record in map(conformed, scan.records):
            out.setdefault(classify(record, rules, header.n_phases).value, []).append(record)
    return out, t1_max


def _pick_slice(records: list[ImageRecord], index: int | None) -> int:
    slices = sorted({r.slice for r in records})
    if index is None:
        return slices[len(slices) // 2]
    if index not in slices:
        raise ValueError(f"no slice {index}; the file holds slices {slices}")
    return index


def _matched(target: ImageRecord, candidates: list[ImageRecord], name: str) -> Panel:
    """The candidate slice matching the target plane, resampled onto its grid."""
    matched = match_onto(target.geometry, [(i, r.geometry) for i, r in enumerate(candidates)],
                         lambda i: candidates[i].pixels.astype(np.float32))
    if not isinstance(matched, Matched):
        return Panel(np.zeros(target.geometry.shape), f"{name}: {matched.reason}")
    source, plane = candidates[matched.match.key], matched.match.plane
    return Panel(matched.resampled.data, f"{name} (slice {source.slice}, {plane.distance_mm:.1f} mm, cos {plane.cosine:.3f})",
                 "psir" if name.startswith("LGE") else "gray")


def _ir_by_ti(roles: dict[str, list[ImageRecord]], k: int, plane: ImageRecord | None = None) -> list[tuple[float, ImageRecord]]:
    """The IR images of slice `k` (on the plane of `plane` when given) with a TI, sorted by TI (ms)."""
    timed = [(ti, r) for r in roles.get("ir", []) if (ti := inversion_time_ms(r)) is not None
             and (same_plane(plane.geometry, r.geometry) if plane is not None else r.slice == k)]
    return sorted(timed, key=lambda t: t[0])


# --------------------------------------------------------------------------------------------- panels
def _truth_panel(truth: SliceTruth) -> Panel:
    overlay = {name: getattr(truth, name) for name, _ in OVERLAY} | {"myocardium": truth.myocardium}
    return Panel(truth.lge_true, "truth on noiseless LGE (zoom)", "truth", overlay)


def exam_panels(directory: Path, slice_index: int | None = None,
                rules: RoleRules = RoleRules()) -> tuple[list[list[Panel]], str]:
    """Rows of panels for one T1 slice of a patient directory, and a title."""
    files = [directory / n for n in ("cine.h5", "t1map.h5", "lge.h5") if (directory / n).exists()]
    roles, t1_max = _by_role(scans_of(files, rules) if files else read_scans(directory, rules), rules)
    if not roles.get("t1map"):
        raise ValueError(f"{directory}: no T1 map found (no image tagged or described as a T1 map)")
    k = _pick_slice(roles["t1map"], slice_index)
    target = next(r for r in roles["t1map"] if r.slice == k)
    top = []
    if roles.get("cine"):
        ed = [r for r in roles["cine"] if r.phase == 0]
        top.append(_matched(target, ed, "cine ED"))
    top.append(Panel(t1_map_ms(target), f"T1 map, slice {k} (ms)", "t1", vmax=t1_max))
    if roles.get("lge"):
        top.append(_matched(target, roles["lge"], "LGE PSIR"))
    title = f"{directory.name}: synthetic exam, T1 slice {k}"
    truth_path = directory / "truth.h5"
    if truth_path.exists():
        truth = next(t for t in read_truth(truth_path) if t.slice == k)
        top.append(_truth_panel(truth))
        a = truth.attrs
        flags = [n for n, on in a.get("artefacts", {}).items() if on]
        title += f" ({a.get('level', '')}) | {a.get('phenotype', '')}, lesion burden {100 * a.get('lesion_burden', 0):.1f} %"
        title += f" | artefacts: {', '.join(flags) if flags else 'none'}"
    bottom = [Panel(r.pixels, f"IR TI {ti:.0f} ms") for ti, r in _ir_by_ti(roles, k, target)]
    return [top, bottom] if bottom else [top], title


def _series_rows(records: list[ImageRecord], name: str) -> list[list[Panel]]:
    """One row per series, its first :data:`MAX_PER_SERIES` images in file order: the VNE images (`name`
    "VNE"), or a series no role rule recognised (`name` empty)."""
    by_series: dict[int, list[ImageRecord]] = {}
    for r in records:
        by_series.setdefault(r.series_index, []).append(r)
    rows = []
    for index, series in by_series.items():
        row = []
        for r in series[:MAX_PER_SERIES]:
            title = (f"{name} slice {r.slice} (series {index})" if name
                     else f"series {index}: slice {r.slice}, phase {r.phase}, set {r.set}")
            row.append(Panel(np.abs(r.pixels).astype(np.float32), title))
        if len(series) > MAX_PER_SERIES:
            row[-1].title += f" (first {MAX_PER_SERIES} of {len(series)})"
        rows.append(row)
    return rows


def file_panels(path: Path, slice_index: int | None = None,
                rules: RoleRules = RoleRules()) -> tuple[list[list[Panel]], str]:
    """Rows of panels showing what one file holds (ISMRMRD scan or truth.h5)."""
    if path.name.startswith("truth"):
        truths = read_truth(path)
        rows = [[_truth_panel(t), Panel(t.t1_true_ms, f"true native T1, slice {t.slice} (ms)", "t1",
                                        vmax=T1_MAX_MS.get(t.attrs.get("field_t"), T1_MAX_MS[1.5]))] for t in truths]
        return rows, f"{path.parent.name}/{path.name}: ground truth per T1 slice"
    roles, t1_max = _by_role(read_scans(path, rules), rules)
    rows: list[list[Panel]] = []
    if roles.get("cine"):
        rows.append([Panel(r.pixels, f"cine ED slice {r.slice}") for r in sorted(roles["cine"], key=lambda r: r.slice) if r.phase == 0])
    if roles.get("ir") or roles.get("t1map"):
        k = _pick_slice(roles.get("t1map") or roles["ir"], slice_index)
        rows.append([Panel(r.pixels, f"slice {k} TI {ti:.0f} ms") for ti, r in _ir_by_ti(roles, k)])
        maps = [Panel(t1_map_ms(r), f"T1 map slice {k} (ms)", "t1", vmax=t1_max) for r in roles.get("t1map", []) if r.slice == k]
        rows += [maps] if maps else []
    if roles.get("lge"):
        rows.append([Panel(r.pixels, f"LGE slice {r.slice}", "psir") for r in sorted(roles["lge"], key=lambda r: r.slice)])
    rows += _series_rows(roles.get("vne", []), "VNE") + _series_rows(roles.get("other", []), "")
    if not rows:
        raise ValueError(f"{path.name}: holds no images")
    wrapped = [row[i : i + MAX_PER_ROW] for row in rows for i in range(0, len(row), MAX_PER_ROW)]
    return wrapped, f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# --------------------------------------------------------------------------------------------- drawing
def _zoom(p: Panel) -> tuple[slice, slice]:
    myo = p.overlay.get("myocardium")
    if myo is None or not myo.any():
        return slice(None), slice(None)
    ys, xs = np.nonzero(myo)
    half = int(max(np.ptp(ys), np.ptp(xs)) * 0.9) + 10
    cy, cx = int(ys.mean()), int(xs.mean())
    return slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half)


def _draw(ax, p: Panel, fig) -> None:
    img = np.asarray(p.image, dtype=np.float32)
    if p.kind == "t1":
        im = ax.imshow(img, cmap="turbo", vmin=0.0, vmax=p.vmax or T1_MAX_MS[1.5], interpolation="nearest")
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.set_title("ms", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    elif p.kind in ("psir", "truth"):
        region = _zoom(p) if p.kind == "truth" else (slice(None), slice(None))
        img = img[region]
        hi = float(np.percentile(img, 99.5)) or 1.0
        ax.imshow(img, cmap="gray", vmin=-0.15 * hi, vmax=hi, interpolation="nearest")
        for (name, colour) in OVERLAY:
            mask = p.overlay.get(name)
            if mask is not None and mask[region].any():
                ax.imshow(np.ma.masked_where(~mask[region], mask[region]), cmap=ListedColormap([colour]), alpha=0.45, interpolation="nearest")
        myo = p.overlay.get("myocardium")
        if myo is not None and myo[region].any():
            ax.contour(myo[region].astype(float), [0.5], colors="#22c55e", linewidths=1.0)
    else:  # window on the central region (the heart), as an operator would, not on fat near the coil
        ny, nx = img.shape
        centre = img[ny // 4 : 3 * ny // 4, nx // 4 : 3 * nx // 4]
        ax.imshow(img, cmap="gray", vmin=0, vmax=float(np.percentile(centre, 99.5)) or 1.0, interpolation="nearest")
    ax.set_title(p.title, fontsize=8)
    ax.set_axis_off()


def render(rows: list[list[Panel]], title: str, out: Path) -> Path:
    """Draw rows of panels (each row spans the figure width) into a PNG."""
    width = 4.2 * MIN_COLUMNS
    heights = [width / max(len(r), MIN_COLUMNS) * 0.9 for r in rows]  # a row's panels share the width
    fig = plt.figure(figsize=(width, sum(heights) + 0.8))
    grid = fig.add_gridspec(len(rows), 1, height_ratios=heights)
    for i, row in enumerate(rows):
        sub = grid[i].subgridspec(1, max(len(row), MIN_COLUMNS))
        for j, panel in enumerate(row):
            _draw(fig.add_subplot(sub[0, j]), panel, fig)
    legend = ""
    if any(p.kind == "truth" for row in rows for p in row):
        legend = "\ntruth: " + ", ".join(f"{n.replace('_', ' ')} ({c})" for n, c in OVERLAY) + ", LV myocardium (green line)"
    fig.suptitle(f"{title}{legend}\nSYNTHETIC DATA, not for clinical use", fontsize=9)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def show(path: str | Path, out: str | Path, slice_index: int | None = None, rules: RoleRules = RoleRules()) -> Path:
    """Montage of a patient directory (one T1 slice with everything matched to it) or of one file."""
    path = Path(path)
    if path.is_dir():
        rows, title = exam_panels(path, slice_index, rules)
    elif path.is_file():
        rows, title = file_panels(path, slice_index, rules)
    else:
        raise FileNotFoundError(f"{path} does not exist")
    return render(rows, title, Path(out))
