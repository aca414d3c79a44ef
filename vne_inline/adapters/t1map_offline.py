"""Offline T1 mapping: the IR-weighted images of an ISMRMRD file fitted slice by slice, written as an
ISMRMRD file (map, R^2 and invalid-pixel series per slice) for physicists.

The images are classified with the inline core's role rules; IR images are grouped by slice plane in
file order (the order the scanner sent them) and each slice is fitted with
:func:`vne_inline.core.t1_fit.fit_slice`; phase images with TIs (``image_type`` PHASE, e.g. the
scanner's phase series) give the polarity where every IR image of a slice has one. A T1 map already in
the file is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ismrmrd

from vne_inline.core.roles import Role, RoleRules, classify, inversion_time_ms
from vne_inline.core.slices import same_plane
from vne_inline.core.t1_fit import DEFAULT_T1_SERIES, FittedT1, fit_slice, quality_records
from vne_inline.io.header import parse_header
from vne_inline.io.mrd_file import read_file, write_file
from vne_inline.io.records import ImageRecord

__all__ = ["FittedSlice", "fit_ir_file", "write_t1_file"]


@dataclass(frozen=True)
class FittedSlice:
    """One slice: its index, the fit (None when it could not be made) and why not."""

    slice: int
    fitted: FittedT1 | None
    reason: str = ""


def _slices(records: list[ImageRecord]) -> list[list[ImageRecord]]:
    groups: list[list[ImageRecord]] = []
    for r in records:
        for g in groups:
            if same_plane(g[0].geometry, r.geometry):
                g.append(r)
                break
        else:
            groups.append([r])
    return groups


def fit_ir_file(path: str | Path, scheme: str | None = None, method: str = "auto",
                series_index: int = DEFAULT_T1_SERIES, min_r_squared: float = 0.0,
                rules: RoleRules = RoleRules()) -> tuple[str | None, list[FittedSlice]]:
    """(header XML, one :class:`FittedSlice` per IR slice plane). ValueError when the file cannot be
    read or holds no IR-weighted images."""
    mrd = read_file(path)
    try:
        phases = parse_header(mrd.header_xml).n_phases
    except ValueError:
        phases = 1
    records = mrd.records()
    ir = [r for r in records if classify(r, rules, phases) is Role.IR]
    phase_images = [r for r in records if r.image_type == ismrmrd.IMTYPE_PHASE and inversion_time_ms(r) is not None]
    if not ir:
        raise ValueError(f"{Path(path).name}: no IR-weighted images (images with an inversion time)")
    out = []
    for group in _slices(ir):
        try:
            out.append(FittedSlice(group[0].slice, fit_slice(group, series_index, scheme, method, min_r_squared,
                                                             phase_images)))
        except ValueError as exc:
            out.append(FittedSlice(group[0].slice, None, str(exc)))
    return mrd.header_xml, out


def write_t1_file(path: str | Path, header_xml: str | None, slices: list[FittedSlice]) -> dict[str, int]:
    """Write the maps, R^2 and invalid masks of the fitted slices; the image count per group."""
    records = []
    for s in slices:
        if s.fitted is not None:
            records += [s.fitted.record, *quality_records(s.fitted.fit, s.fitted.record)]
    if not records:
        raise ValueError("no slice could be fitted")
    return write_file(path, header_xml, records)
