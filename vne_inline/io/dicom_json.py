"""DICOM facts carried by MRD images: the ``DicomJson`` meta and the vendors' TI in ImageComments.

python-ismrmrd-server's ``dicom2mrd.py`` converts a DICOM folder to MRD images whose meta holds
``DicomJson`` (base64 of the DICOM JSON model of the source header, pixel data removed),
``ImageType``, ``ImageComments`` and ``SequenceDescription``. It writes DICOM's
ImagePositionPatient (the first pixel's centre) into ``position``, which ISMRMRD reads as the
image centre, and computes the field of view as (PixelSpacing[1] x Rows, PixelSpacing[0] x Columns),
which is wrong for non-square matrices. :func:`conformed` therefore takes geometry, inversion time
and rescale from ``DicomJson`` where present. Plain JSON and numpy: no pydicom (the core uses this).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

import ismrmrd
import numpy as np

from vne_inline.geometry import SliceGeometry
from vne_inline.io.records import ImageRecord, MetaValue

__all__ = ["DicomFacts", "ti_from_comment", "dicom_header", "dicom_facts", "conformed", "DICOM_JSON_KEY"]

DICOM_JSON_KEY = "DicomJson"
#: "TI 100", "TI=100ms", "TIeff 100 ms", "TI_eff: 100.5" in ImageComments (Siemens MOLLI / ShMOLLI).
_TI_COMMENT = re.compile(r"\bTI\s*(?:_?eff)?\s*[:=]?\s*(\d+(?:\.\d+)?)\s*(?:ms)?\b", re.IGNORECASE)

# DICOM tags in the JSON model (group+element, upper-case hex)
_IPP, _IOP, _SPACING, _THICKNESS = "00200032", "00200037", "00280030", "00180050"
_ROWS, _COLUMNS, _TI, _COMMENTS = "00280010", "00280011", "00180082", "00204000"
_INTERCEPT, _SLOPE = "00281052", "00281053"
_SOP_CLASS, _SOP_INSTANCE, _SERIES = "00080016", "00080018", "0020000E"
_SHARED, _PER_FRAME = "52009229", "52009230"
_PLANE_POSITION, _PLANE_ORIENTATION, _PIXEL_MEASURES, _TRANSFORM = "00209113", "00209116", "00289110", "00289145"


def ti_from_comment(comment: str | None) -> float | None:
    """The inversion time (ms) written in an ImageComments text ("TI 100", "TIeff 100 ms"), if any."""
    m = _TI_COMMENT.search(comment or "")
    return float(m.group(1)) if m else None


def dicom_header(meta: dict[str, MetaValue]) -> dict | None:
    """The DICOM JSON model in the meta's ``DicomJson`` (None if absent or not decodable)."""
    value = meta.get(DICOM_JSON_KEY)
    if isinstance(value, list):
        value = "".join(value)
    if not value:
        return None
    try:
        header = json.loads(base64.b64decode(str(value), validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _values(header: dict | None, tag: str) -> list:
    element = (header or {}).get(tag)
    return list(element.get("Value", [])) if isinstance(element, dict) else []


def _number(header: dict | None, tag: str) -> float | None:
    values = _values(header, tag)
    try:
        v = float(values[0])
    except (IndexError, TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _text(header: dict | None, tag: str) -> str | None:
    values = _values(header, tag)
    return str(values[0]) if values and values[0] is not None else None


def _item(header: dict, tag: str) -> dict | None:
    """A functional-group macro of the first frame (per-frame first, then shared)."""
    for groups in (_PER_FRAME, _SHARED):
        items = _values(header, groups)
        if items and isinstance(items[0], dict):
            found = _values(items[0], tag)
            if found and isinstance(found[0], dict):
                return found[0]
    return None


@dataclass(frozen=True)
class DicomFacts:
    """What the output and the role rules need from one image's DICOM header."""

    geometry: SliceGeometry | None
    inversion_time_ms: float | None
    rescale: tuple[float, float]
    sop_class: str | None
    sop_instance: str | None
    series_uid: str | None


def dicom_facts(header: dict) -> DicomFacts:
    """Geometry (classic or enhanced first frame), TI, (slope, intercept) and UIDs of a DICOM JSON header."""
    position, orientation, measures = header, header, header
    if not _values(header, _IPP):
        position = _item(header, _PLANE_POSITION)
        orientation = _item(header, _PLANE_ORIENTATION)
        measures = _item(header, _PIXEL_MEASURES)
    geometry = None
    try:
        geometry = SliceGeometry.from_dicom(
            [float(v) for v in _values(position, _IPP)], [float(v) for v in _values(orientation, _IOP)],
            [float(v) for v in _values(measures, _SPACING)], int(_number(header, _ROWS)),
            int(_number(header, _COLUMNS)), _number(measures, _THICKNESS) or 0.0)
    except (TypeError, ValueError):
        pass
    ti = ti_from_comment(_text(header, _COMMENTS))
    if ti is None:
        ti = _number(header, _TI)
    transform = header if _values(header, _SLOPE) else (_item(header, _TRANSFORM) or {})
    slope, intercept = _number(transform, _SLOPE), _number(transform, _INTERCEPT)
    return DicomFacts(geometry, ti, (1.0 if slope is None else slope, 0.0 if intercept is None else intercept),
                      _text(header, _SOP_CLASS), _text(header, _SOP_INSTANCE), _text(header, _SERIES))


def conformed(record: ImageRecord) -> ImageRecord:
    """`record` with DICOM's geometry, inversion time, rescale and UIDs applied where its meta carries
    ``DicomJson`` (and a TI read from ``ImageComments`` where it has no TI tag); otherwise `record` itself.
    The input record is never modified."""
    header = dicom_header(record.meta)
    meta = dict(record.meta)
    if header is None:
        if "InversionTime" in meta or "ImageComments" not in meta:
            return record
        ti = ti_from_comment(record.meta_str("ImageComments"))
        if ti is None:
            return record
        meta["InversionTime"] = f"{ti:g}"
        return ImageRecord(data=record.data, head=record.head, meta=meta)
    facts = dicom_facts(header)
    head = ismrmrd.ImageHeader.from_buffer_copy(bytes(record.head))
    if facts.geometry is not None and facts.geometry.shape == record.data.shape[-2:]:
        facts.geometry.to_header(head)
    data = record.data
    slope, intercept = facts.rescale
    if (slope, intercept) != (1.0, 0.0) and not np.iscomplexobj(data):
        data = (data.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
        head.data_type = ismrmrd.DATATYPE_FLOAT
    if facts.inversion_time_ms is not None and "InversionTime" not in meta:
        meta["InversionTime"] = f"{facts.inversion_time_ms:g}"
    for key, value in (("DicomSOPClassUID", facts.sop_class), ("DicomSOPInstanceUID", facts.sop_instance),
                       ("DicomSeriesInstanceUID", facts.series_uid)):
        if value and key not in meta:
            meta[key] = value
    return ImageRecord(data=data, head=head, meta=meta)
