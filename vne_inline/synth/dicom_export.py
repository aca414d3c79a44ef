"""The DICOM export of a synthetic exam: every series of the ISMRMRD export as MR Image Storage files in
``<patient>/dicom/``, with one vendor's naming and tags, so that tests and users have DICOM exams
without private data.

Vendor styles (series descriptions and tags as those vendors' exports show them; the Manufacturer
says "synthetic"):

* ``siemens`` (most patients): cine ``cine_tf2d_SAX``; IR images ``<scheme>_SAX`` with the effective
  TI in ImageComments (``TIeff 100 ms``) and InversionTime; the map a separate series
  ``<scheme>_SAX_T1MAP`` with ImageType ``DERIVED\\PRIMARY\\T1 MAP``, uint16 with RescaleSlope;
  LGE ``LGE_PSIR_SAX``.
* ``ge`` (every fourth patient): cine ``FIESTA CINE SAX``; IR images and the map in one series
  ``<scheme> T1 SAX`` (TI in InversionTime only; the map described ``T1 Map`` in ImageComments and
  told apart by its ImageType ``DERIVED\\PRIMARY\\T1MAP``); LGE ``MDE PSIR SAX``.

Series and instance UIDs are derived from the study UID, so the same patient gives identical UIDs.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import ismrmrd.xsd as xsd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from vne_inline.core.roles import inversion_time_ms
from vne_inline.io.dicom_write import SeriesInfo, mr_dataset, write_dataset
from vne_inline.io.header import parse_header
from vne_inline.io.mrd_file import read_file
from vne_inline.io.records import ImageRecord
from vne_inline.synth.patient import PatientParams, study_uids

__all__ = ["VENDORS", "vendor_of", "write_dicom_exam", "T1_SLOPE_MS"]

VENDORS = ("siemens", "ge")
T1_SLOPE_MS = 0.25  # stored uint16 * 0.25 = T1 in ms
_STUDY_DATE = _dt.datetime(2025, 1, 1, 9, 0, 0)  # fixed: the files are reproducible


@dataclass(frozen=True)
class _Style:
    manufacturer: str
    cine: str
    ir: str  # "{scheme}" is replaced by the T1-mapping scheme
    t1map: str
    lge: str
    ti_in_comments: bool
    map_image_type: tuple[str, ...]
    map_in_ir_series: bool


_STYLES = {
    "siemens": _Style("vne-inline synthetic (Siemens-like)", "cine_tf2d_SAX", "{scheme}_SAX", "{scheme}_SAX_T1MAP",
                      "LGE_PSIR_SAX", True, ("DERIVED", "PRIMARY", "T1 MAP", "NONE"), False),
    "ge": _Style("vne-inline synthetic (GE-like)", "FIESTA CINE SAX", "{scheme} T1 SAX", "{scheme} T1 SAX",
                 "MDE PSIR SAX", False, ("DERIVED", "PRIMARY", "T1MAP"), True),
}


def vendor_of(index: int) -> str:
    """The vendor style of patient `index`: GE-like for every fourth patient, else Siemens-like."""
    return "ge" if index % 4 == 3 else "siemens"


def _uid(*parts: object) -> str:
    return generate_uid(prefix=None, entropy_srcs=[str(p) for p in parts])


def _study(p: PatientParams) -> Dataset:
    study_uid, frame_uid = study_uids(p.seed, p.index)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = f"SYNTHETIC^{p.patient_id}", p.patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_uid
    ds.StudyDate, ds.StudyTime = _STUDY_DATE.strftime("%Y%m%d"), _STUDY_DATE.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.StudyDescription = "Cardiac^synthetic HCM"
    ds.PositionReferenceIndicator = ""
    return ds


def _acquisition(field_t: float, sequence, variant: str, tr_ms: float, te_ms: float, flip_deg: float) -> Dataset:
    ds = Dataset()
    ds.FlipAngle = flip_deg
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = sequence, variant, "CG", "2D"
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = tr_ms, te_ms, 1
    ds.MagneticFieldStrength, ds.ImagedNucleus = field_t, "1H"
    ds.ImagingFrequency = round(42.577478518 * field_t, 6)
    ds.PatientPosition, ds.BodyPartExamined = "HFS", "HEART"
    return ds


def _scheme(header_xml: str | None) -> str:
    try:
        return parse_header(header_xml).protocol_name or "MOLLI"
    except ValueError:
        return "MOLLI"


def _header_ti(header_xml: str | None) -> float | None:
    """The first TI (ms) of the header's sequence parameters (the LGE export writes the TI used)."""
    try:
        values = xsd.CreateFromDocument(header_xml).sequenceParameters.TI
        return float(values[0]) if values else None
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


class _Writer:
    """Numbers series and instances of one exam and writes them under one folder."""

    def __init__(self, folder: Path, p: PatientParams, style: _Style) -> None:
        self.folder, self.p, self.style, self.study = folder, p, style, _study(p)
        self.when = _STUDY_DATE
        self.count = 0

    def series(self, number: int, description: str) -> SeriesInfo:
        return SeriesInfo(_uid(self.study.StudyInstanceUID, number), number, description, self.style.manufacturer,
                          "synthetic exam generator")

    def write(self, record: ImageRecord, series: SeriesInfo, number: int, image_type, acquisition, **kw) -> None:
        self.count += 1
        ds = mr_dataset(record.pixels, record.geometry, self.study, series, number, image_type, acquisition,
                        sop_uid=_uid(series.uid, number), created=self.when, **kw)
        ds.SeriesDate, ds.SeriesTime = self.when.strftime("%Y%m%d"), self.when.strftime("%H%M%S")
        acquired = self.when + _dt.timedelta(milliseconds=self.p.rr_ms * number)
        ds.AcquisitionDate, ds.AcquisitionTime = acquired.strftime("%Y%m%d"), acquired.strftime("%H%M%S.%f")
        write_dataset(ds, self.folder / f"{series.number:03d}_{series.description.replace(' ', '_')}",
                      f"IM{number:05d}")


def _images(path: Path) -> tuple[str | None, list[ImageRecord]]:
    f = read_file(path)
    return f.header_xml, f.records()


def write_dicom_exam(directory: Path, p: PatientParams, vendor: str | None = None) -> Path:
    """Write ``directory/dicom/`` from the exam's ISMRMRD export (cine.h5, t1map.h5, lge.h5 in `directory`)."""
    style = _STYLES[vendor or vendor_of(p.index)]
    w = _Writer(Path(directory) / "dicom", p, style)
    rr = p.rr_ms
    _, cine = _images(Path(directory) / "cine.h5")
    n_phases = max(r.phase for r in cine) + 1
    series = w.series(1, style.cine)
    acq = _acquisition(p.field_t, "GR", "SS", round(rr / n_phases, 2), 1.4, 50.0)
    for n, r in enumerate(cine, start=1):
        w.when = _STUDY_DATE + _dt.timedelta(minutes=5)
        w.write(r, series, n, ("ORIGINAL", "PRIMARY", "M", "NONE"), acq, trigger_time_ms=r.phase * rr / n_phases)
    header, t1map = _images(Path(directory) / "t1map.h5")
    scheme = _scheme(header)
    ir = [r for r in t1map if inversion_time_ms(r) is not None]
    maps = [r for r in t1map if inversion_time_ms(r) is None]
    ir_series = w.series(2, style.ir.format(scheme=scheme))
    map_series = ir_series if style.map_in_ir_series else w.series(3, style.t1map.format(scheme=scheme))
    acq = _acquisition(p.field_t, ["GR", "IR"], "SP", 2.6, 1.1, 35.0)
    w.when = _STUDY_DATE + _dt.timedelta(minutes=12)
    for n, r in enumerate(ir, start=1):
        ti = float(inversion_time_ms(r))
        comment = f"TIeff {ti:.0f} ms" if style.ti_in_comments else None
        w.write(r, ir_series, n, ("ORIGINAL", "PRIMARY", "M", "NONE"), acq, inversion_time_ms=ti, comment=comment)
    first = len(ir) + 1 if style.map_in_ir_series else 1
    for n, r in enumerate(maps, start=first):
        w.write(r, map_series, n, style.map_image_type, acq, slope=T1_SLOPE_MS, comment="T1 Map (ms)",
                window=(1000.0, 1400.0))
    header, lge = _images(Path(directory) / "lge.h5")
    ti_lge = _header_ti(header)
    w.when = _STUDY_DATE + _dt.timedelta(minutes=25)
    series = w.series(4, style.lge)
    acq = _acquisition(p.field_t, ["GR", "IR"], "SP", 8.0, 3.2, 25.0)
    for n, r in enumerate(lge, start=1):
        w.write(r, series, n, ("ORIGINAL", "PRIMARY", "R", "NONE"), acq, inversion_time_ms=ti_lge)
    return w.folder
