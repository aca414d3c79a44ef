"""DICOM MR images out: one :class:`ImageRecord` as an MR Image Storage instance (explicit VR little
endian), checked with dicom3tools' ``dciodvfy``.

Used for the VNE series (:func:`vne_dataset`: derived, the T1 map's geometry and the inputs' patient,
study and frame-of-reference modules, a SourceImageSequence naming the T1 map and the cine) and for the
synthetic exams' DICOM export (:func:`mr_dataset`). Pixel data are 16-bit unsigned; float images are
stored with RescaleSlope/Intercept so that ``stored * slope + intercept`` gives the values back.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from vne_inline import __version__
from vne_inline.geometry import SliceGeometry
from vne_inline.io.dicom import MR_IMAGE_STORAGE
from vne_inline.io.records import ImageRecord

__all__ = ["SeriesInfo", "SourceImage", "mr_dataset", "vne_dataset", "write_dataset", "encode_uint16",
           "PATIENT_STUDY_KEYWORDS"]

#: Copied from the inputs into every output instance: Patient, General Study, Patient Study modules
#: (and the Frame of Reference): exactly what the output DICOM must carry, nothing else.
PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription", "FrameOfReferenceUID",
    "PositionReferenceIndicator",
)
#: Acquisition facts of the MR Image module copied from the source image when it has them.
_MR_KEYWORDS = ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime",
                "EchoTime", "EchoTrainLength", "FlipAngle", "MagneticFieldStrength", "ImagingFrequency", "ImagedNucleus",
                "PatientPosition", "BodyPartExamined")
#: Type 1 / type 2 defaults of the MR Image and General Series modules.
_MR_DEFAULTS = {"ScanningSequence": "GR", "SequenceVariant": "NONE", "ScanOptions": "", "MRAcquisitionType": "2D",
                "RepetitionTime": None, "EchoTime": None, "EchoTrainLength": None, "PatientPosition": "HFS",
                "BodyPartExamined": "HEART"}  # the heart is not a paired structure: no Laterality
_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")  # DICOM CID 7202


@dataclass(frozen=True)
class SeriesInfo:
    """The series an instance belongs to."""

    uid: str
    number: int
    description: str
    manufacturer: str = "vne-inline"
    model: str = "vne-inline"


@dataclass(frozen=True)
class SourceImage:
    """A referenced input image (SOP class and instance UID, frame number of a multi-frame image)."""

    sop_class: str
    sop_instance: str
    frame: int | None = None

    @classmethod
    def of(cls, record: ImageRecord) -> SourceImage | None:
        """The DICOM identity of a record read from DICOM (or converted from it); None otherwise."""
        uid, sop_class = record.meta_str("DicomSOPInstanceUID"), record.meta_str("DicomSOPClassUID")
        if not uid or not sop_class:
            return None
        frame = record.meta_float("DicomFrameNumber")
        return cls(sop_class, uid, None if frame is None else int(frame))

    @classmethod
    def of_dataset(cls, ds: Dataset) -> SourceImage:
        """The identity of a single-frame instance."""
        return cls(str(ds.SOPClassUID), str(ds.SOPInstanceUID))


def encode_uint16(image: np.ndarray, slope: float | None = None) -> tuple[np.ndarray, float, float]:
    """(stored uint16, RescaleSlope, RescaleIntercept) with ``stored * slope + intercept ~ image``.
    Integer images in [0, 65535] are stored as they are; otherwise slope and intercept span the range
    (or use the given `slope`, intercept = min(0, image min))."""
    image = np.asarray(image)
    if not np.all(np.isfinite(image)):
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
    if np.issubdtype(image.dtype, np.integer) and image.min(initial=0) >= 0 and image.max(initial=0) <= 65535:
        return image.astype(np.uint16), 1.0, 0.0
    low = min(0.0, float(image.min(initial=0)))
    high = float(image.max(initial=0))
    if slope is None:
        slope = max((high - low) / 65000.0, 1e-6)
        slope = float(f"{slope:.6g}")
    stored = np.clip(np.round((image.astype(np.float64) - low) / slope), 0, 65535).astype(np.uint16)
    return stored, float(slope), low


def _values(value) -> list[str]:
    """A multi-valued code string as a list."""
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, pydicom.multival.MultiValue | list | tuple) else [str(value)]


def _ds_number(value: float) -> str:
    """A DS value (at most 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def mr_dataset(
    image: np.ndarray,
    geometry: SliceGeometry,
    study: Dataset,
    series: SeriesInfo,
    instance_number: int,
    image_type: Sequence[str],
    acquisition: Dataset | None = None,
    *,
    slope: float | None = None,
    window: tuple[float, float] | None = None,
    comment: str | None = None,
    sources: Sequence[SourceImage] = (),
    derivation: str | None = None,
    inversion_time_ms: float | None = None,
    trigger_time_ms: float | None = None,
    extra: dict | None = None,
    sop_uid: str | None = None,
    created: _dt.datetime | None = None,
) -> FileDataset:
    """An MR Image Storage instance of the 2-D `image` (y, x) on `geometry`.

    `study` supplies the patient, study and frame-of-reference attributes (:data:`PATIENT_STUDY_KEYWORDS`);
    `acquisition` the MR acquisition facts (scanning sequence, TR, TE, ...; defaults where absent).
    """
    image = np.asarray(image)
    if image.shape != geometry.shape:
        raise ValueError(f"image shape {image.shape} does not match geometry {geometry.shape}")
    now = created or _dt.datetime.now()
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, Dataset(), file_meta=meta, preamble=b"\0" * 128)
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in study:
            setattr(ds, keyword, study.data_element(keyword).value)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator"):
        if keyword not in ds:
            setattr(ds, keyword, "")  # type 2: present, may be empty
    if "StudyInstanceUID" not in ds or "FrameOfReferenceUID" not in ds:
        raise ValueError("the study has no StudyInstanceUID or FrameOfReferenceUID")
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.Modality = "MR"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series.uid, int(series.number), series.description[:64]
    ds.Manufacturer, ds.ManufacturerModelName = series.manufacturer, series.model
    ds.SoftwareVersions = f"vne-inline {__version__}"
    acquisition = acquisition if acquisition is not None else Dataset()
    for keyword in _MR_KEYWORDS:
        if keyword in acquisition and acquisition.data_element(keyword).value not in (None, ""):
            setattr(ds, keyword, acquisition.data_element(keyword).value)
        elif keyword in _MR_DEFAULTS:
            setattr(ds, keyword, _MR_DEFAULTS[keyword])
    ds.InstanceNumber = int(instance_number)
    ds.ImageType = list(image_type)
    ipp, iop, spacing = geometry.to_dicom()
    ds.ImagePositionPatient = [_ds_number(v) for v in ipp]
    ds.ImageOrientationPatient = [_ds_number(v) for v in iop]
    ds.PixelSpacing = [_ds_number(v) for v in spacing]
    ds.SliceThickness = _ds_number(geometry.thickness) if geometry.thickness > 0 else ""
    ds.SliceLocation = _ds_number(float(geometry.position @ geometry.normal))
    if inversion_time_ms is not None:
        ds.InversionTime = _ds_number(inversion_time_ms)
    elif "IR" in _values(ds.ScanningSequence):
        ds.InversionTime = ""  # type 2C: required (may be empty) for inversion-recovery sequences
    if trigger_time_ms is not None:
        ds.TriggerTime = _ds_number(trigger_time_ms)
    elif "CG" in _values(ds.get("ScanOptions")):
        ds.TriggerTime = ""  # type 2C: required (may be empty) for cardiac-gated images
    stored, rescale_slope, rescale_intercept = encode_uint16(image, slope)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if (rescale_slope, rescale_intercept) != (1.0, 0.0):
        ds.RescaleIntercept, ds.RescaleSlope = _ds_number(rescale_intercept), _ds_number(rescale_slope)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = _ds_number(window[0]), _ds_number(max(window[1], 1.0))
    if comment:
        ds.ImageComments = comment[:10240]
    if derivation:
        ds.DerivationDescription = derivation[:1024]
    if sources:
        items = []
        for s in sources:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = s.sop_class, s.sop_instance
            if s.frame is not None:
                item.ReferencedFrameNumber = s.frame
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _SOURCE_PURPOSE
            item.PurposeOfReferenceCodeSequence = [code]
            items.append(item)
        ds.SourceImageSequence = items
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def vne_dataset(
    vne: ImageRecord, t1_reference: Dataset, series: SeriesInfo, instance_number: int,
    sources: Sequence[SourceImage], comment: str, window: tuple[float, float],
) -> FileDataset:
    """The VNE image `vne` (on the T1 map's grid) as a derived MR image of the T1 map's study; stored as
    unsigned integers in VNE units (blood about 1000, nulled myocardium 0) without a rescale, which
    MR viewers window reliably."""
    return mr_dataset(
        np.clip(vne.pixels.astype(np.float32), 0, None), vne.geometry, t1_reference, series, instance_number,
        ["DERIVED", "SECONDARY", "OTHER", "VNE"], t1_reference, slope=1.0, window=window, comment=comment,
        sources=sources,
        derivation="Virtual Native Enhancement: neural network from native cine, T1-mapping IR images and T1 map",
        extra={"BurnedInAnnotation": "NO", "LossyImageCompression": "00"},
    )


def fitted_map_dataset(
    t1_map: ImageRecord, ir_reference: Dataset, series: SeriesInfo, instance_number: int,
    sources: Sequence[SourceImage],
) -> FileDataset:
    """A T1 map fitted from IR-weighted images (float ms) as a derived MR image of the IR series' study:
    uint16 in ms (RescaleSlope 1, as scanners store maps), ImageType ``T1 MAP``, the fit in ImageComments."""
    center = t1_map.meta_float("WindowCenter", 1300.0)
    width = t1_map.meta_float("WindowWidth", 1800.0)
    comment = t1_map.meta_str("ImageComments") or "T1 map fitted from the IR-weighted images"
    return mr_dataset(
        np.clip(t1_map.pixels.astype(np.float32), 0, 65535), t1_map.geometry, ir_reference, series, instance_number,
        ["DERIVED", "SECONDARY", "OTHER", "T1 MAP"], ir_reference, slope=1.0, window=(center, width),
        comment=comment, sources=sources, derivation=f"T1 map fitted from the IR-weighted images: {comment}",
        extra={"BurnedInAnnotation": "NO", "LossyImageCompression": "00"},
    )


def write_dataset(ds: FileDataset, directory: Path, name: str | None = None) -> Path:
    """Write `ds` to `directory` (created) as ``<name or SOPInstanceUID>.dcm``; atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name or ds.SOPInstanceUID}.dcm"
    tmp = path.with_suffix(".dcm.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path
