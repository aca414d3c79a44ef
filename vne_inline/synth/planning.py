"""Scan planning: the slice planes of the cine, T1-mapping and LGE scans of one exam.

The operator plans a short-axis stack on the heart as it lies during the cine (with a few degrees of
error), then T1 maps at basal, mid and apical cine positions (+-2 mm, a few degrees) and an LGE stack
on the cine positions, each scan with its own field of view, matrix, in-plane rotation and FOV
centre. Every T1 slice is guaranteed an LGE slice within 3 mm (normals' cosine > 0.95) and a cine slice
within the paper's criteria. All planes come from `geometry.plane_from_normal`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vne_inline.core.match import Match, MatchCriteria, find_match
from vne_inline.geometry import SliceGeometry, plane_from_normal
from vne_inline.synth.acquisition import Resolution
from vne_inline.synth.anatomy import Anatomy

__all__ = ["ExamPlan", "plan_exam", "T1_LEVELS", "SLICE_THICKNESS_MM", "LGE_MATCH"]

SLICE_THICKNESS_MM = 8.0  # cine, ShMOLLI and LGE (design brief §5)
T1_LEVELS = ("basal", "mid", "apical")
T1_LEVEL_FRACTION = (0.2, 0.48, 0.72)  # of the base-apex distance
T1_PIXEL_MM = (1.0, 1.6)  # displayed T1-map pixel size (vendors and protocols differ)
LGE_MATCH = MatchCriteria(min_cosine=0.95, max_distance_mm=3.0)
MAX_TRIES = 50


@dataclass(frozen=True)
class ExamPlan:
    """The planes and acquired resolution of each scan; `t1_cine_slice[k]` is the cine slice T1 slice k
    was planned on."""

    cine: tuple[SliceGeometry, ...]
    t1: tuple[SliceGeometry, ...]
    lge: tuple[SliceGeometry, ...]
    t1_cine_slice: tuple[int, ...]
    resolution: dict[str, Resolution]


def _tilt(v: np.ndarray, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """`v` rotated by up to `max_deg` about a random axis perpendicular to it."""
    axis = np.cross(v, rng.standard_normal(3))
    axis /= np.linalg.norm(axis)
    a = np.deg2rad(rng.uniform(0.0, max_deg))
    return np.cos(a) * v + np.sin(a) * np.cross(axis, v) + (1 - np.cos(a)) * (axis @ v) * axis


def _grid(rng: np.random.Generator, pixel_mm: tuple[float, float], nx_or_fov: tuple[float, float], ratio: tuple[float, float], fixed_nx: bool):
    """(fov (x, y, thickness) mm, matrix (nx, ny)): square pixels, rows a fraction `ratio` of columns."""
    px = rng.uniform(*pixel_mm)
    nx = int(rng.choice(np.arange(*nx_or_fov, 16))) if fixed_nx else int(round(rng.uniform(*nx_or_fov) / px))
    ny = int(round(nx * rng.uniform(*ratio) / (16 if fixed_nx else 1))) * (16 if fixed_nx else 1)
    return (nx * px, ny * px, SLICE_THICKNESS_MM), (nx, ny)


def _offset(frame_axes: np.ndarray, normal: np.ndarray, rng: np.random.Generator, max_mm: float) -> np.ndarray:
    """A random in-plane FOV-centre offset (mm) perpendicular to `normal`."""
    v = rng.uniform(-max_mm, max_mm) * frame_axes[0] + rng.uniform(-max_mm, max_mm) * frame_axes[1]
    return v - (v @ normal) * normal


def _resolutions(rng: np.random.Generator, t1_pixel_mm: float) -> dict[str, Resolution]:
    """Acquired k-space fractions: cine and LGE at about their displayed pixel size with 65-85 %
    phase resolution; T1 mapping acquired at about 1.6-2.0 mm (read) and 1.9-2.4 mm (phase) and
    interpolated to its displayed 1.0-1.6 mm pixels (no fraction above 1)."""
    u = rng.uniform
    return {
        "cine": Resolution(u(0.85, 1.0), u(0.65, 0.8)),
        "t1": Resolution(min(1.0, t1_pixel_mm / u(1.6, 2.0)), min(1.0, t1_pixel_mm / u(1.9, 2.4))),
        "lge": Resolution(u(0.8, 1.0), u(0.7, 0.85)),
    }


def plan_exam(anatomy: Anatomy, rng: np.random.Generator) -> ExamPlan:
    """Plan cine, T1 and LGE planes on the anatomy at its cine position."""
    frame = anatomy.frame
    axes = frame.axes
    apex_w = anatomy.heart.wall.apex_w
    normal = _tilt(-frame.e_long, 3.0, rng)  # read x phase = -e_long: septum left, anterior up
    towards_apex = -normal
    n_cine = int(rng.integers(10, 13))
    spacing = rng.uniform(8.0, 10.0)
    first = rng.uniform(3.0, 8.0)
    w_cine = first + spacing * np.arange(n_cine)
    on_axis = [frame.origin + w * towards_apex for w in w_cine]

    fov_c, mat_c = _grid(rng, (1.4, 1.8), (340.0, 380.0), (0.75, 0.9), fixed_nx=False)
    off_c = _offset(axes, normal, rng, 12.0)
    rot_c = rng.uniform(-12.0, 12.0)
    cine = tuple(plane_from_normal(c + off_c, normal, fov_c, mat_c, rot_c, up=frame.e_inf) for c in on_axis)

    levels = [int(np.argmin(np.abs(w_cine - f * apex_w))) for f in T1_LEVEL_FRACTION]
    if len(set(levels)) < len(levels):
        raise ValueError("cine stack too coarse for three distinct T1 levels")
    for _ in range(MAX_TRIES):
        fov_t, mat_t = _grid(rng, T1_PIXEL_MM, (300.0, 360.0), (0.78, 0.86), fixed_nx=False)
        rot_t = rng.uniform(-12.0, 12.0)
        t1 = tuple(
            plane_from_normal(on_axis[k] + rng.uniform(-2.0, 2.0) * towards_apex + _offset(axes, normal, rng, 8.0),
                              _tilt(normal, 3.0, rng), fov_t, mat_t, rot_t, up=frame.e_inf)
            for k in levels
        )
        fov_l, mat_l = _grid(rng, (1.4, 1.8), (340.0, 400.0), (0.75, 0.9), fixed_nx=False)
        normal_l = _tilt(normal, 2.0, rng)
        shift_l = rng.uniform(-1.0, 1.0)
        off_l = _offset(axes, normal, rng, 10.0)
        rot_l = rng.uniform(-12.0, 12.0)
        lge = tuple(plane_from_normal(c + shift_l * towards_apex + off_l, normal_l, fov_l, mat_l, rot_l, up=frame.e_inf) for c in on_axis)
        cine_ok = all(isinstance(find_match(g, list(enumerate(cine))), Match) for g in t1)
        lge_ok = all(isinstance(find_match(g, list(enumerate(lge)), LGE_MATCH), Match) for g in t1)
        distinct = abs(lge[0].pixel_spacing[0] - cine[0].pixel_spacing[0]) > 0.05
        if cine_ok and lge_ok and distinct:
            return ExamPlan(cine, t1, lge, tuple(levels), _resolutions(rng, fov_t[0] / mat_t[0]))
    raise RuntimeError("could not plan T1 and LGE slices within the matching criteria")
