"""A T1 map fitted from one slice's IR-weighted images, as an image of its own series.

Used inline when the scanner sends no map (see :class:`~vne_inline.core.pipeline.CoreConfig` ``t1_maps``)
and by ``vne-inline t1map``. The images are taken in the order they were sent (the scanner's
acquisition order, which tells the inversions apart) and fitted with
:func:`vne_inline.physics.t1_mapping.fit_t1_map`. The map record: header copied field by field from
the first IR image (geometry, slice, time stamps), float32 T1 in ms (0 where invalid), meta
``GADGETRON_DataRole=T1`` / ``DataRole=T1``, the fit named in ``GADGETRON_ImageComment``,
``ImageComment`` and ``ImageComments``, a T1 display window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vne_inline.core.emit import derived_header
from vne_inline.core.roles import inversion_time_ms
from vne_inline.core.slices import same_plane
from vne_inline.io.records import ImageRecord, MetaValue
from vne_inline.physics.t1_mapping import T1Map, fit_t1_map

__all__ = ["FittedT1", "fit_slice", "map_record", "is_fitted_map", "FIT_HISTORY", "quality_records", "phase_radians", "DEFAULT_T1_SERIES", "T1_WINDOW_MS",
           "R2_ROLE", "INVALID_ROLE"]

#: Default `image_series_index` of fitted T1 maps (next to the VNE's default 99).
DEFAULT_T1_SERIES = 98
#: Display window (centre, width) in ms: native myocardium to blood at 1.5 and 3 T.
T1_WINDOW_MS = (1300.0, 1800.0)
#: ``GADGETRON_ImageProcessingHistory`` of a fitted map (what tells it from a scanner's map).
FIT_HISTORY = "T1FIT"
#: DataRole of the goodness-of-fit (R^2) and invalid-pixel images (classified ``other``, never inputs).
R2_ROLE, INVALID_ROLE = "T1FitR2", "T1FitInvalid"


@dataclass(frozen=True)
class FittedT1:
    """The fitted map of one slice, its record and the fit time (ms)."""

    fit: T1Map
    record: ImageRecord
    time_ms: float


def _description(record: ImageRecord) -> str:
    return record.meta_str("GADGETRON_SeqDescription") or record.meta_str("SequenceDescription") or "IR"


def map_record(fit: T1Map, like: ImageRecord, series_index: int) -> ImageRecord:
    """The T1 map as an ImageRecord on `like`'s slice (geometry and indices copied), own series."""
    shape = like.pixels.shape
    if fit.t1_ms.shape != shape:
        raise ValueError(f"T1 map shape {fit.t1_ms.shape} does not match the IR images {shape}")
    head = derived_header(like.head, shape, series_index)
    head.set = 0
    center, width = (f"{v:g}" for v in T1_WINDOW_MS)
    meta: dict[str, MetaValue] = {
        "GADGETRON_DataRole": "T1",
        "DataRole": "T1",
        "GADGETRON_SeqDescription": f"{_description(like)}_T1FIT",
        "SequenceDescriptionAdditional": "T1FIT",
        "GADGETRON_ImageProcessingHistory": FIT_HISTORY,
        "GADGETRON_ImageComment": fit.comment,
        "ImageComment": fit.comment,
        "ImageComments": fit.comment,
        "GADGETRON_WindowCenter": center,
        "GADGETRON_WindowWidth": width,
        "WindowCenter": center,
        "WindowWidth": width,
        "Keep_image_geometry": "1",
    }
    return ImageRecord(data=fit.t1_ms.astype(np.float32)[None, None], head=head, meta=meta)


def is_fitted_map(record: ImageRecord) -> bool:
    """True for a T1 map made by :func:`map_record` (not one from the scanner)."""
    return record.meta_str("GADGETRON_ImageProcessingHistory") == FIT_HISTORY


def quality_records(fit: T1Map, t1_map: ImageRecord) -> list[ImageRecord]:
    """The fit's R^2 (float32, 0 where invalid; series + 1000) and invalid-pixel mask (uint16, 1 = invalid;
    series + 2000) on the map's slice, tagged so that no role rule takes them for IR images or maps."""
    out = []
    for offset, role, data, description in ((1000, R2_ROLE, fit.r_squared.astype(np.float32), "R2"),
                                            (2000, INVALID_ROLE, fit.invalid.astype(np.uint16), "INVALID")):
        head = derived_header(t1_map.head, fit.t1_ms.shape, (t1_map.series_index + offset) % 65536)
        meta: dict[str, MetaValue] = {"GADGETRON_DataRole": role, "DataRole": role,
                                      "GADGETRON_SeqDescription": f"T1FIT_{description}",
                                      "GADGETRON_ImageComment": f"{fit.comment}: {description}"}
        out.append(ImageRecord(data=data[None, None], head=head, meta=meta))  # data type follows the data
    return out


def phase_radians(record: ImageRecord) -> np.ndarray:
    """A phase image in radians: float data as is; integer data as the 12-bit scale of Siemens phase
    images (0..4095 for -pi..pi)."""
    data = record.pixels
    if np.issubdtype(data.dtype, np.integer):
        return (data.astype(np.float64) - 2048.0) * (np.pi / 2048.0)
    return data.astype(np.float64)


def _matching_phases(ir_images: Sequence[ImageRecord], ti: list[float],
                     phase_images: Sequence[ImageRecord]) -> np.ndarray | None:
    """Phase (K, y, x) in radians for the IR images, matched by plane and TI (0.5 ms); None unless
    every IR image has one."""
    out = []
    for r, t in zip(ir_images, ti, strict=True):
        match = [p for p in phase_images if same_plane(p.geometry, r.geometry) and p.pixels.shape == r.pixels.shape
                 and (pt := inversion_time_ms(p)) is not None and abs(pt - t) <= 0.5]
        if not match:
            return None
        out.append(phase_radians(match[0]))
    return np.stack(out)


def fit_slice(ir_images: Sequence[ImageRecord], series_index: int = DEFAULT_T1_SERIES,
              scheme: str | None = None, method: str = "auto", min_r_squared: float = 0.0,
              phase_images: Sequence[ImageRecord] = ()) -> FittedT1:
    """Fit the map of one slice from its IR images in the order sent (ValueError with the reason when
    they cannot be fitted: fewer than 3, no TI, mixed shapes, unknown scheme). `phase_images` (same
    plane and TIs, e.g. the scanner's phase series) give phase-sensitive polarity when every IR image
    has one; otherwise the polarity comes from the magnitudes."""
    if len(ir_images) < 3:
        raise ValueError(f"{len(ir_images)} IR-weighted images, need >= 3 to fit a T1 map")
    ti = [inversion_time_ms(r) for r in ir_images]
    if any(t is None for t in ti):
        raise ValueError("an IR-weighted image has no inversion time")
    shapes = {r.pixels.shape for r in ir_images}
    if len(shapes) != 1:
        raise ValueError(f"IR images of one slice mix shapes {sorted(shapes)}")
    started = time.perf_counter()
    data = np.stack([r.pixels for r in ir_images])
    phase = _matching_phases(ir_images, ti, phase_images) if phase_images else None
    fit = fit_t1_map(data, np.asarray(ti, dtype=np.float64), phase_rad=phase, scheme=scheme, method=method,
                     min_r_squared=min_r_squared)
    if fit.invalid.all():
        raise ValueError("no pixel of the IR images could be fitted")
    record = map_record(fit, ir_images[0], series_index)
    return FittedT1(fit, record, 1000.0 * (time.perf_counter() - started))
