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
