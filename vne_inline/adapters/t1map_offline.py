"""Offline T1 mapping: the IR-weighted images of an ISMRMRD file or a DICOM folder fitted slice by slice,
written as an ISMRMRD file (map, R^2 and invalid-pixel series per slice) for physicists, and the maps
as DICOM MR images.

The images are classified with the inline core's role rules; IR images are grouped by slice plane in
the order the scanner sent them (file order; for DICOM, acquisition order within each series) and each
slice is fitted with :func:`vne_inline.core.t1_fit.fit_slice`; phase images with TIs (``image_type``
PHASE, e.g. the scanner's phase series) give the polarity where every IR image of a slice has one. A T1
map already in the input is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ismrmrd

from vne_inline.adapters.exam_files import classified_records
from vne_inline.adapters.scans import Scan, read_scans
from vne_inline.core.roles import Role, RoleRules, inversion_time_ms
from vne_inline.core.slices import same_plane
from vne_inline.core.t1_fit import DEFAULT_T1_SERIES, FittedT1, fit_slice, quality_records
from vne_inline.io.mrd_file import write_file
from vne_inline.io.records import ImageRecord

__all__ = ["FittedSlice", "IrFit", "fit_ir_source", "write_t1_file", "write_t1_dicom"]


@dataclass(frozen=True)
class FittedSlice:
    """One slice: its index, the fit (None when it could not be made) and why not."""

    slice: int
    fitted: FittedT1 | None
    reason: str = ""


@dataclass(frozen=True)
class IrFit:
    """The fitted slices of one source, with the header and scans they came from."""

    header_xml: str | None
    slices: list[FittedSlice]
    scans: list[Scan]


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


def fit_ir_source(path: str | Path, scheme: str | None = None, method: str = "auto",
                  series_index: int = DEFAULT_T1_SERIES, min_r_squared: float = 0.0,
                  rules: RoleRules = RoleRules()) -> IrFit:
    """One :class:`FittedSlice` per IR slice plane of an ISMRMRD file or a DICOM folder. ValueError when
    it cannot be read or holds no IR-weighted images."""
    scans = read_scans(path, rules)
    classified = [(scan, classified_records(scan, rules)) for scan in scans]
    ir = [r for _, records in classified for role, r in records if role is Role.IR]
    phase_images = [r for _, records in classified for _, r in records
                    if r.image_type == ismrmrd.IMTYPE_PHASE and inversion_time_ms(r) is not None]
    if not ir:
        raise ValueError(f"{Path(path).name}: no IR-weighted images (images with an inversion time)")
    out = []
    for group in _slices(ir):
        try:
            out.append(FittedSlice(group[0].slice, fit_slice(group, series_index, scheme, method, min_r_squared,
                                                             phase_images)))
        except ValueError as exc:
            out.append(FittedSlice(group[0].slice, None, str(exc)))
    header = next(scan.header_xml for scan, records in classified if any(role is Role.IR for role, _ in records))
    return IrFit(header, out, scans)


def write_t1_file(path: str | Path, header_xml: str | None, slices: list[FittedSlice]) -> dict[str, int]:
    """Write the maps, R^2 and invalid masks of the fitted slices; the image count per group."""
    records = []
    for s in slices:
        if s.fitted is not None:
            records += [s.fitted.record, *quality_records(s.fitted.fit, s.fitted.record)]
    if not records:
        raise ValueError("no slice could be fitted")
    return write_file(path, header_xml, records)


def write_t1_dicom(directory: str | Path, fit: IrFit) -> int:
    """Write the fitted maps as DICOM MR images into `directory` (the inputs must be DICOM or converted
    from it); the number written. ValueError when a map cannot be written (the reason in one line)."""
    from vne_inline.adapters.dicom_output import DicomOutput

    output = DicomOutput()
    for scan in fit.scans:
        output.add(scan.records, scan.header_xml, scan.series)
    maps = [s.fitted.record for s in fit.slices if s.fitted is not None]
    if not maps:
        raise ValueError("no slice could be fitted")
    for record in maps:
        output.write(record, directory)
    return len(maps)
