"""Assemble classified images into slices: cine (phases), T1 (map + IR images with TIs), LGE.

Pure functions on :class:`ImageRecord` lists; used by the inline store, training-data preparation
and evaluation. T1 maps are decoded to ms: float data as is, integer data divided by
``GADGETRON_ScaleRatio`` when present (Gadgetron writes uint16 maps scaled that way).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from vne_inline.core.roles import inversion_time_ms
from vne_inline.geometry import SliceGeometry
from vne_inline.io.records import ImageRecord

__all__ = [
    "CineSlice", "T1Slice", "LgeSlice", "cine_slices", "t1_slices", "lge_slices", "t1_map_ms", "same_plane",
]

#: IR images belong to a T1 map when their planes agree this closely (same scan, same slice).
SAME_PLANE_COSINE = 0.99
SAME_PLANE_DISTANCE_MM = 1.0


@dataclass
class CineSlice:
    """One cine slice: `frames` (P, y, x) float32 in phase order."""

    key: tuple[int, int]
    geometry: SliceGeometry
    frames: np.ndarray


@dataclass
class T1Slice:
    """One T1-mapping slice: the map (ms) and its IR-weighted images sorted by TI (ms)."""

    slice: int
    geometry: SliceGeometry
    t1_ms: np.ndarray
    ir: np.ndarray
    ti_ms: np.ndarray
    map_record: ImageRecord


@dataclass
class LgeSlice:
    key: tuple[int, int]
    geometry: SliceGeometry
    image: np.ndarray


def same_plane(a: SliceGeometry, b: SliceGeometry) -> bool:
    """True when two images lie on the same slice plane and grid (same scan, same slice)."""
    m = a.compare(b)
    return m.cosine > SAME_PLANE_COSINE and m.distance_mm < SAME_PLANE_DISTANCE_MM and a.shape == b.shape


def t1_map_ms(record: ImageRecord) -> np.ndarray:
    """The T1 map in ms as float32 (integer maps divided by GADGETRON_ScaleRatio when given)."""
    data = record.pixels
    if np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError("T1 map is complex; expected real T1 values in ms")
    t1 = data.astype(np.float32)
    if np.issubdtype(data.dtype, np.integer):
        scale = record.meta_float("GADGETRON_ScaleRatio")
        if scale:
            t1 = t1 / np.float32(scale)
    return t1


def _magnitude(data: np.ndarray) -> np.ndarray:
    return (np.abs(data) if np.iscomplexobj(data) else data).astype(np.float32)


def cine_slices(records: Iterable[ImageRecord]) -> list[CineSlice]:
    """Group cine images by (series, slice) and stack their phases in order."""
    groups: dict[tuple[int, int], list[ImageRecord]] = defaultdict(list)
    for r in records:
        groups[(r.series_index, r.slice)].append(r)
    out = []
    for key, recs in sorted(groups.items()):
        recs = sorted(recs, key=lambda r: r.phase)
        shapes = {r.pixels.shape for r in recs}
        if len(shapes) != 1:
            raise ValueError(f"cine slice {key[1]} mixes image shapes {sorted(shapes)}")
        out.append(CineSlice(key=key, geometry=recs[0].geometry, frames=np.stack([_magnitude(r.pixels) for r in recs])))
    return out


def lge_slices(records: Iterable[ImageRecord]) -> list[LgeSlice]:
    """One LGE image per (series, slice); the real part is kept for PSIR (sign matters)."""
    out = {}
    for r in records:
        data = r.pixels.real if np.iscomplexobj(r.pixels) else r.pixels
        out[(r.series_index, r.slice)] = LgeSlice(key=(r.series_index, r.slice), geometry=r.geometry,
                                                  image=data.astype(np.float32))
    return [out[k] for k in sorted(out)]


def t1_slices(maps: Sequence[ImageRecord], ir_images: Sequence[ImageRecord]) -> list[T1Slice]:
    """Pair every T1 map with the IR images on its plane (sorted by TI); ValueError for a map without them."""
    out = []
    for m in sorted(maps, key=lambda r: r.slice):
        geom = m.geometry
        mine = [r for r in ir_images if same_plane(geom, r.geometry)]
        timed = sorted(((ti, r) for r in mine if (ti := inversion_time_ms(r)) is not None), key=lambda t: t[0])
        if len(timed) < 3:
            untimed = len(mine) - len(timed)
            note = f" ({untimed} more without an inversion time)" if untimed else ""
            raise ValueError(f"T1 slice {m.slice}: {len(timed)} IR-weighted images with TI found{note}, need >= 3")
        out.append(
            T1Slice(
                slice=m.slice,
                geometry=geom,
                t1_ms=t1_map_ms(m),
                ir=np.stack([_magnitude(r.pixels) for _, r in timed]),
                ti_ms=np.array([t for t, _ in timed], dtype=np.float32),
                map_record=m,
            )
        )
    return out

