"""DICOM MR images in: a folder (recursive) of MR Image Storage and Enhanced MR Image Storage files
becomes series of the same :class:`ImageRecord`\\ s the inline core takes from ISMRMRD streams.

Geometry (design §3): ImagePositionPatient is the centre of the first (top-left) pixel,
ImageOrientationPatient holds the row direction (towards increasing column index: ISMRMRD
``read_dir``, x) then the column direction (``phase_dir``, y), PixelSpacing is (row spacing dy,
column spacing dx). So the ISMRMRD image centre is ``IPP + (nx-1)/2 dx read + (ny-1)/2 dy phase`` and
the field of view is ``(nx dx, ny dy, SliceThickness)``; :meth:`SliceGeometry.from_dicom` and
:meth:`SliceGeometry.to_dicom` convert both ways.

Per image: RescaleSlope/Intercept applied (a non-identity rescale gives float32 data, so uint16
T1 maps come out in ms); the inversion time from the vendors' ImageComments (``TI 100``,
``TIeff 100 ms``: the effective TI of that image) else InversionTime (enhanced: MR Modifier
InversionTimes); the cardiac phase from TriggerTime (enhanced: NominalCardiacTriggerDelayTime).
Indices per series: ``slice`` = the plane's rank in acquisition order, ``phase`` = rank of the
trigger time on that plane (images without TI), ``set`` = rank in acquisition order of the images with
a TI on that plane. Meta: ``SequenceDescription`` (SeriesDescription), ``ImageType``,
``ImageComments``, ``InversionTime`` (ms), ``TriggerTime`` (ms) and the image's UIDs
(``DicomSOPInstanceUID``, ``DicomSOPClassUID``, ``DicomSeriesInstanceUID``, ``DicomFrameNumber``).
No patient name or ID goes into a record or header; each series keeps its first file's DICOM header
(without pixel data) as ``reference``, from which an output DICOM copies the patient and study modules.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from vne_inline.geometry import SliceGeometry
from vne_inline.io.dicom_json import ti_from_comment
from vne_inline.io.records import ImageRecord

__all__ = [
    "MR_IMAGE_STORAGE", "ENHANCED_MR_IMAGE_STORAGE", "IMAGE_SOP_CLASSES", "DicomSeries", "DicomFolder",
    "read_dicom_folder", "series_from_parsed", "parse_instance", "ParsedInstance",
    "is_dicom_folder", "dicom_files",
]


MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
IMAGE_SOP_CLASSES = (MR_IMAGE_STORAGE, ENHANCED_MR_IMAGE_STORAGE)

#: ImageType value 3 (or enhanced FrameType value 3 / PixelPresentation) -> ISMRMRD image type.
_IMAGE_TYPES = {"M": ismrmrd.IMTYPE_MAGNITUDE, "MAGNITUDE": ismrmrd.IMTYPE_MAGNITUDE,
                "P": ismrmrd.IMTYPE_PHASE, "PHASE": ismrmrd.IMTYPE_PHASE,
                "R": ismrmrd.IMTYPE_REAL, "REAL": ismrmrd.IMTYPE_REAL,
                "I": ismrmrd.IMTYPE_IMAG, "IMAGINARY": ismrmrd.IMTYPE_IMAG}
#: Geometry of two images is the same plane when rounded to these (mm, direction cosines).
_PLANE_MM, _PLANE_COS = 0.1, 1e-3


# ---------------------------------------------------------------------------- small readers
def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _item(ds: Dataset, frame: Dataset | None, sequence: str) -> Dataset | None:
    """The first item of a functional-group sequence: the frame's own, else the shared one."""
    for groups in (frame, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if groups is not None and sequence in groups and len(groups[sequence].value):
            return groups[sequence].value[0]
    return None


def _strings(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, pydicom.multival.MultiValue | list | tuple) else [str(value)]


@dataclass
class _Frame:
    """One 2-D image of a file: pixels (rescaled), geometry, timing and identity; `order` sorts a series:
    (InstanceNumber, the file's place in the series, the frame's acquisition order in the file)."""

    pixels: np.ndarray
    geometry: SliceGeometry
    ti_ms: float | None
    trigger_ms: float | None
    image_type: list[str]
    comment: str | None
    order: tuple[int, int, int]
    sop_uid: str
    sop_class: str
    frame_number: int | None


def _rescaled(pixels: np.ndarray, slope: float | None, intercept: float | None) -> np.ndarray:
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if slope != 1.0 or intercept != 0.0:
        return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    if pixels.dtype in (np.uint8, np.int8):
        return pixels.astype(np.uint16 if pixels.dtype == np.uint8 else np.int16)
    if pixels.dtype not in (np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64):
        return pixels.astype(np.float32)
    return pixels


def _classic_frames(ds: Dataset, pixels: np.ndarray) -> list[_Frame]:
    for name in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if name not in ds:
            raise ValueError(f"no {name}")
    thickness = _float(ds.get("SliceThickness")) or _float(ds.get("SpacingBetweenSlices")) or 0.0
    g = SliceGeometry.from_dicom(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing,
                            int(ds.Rows), int(ds.Columns), thickness)
    comment = str(ds.get("ImageComments", "")) or None
    ti = ti_from_comment(comment)
    if ti is None:
        ti = _float(ds.get("InversionTime"))
    return [_Frame(
        pixels=_rescaled(pixels, _float(ds.get("RescaleSlope")), _float(ds.get("RescaleIntercept"))),
        geometry=g, ti_ms=ti, trigger_ms=_float(ds.get("TriggerTime")), image_type=_strings(ds.get("ImageType")),
        comment=comment, order=(int(ds.get("InstanceNumber") or 0), 0, 0), sop_uid=str(ds.SOPInstanceUID),
        sop_class=str(ds.SOPClassUID), frame_number=None)]


def _enhanced_frames(ds: Dataset, pixels: np.ndarray) -> list[_Frame]:
    n = int(ds.get("NumberOfFrames") or 1)
    pixels = pixels.reshape(n, int(ds.Rows), int(ds.Columns))
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [None] * n)
    if len(per_frame) != n:
        raise ValueError(f"{len(per_frame)} per-frame functional groups for {n} frames")
    comment = str(ds.get("ImageComments", "")) or None
    out = []
    for k, fg in enumerate(per_frame):
        position, orientation, measures = (_item(ds, fg, s) for s in
                                           ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
            raise ValueError(f"frame {k + 1}: no plane position, orientation or pixel measures")
        thickness = _float(measures.get("SliceThickness")) or 0.0
        g = SliceGeometry.from_dicom(position.ImagePositionPatient, orientation.ImageOrientationPatient,
                                measures.PixelSpacing, int(ds.Rows), int(ds.Columns), thickness)
        modifier, cardiac, transform, frame_type, content = (_item(ds, fg, s) for s in (
            "MRModifierSequence", "CardiacSynchronizationSequence", "PixelValueTransformationSequence",
            "MRImageFrameTypeSequence", "FrameContentSequence"))
        ti = ti_from_comment(comment) if n == 1 else None
        if ti is None and modifier is not None:
            times = _strings(modifier.get("InversionTimes"))
            ti = _float(times[0]) if times else None
        trigger = None if cardiac is None else _float(cardiac.get("NominalCardiacTriggerDelayTime"))
        slope, intercept = (None, None) if transform is None else (
            _float(transform.get("RescaleSlope")), _float(transform.get("RescaleIntercept")))
        types = _strings(frame_type.get("FrameType")) if frame_type is not None else _strings(ds.get("ImageType"))
        if frame_type is not None and "ComplexImageComponent" in frame_type and len(types) >= 3:
            types[2] = str(frame_type.ComplexImageComponent)
        acquisition = int((content or Dataset()).get("FrameAcquisitionNumber") or 0)
        out.append(_Frame(
            pixels=_rescaled(pixels[k], slope, intercept), geometry=g, ti_ms=ti, trigger_ms=trigger,
            image_type=types, comment=comment,
            order=(int(ds.get("InstanceNumber") or 0), 0, acquisition * 100000 + k),
            sop_uid=str(ds.SOPInstanceUID), sop_class=str(ds.SOPClassUID), frame_number=k + 1))
    return out


def _frames(ds: Dataset) -> list[_Frame]:
    """Every 2-D image of one dataset (ValueError with a one-line reason when unusable)."""
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise ValueError("colour (RGB) image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for missing or undecodable pixel data
        raise ValueError(f"pixel data not readable ({type(exc).__name__})") from exc
    if str(ds.SOPClassUID) == ENHANCED_MR_IMAGE_STORAGE:
        return _enhanced_frames(ds, pixels)
    return _classic_frames(ds, pixels)


# ---------------------------------------------------------------------------- series
def _plane_key(g: SliceGeometry) -> tuple:
    n = g.normal
    return (tuple(np.round(n / _PLANE_COS).astype(int)), int(round(float(g.position @ n) / _PLANE_MM)), g.matrix)


def _ranks(values: Iterable) -> dict:
    return {v: i for i, v in enumerate(sorted(set(values)))}


@dataclass
class DicomSeries:
    """One series: its records (acquisition order), an ISMRMRD header for the session, and the first
    file's DICOM header without pixel data (``reference``) for the output's patient and study modules."""

    uid: str
    number: int
    description: str
    header_xml: str
    records: list[ImageRecord]
    reference: Dataset
    time: str = ""
    skipped: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"series {self.number} {self.description}".strip()


def _records(frames: list[_Frame], series_number: int, description: str, series_uid: str) -> list[ImageRecord]:
    frames = sorted(frames, key=lambda f: f.order)
    planes: dict[tuple, int] = {}
    for f in frames:
        planes.setdefault(_plane_key(f.geometry), len(planes))
    by_plane: dict[int, list[_Frame]] = {}
    for f in frames:
        by_plane.setdefault(planes[_plane_key(f.geometry)], []).append(f)
    out = []
    for k, f in enumerate(frames):
        s = planes[_plane_key(f.geometry)]
        mine = by_plane[s]
        untimed = [x.trigger_ms or 0.0 for x in mine if x.ti_ms is None]
        phase = _ranks(untimed).get(f.trigger_ms or 0.0, 0) if f.ti_ms is None else 0
        timed = [id(x) for x in mine if x.ti_ms is not None]
        set_index = timed.index(id(f)) if f.ti_ms is not None else 0
        meta: dict[str, str | list[str]] = {"SequenceDescription": description, "DicomSOPInstanceUID": f.sop_uid,
                                            "DicomSOPClassUID": f.sop_class, "DicomSeriesInstanceUID": series_uid}
        if f.image_type:
            meta["ImageType"] = f.image_type if len(f.image_type) > 1 else f.image_type[0]
        if f.comment:
            meta["ImageComments"] = f.comment
        if f.ti_ms is not None:
            meta["InversionTime"] = f"{f.ti_ms:g}"
        if f.trigger_ms is not None:
            meta["TriggerTime"] = f"{f.trigger_ms:g}"
        if f.frame_number is not None:
            meta["DicomFrameNumber"] = str(f.frame_number)
        image_type = _IMAGE_TYPES.get(f.image_type[2].upper() if len(f.image_type) > 2 else "M",
                                      ismrmrd.IMTYPE_MAGNITUDE)
        out.append(ImageRecord.new(f.pixels, f.geometry, meta, image_series_index=series_number % 65536,
                                   slice=s, phase=phase, set=set_index, image_index=k + 1, image_type=image_type))
    return out


def _header_xml(ds: Dataset, records: list[ImageRecord]) -> str:
    """A minimal ISMRMRD header for the series: study facts and announced counts, no patient identifiers."""
    g = records[0].geometry
    space = xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=g.nx, y=g.ny, z=1),
                                  fieldOfView_mm=xsd.fieldOfViewMm(x=float(g.fov[0]), y=float(g.fov[1]),
                                                                   z=float(g.fov[2])))
    limit = lambda values: xsd.limitType(minimum=0, maximum=max(values, default=0), center=0)  # noqa: E731
    limits = xsd.encodingLimitsType(slice=limit(r.slice for r in records), phase=limit(r.phase for r in records),
                                    set=limit(r.set for r in records))  # IR images per plane: a T1 slice completes with its last
    field_t = _float(ds.get("MagneticFieldStrength"))
    header = xsd.ismrmrdHeader(
        version=2,
        studyInformation=xsd.studyInformationType(studyInstanceUID=str(ds.get("StudyInstanceUID", "")) or None),
        measurementInformation=xsd.measurementInformationType(
            measurementID=str(ds.get("SeriesInstanceUID", "")) or None,
            patientPosition=_patient_position(ds),
            protocolName=str(ds.get("SeriesDescription", "")) or None,
            frameOfReferenceUID=str(ds.get("FrameOfReferenceUID", "")) or None),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor=str(ds.get("Manufacturer", "")) or None, systemFieldStrength_T=field_t),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round((_float(ds.get("ImagingFrequency")) or 42.577478518 * (field_t or 1.5)) * 1e6))),
        encoding=[xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=limits,
                                   trajectory=xsd.trajectoryType.CARTESIAN)],
    )
    return xsd.ToXML(header)


def _patient_position(ds: Dataset):
    try:
        return xsd.patientPositionType(str(ds.get("PatientPosition", "") or "HFS"))
    except ValueError:
        return xsd.patientPositionType.HFS


def _header_only(ds: Dataset) -> Dataset:
    return Dataset({elem.tag: elem for elem in ds if elem.tag < 0x7FE00000
                    and elem.keyword != "PerFrameFunctionalGroupsSequence"})


@dataclass
class ParsedInstance:
    """One MR image file decoded for a series: its header without pixel data, its 2-D images, or the
    one-line reason it is left out (``problem``)."""

    header: Dataset
    frames: list[_Frame]
    problem: str | None = None

    @property
    def series_uid(self) -> str:
        return str(self.header.get("SeriesInstanceUID", ""))


def parse_instance(ds: Dataset) -> ParsedInstance:
    """Decode one MR Image Storage or Enhanced MR Image Storage dataset (ValueError for any other SOP
    class); an image that cannot be used keeps its reason in ``problem``."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in IMAGE_SOP_CLASSES:
        name = getattr(pydicom.uid.UID(sop_class), "name", sop_class) if sop_class else "no SOP class"
        raise ValueError(f"instance of {name}: not an MR image, passed over")
    try:
        return ParsedInstance(_header_only(ds), _frames(ds))
    except ValueError as exc:
        return ParsedInstance(_header_only(ds), [], str(exc))


def series_from_parsed(instances: Iterable[ParsedInstance]) -> tuple[list[DicomSeries], list[str]]:
    """Series (in acquisition order) from decoded instances, and the reasons for images left out. Within a
    series images are ordered by InstanceNumber, then by their place in `instances`."""
    groups: dict[str, list[ParsedInstance]] = {}
    for p in instances:
        groups.setdefault(p.series_uid, []).append(p)
    out, skipped = [], []
    for n, (uid, members) in enumerate(groups.items()):
        first = members[0].header
        number = int(first.get("SeriesNumber") or n + 1)
        description = str(first.get("SeriesDescription", "") or "")
        frames: list[_Frame] = []
        notes: list[str] = []
        seen: set[str] = set()
        for k, p in enumerate(members):
            uid_k = str(p.header.get("SOPInstanceUID", ""))
            if uid_k in seen:
                continue  # the same instance twice (a re-sent or copied file)
            if p.problem is not None:
                notes.append(f"series {number}: image {p.header.get('InstanceNumber', k + 1)} left out: {p.problem}")
                continue
            seen.add(uid_k)
            frames += [replace(f, order=(f.order[0], k, f.order[2])) for f in p.frames]
        skipped += notes
        if not frames:
            continue
        records = _records(frames, number, description, uid)
        time = str(first.get("SeriesTime", "") or first.get("AcquisitionTime", "") or "")
        out.append(DicomSeries(uid, number, description, _header_xml(first, records), records, first, time, notes))
    out.sort(key=lambda s: (s.time, s.number))
    return out, skipped


# ---------------------------------------------------------------------------- folders
def dicom_files(folder: Path) -> list[Path]:
    """Every file under `folder` (recursive) that starts like a DICOM file (preamble + 'DICM')."""
    out = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            try:
                with path.open("rb") as f:
                    head = f.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM":
                out.append(path)
    return out


def is_dicom_folder(path: Path) -> bool:
    """True when `path` is a directory holding at least one DICOM file (recursive)."""
    if not Path(path).is_dir():
        return False
    return any(True for _ in _first_dicom(Path(path)))


def _first_dicom(folder: Path):
    for path in folder.rglob("*"):
        if path.is_file():
            try:
                with path.open("rb") as f:
                    if f.read(132)[128:132] == b"DICM":
                        yield path
                        return
            except OSError:
                continue


@dataclass
class DicomFolder:
    """A folder's series (acquisition order) and the reasons for files or images left out."""

    series: list[DicomSeries]
    skipped: list[str]


def read_dicom_folder(folder: str | Path) -> DicomFolder:
    """Read every DICOM file under `folder`; ValueError when it holds no readable MR image."""
    folder = Path(folder)
    parsed: list[ParsedInstance] = []
    skipped: list[str] = []
    for path in dicom_files(folder):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
            skipped.append(f"{path.name}: not readable as DICOM ({type(exc).__name__})")
            continue
        if "SOPClassUID" not in ds:
            skipped.append(f"{path.name}: not readable as DICOM (no SOP class)")
            continue
        try:
            parsed.append(parse_instance(ds))
        except ValueError as exc:
            skipped.append(str(exc))
    series, left_out = series_from_parsed(parsed)
    skipped += left_out
    if not series:
        reason = f" ({skipped[0]}{' ...' if len(skipped) > 1 else ''})" if skipped else ""
        raise ValueError(f"{folder.name}: no readable DICOM MR image{reason}")
    return DicomFolder(series, skipped)
