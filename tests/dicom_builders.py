"""Hand-built DICOM MR datasets for the tests (pydicom only, independent of the product's writer)."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
STUDY, FRAME = generate_uid(), generate_uid()


def _file(sop_class: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = STUDY, FRAME
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "PID-12345", "MR"
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray) -> None:
    pixels = np.asarray(pixels, dtype=np.uint16)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()


def classic_mr(pixels, ipp, iop, spacing, *, series_uid, series_number=1, description="", instance=1,
               thickness=8.0, **attrs) -> FileDataset:
    """One MR Image Storage instance (uint16 pixels) with the given plane and any extra attributes."""
    ds = _file(MR)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, series_number, description
    ds.InstanceNumber = instance
    ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = list(ipp), list(iop), list(spacing)
    ds.SliceThickness = thickness
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    for k, v in attrs.items():
        setattr(ds, k, v)
    _pixels(ds, pixels)
    return ds


def enhanced_mr(frames, positions, iop, spacing, *, series_uid, inversion_ms=None, slope=1.0, intercept=0.0,
                description="", thickness=6.0) -> FileDataset:
    """One Enhanced MR Image Storage instance: frames (n, y, x) uint16, one plane position per frame,
    shared orientation, pixel measures and rescale; per-frame inversion times when given."""
    frames = np.asarray(frames)
    ds = _file(ENHANCED_MR)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = series_uid, 7, description, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    orient, measures, transform = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = list(iop)
    measures.PixelSpacing, measures.SliceThickness = list(spacing), thickness
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "US"
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k, pos in enumerate(positions):
        fg, plane, content = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = list(pos)
        content.FrameAcquisitionNumber = k + 1
        fg.PlanePositionSequence, fg.FrameContentSequence = [plane], [content]
        if inversion_ms is not None:
            modifier = Dataset()
            modifier.InversionTimes = [float(inversion_ms[k])]
            fg.MRModifierSequence = [modifier]
        per_frame.append(fg)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    _pixels(ds, frames)
    return ds


# ---------------------------------------------------------------------------- small exams as DICOM
def write_exam(folder, cine, t1, style: str = "siemens", ti_tags: bool = True, study_uid: str = STUDY,
               display_maps: bool = False) -> dict[str, str]:
    """Write the test exam's records (`cine`, `t1`: ImageRecords as in test_pipeline) as DICOM series
    with the product's writer; `style` "siemens" (IR and map in separate series, TI in ImageComments)
    or "ge" (one series, TI in InversionTime); `ti_tags` False leaves the TI out; `display_maps` adds a
    second (display) map on each map's plane to the map series. Returns the series UIDs."""
    from vne_inline.io.dicom_write import SeriesInfo, mr_dataset, write_dataset

    study = Dataset()
    study.StudyInstanceUID, study.FrameOfReferenceUID = study_uid, FRAME
    study.PatientName, study.PatientID = "Doe^Jane", "PID-12345"
    uids = {name: generate_uid() for name in ("cine", "ir", "t1map")}
    if style == "ge":
        uids["t1map"] = uids["ir"]
    names = {"siemens": ("cine_tf2d_SAX", "ShMOLLI_SAX", "ShMOLLI_SAX_T1MAP"),
             "ge": ("FIESTA CINE SAX", "MOLLI T1 SAX", "MOLLI T1 SAX")}[style]
    series = {k: SeriesInfo(uids[k], n, names[i]) for i, (k, n) in enumerate((("cine", 1), ("ir", 2), ("t1map", 3)))}
    if style == "ge":
        series["t1map"] = series["ir"]
    n = 0
    for r in cine:
        n += 1
        write_dataset(mr_dataset(r.pixels, r.geometry, study, series["cine"], n, ["ORIGINAL", "PRIMARY", "M"],
                                 trigger_time_ms=40.0 * r.phase), folder / "cine")
    for r in t1:
        n += 1
        ti = r.meta_float("GADGETRON_TI")
        if ti is None:
            kind = ["DERIVED", "PRIMARY", "T1 MAP" if style == "siemens" else "T1MAP"]
            write_dataset(mr_dataset(r.pixels, r.geometry, study, series["t1map"], n, kind, slope=0.5), folder / "t1")
            if display_maps:
                n += 1
                write_dataset(mr_dataset(np.clip(r.pixels, 0, 2000), r.geometry, study, series["t1map"], n, kind),
                              folder / "t1")
            continue
        kw = {}
        if ti_tags and style == "siemens":
            kw["comment"] = f"TIeff {ti:g} ms"
        elif ti_tags:
            kw["inversion_time_ms"] = ti
        write_dataset(mr_dataset(r.pixels, r.geometry, study, series["ir"], n, ["ORIGINAL", "PRIMARY", "M"], **kw),
                      folder / "ir")
    return uids
