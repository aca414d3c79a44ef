"""The ISMRMRD XML header of one scan: what the project writes and what it reads back.

Only study-level facts are used downstream (study and frame-of-reference UIDs, protocol, field
strength). Patient identifiers are written by the synthetic generator (synthetic IDs) but are never
returned by :func:`parse_header`, logged or used in file names: the study is keyed by a one-way hash.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass

import ismrmrd.xsd as xsd
from xsdata.exceptions import ConverterWarning

__all__ = ["ExamHeader", "make_header_xml", "parse_header", "study_key"]

GYROMAGNETIC_HZ_PER_T = 42.577478518e6  # 1H gyromagnetic ratio / 2 pi (CODATA 2018)
#: Longest header parsed (characters): a real exam's header is under 100 KB, and the XML parser's time
#: grows faster than linearly on long tokens (expat 2.5), so anything longer is refused unparsed.
MAX_HEADER_CHARS = 2**20

# xsdata's conversion warnings quote header values (which may be patient data): never shown.
warnings.filterwarnings("ignore", category=ConverterWarning)


@dataclass(frozen=True)
class ExamHeader:
    """Study-level facts of one scan (no patient identifiers)."""

    study_uid: str | None = None
    frame_of_reference_uid: str | None = None
    protocol_name: str | None = None
    field_strength_t: float | None = None
    measurement_id: str | None = None
    n_phases: int = 1
    n_sets: int = 1

    @property
    def study_key(self) -> str | None:
        """One-way hash of the StudyInstanceUID (else FrameOfReferenceUID); None if neither is present."""
        uid = self.study_uid or self.frame_of_reference_uid
        if not uid:
            return None
        return hashlib.sha256(f"vne-inline/study/{uid}".encode()).hexdigest()[:32]


def make_header_xml(
    exam: ExamHeader,
    patient_id: str,
    matrix: tuple[int, int],
    fov_mm: tuple[float, float, float],
    n_slices: int = 1,
    n_phases: int = 1,
    n_sets: int = 1,
    sequence_type: str | None = None,
    ti_ms: list[float] | None = None,
) -> str:
    """An ISMRMRD header XML (valid against ismrmrd.xsd) for one exported image scan."""
    field_t = float(exam.field_strength_t or 1.5)
    nx, ny = int(matrix[0]), int(matrix[1])
    fov_mm = tuple(float(f) for f in fov_mm)
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=nx, y=ny, z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov_mm[0], y=fov_mm[1], z=fov_mm[2]),
    )
    limits = xsd.encodingLimitsType(
        slice=xsd.limitType(minimum=0, maximum=max(n_slices - 1, 0), center=0),
        phase=xsd.limitType(minimum=0, maximum=max(n_phases - 1, 0), center=0),
        set=xsd.limitType(minimum=0, maximum=max(n_sets - 1, 0), center=0),
    )
    header = xsd.ismrmrdHeader(
        version=2,
        subjectInformation=xsd.subjectInformationType(patientID=patient_id),
        studyInformation=xsd.studyInformationType(studyInstanceUID=exam.study_uid),
        measurementInformation=xsd.measurementInformationType(
            measurementID=exam.measurement_id,
            patientPosition=xsd.patientPositionType.HFS,
            protocolName=exam.protocol_name,
            frameOfReferenceUID=exam.frame_of_reference_uid,
        ),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="vne-inline synthetic", systemFieldStrength_T=field_t
        ),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(GYROMAGNETIC_HZ_PER_T * field_t))
        ),
        encoding=[
            xsd.encodingType(
                encodedSpace=space,
                reconSpace=space,
                encodingLimits=limits,
                trajectory=xsd.trajectoryType.CARTESIAN,
            )
        ],
        sequenceParameters=xsd.sequenceParametersType(TI=list(ti_ms or []), sequence_type=sequence_type)
        if (ti_ms or sequence_type)
        else None,
    )
    return xsd.ToXML(header)


def parse_header(xml: str | bytes | None) -> ExamHeader:
    """Study facts from a header XML; raises ValueError with the parser's reason if it is not ISMRMRD XML
    or is longer than :data:`MAX_HEADER_CHARS`."""
    if not xml:
        raise ValueError("empty ISMRMRD header")
    if len(xml) > MAX_HEADER_CHARS:
        raise ValueError(f"ISMRMRD header of {len(xml)} characters is longer than {MAX_HEADER_CHARS}; not parsed")
    if isinstance(xml, bytes):
        xml = xml.rstrip(b"\0").decode("utf-8", errors="replace")
    return _parsed(xml.rstrip("\0"))


@functools.lru_cache(maxsize=16)
def _parsed(xml: str) -> ExamHeader:
    """`parse_header` of one XML text (cached: every connection and series of a scan sends the same header)."""
    try:
        h = xsd.CreateFromDocument(xml)
    except Exception as exc:  # xsdata raises several types for bad XML
        raise ValueError(f"not a valid ISMRMRD header: {exc}") from exc
    study = h.studyInformation
    meas = h.measurementInformation
    system = h.acquisitionSystemInformation
    return ExamHeader(
        study_uid=getattr(study, "studyInstanceUID", None),
        frame_of_reference_uid=getattr(meas, "frameOfReferenceUID", None),
        protocol_name=getattr(meas, "protocolName", None),
        field_strength_t=getattr(system, "systemFieldStrength_T", None),
        measurement_id=getattr(meas, "measurementID", None),
        n_phases=_announced(h, "phase"),
        n_sets=_announced(h, "set"),
    )


def announced_phases(xml: str | bytes | None) -> int:
    """Cardiac phases the header announces; 1 when it is not ISMRMRD XML (the cine role rule's hint)."""
    try:
        return parse_header(xml).n_phases
    except ValueError:
        return 1


def _announced(h, index: str) -> int:
    """Count announced by the first encoding's limit `index` (phases, sets = IR images); 1 when absent."""
    try:
        return int(getattr(h.encoding[0].encodingLimits, index).maximum) + 1
    except (AttributeError, IndexError, TypeError):
        return 1


def study_key(xml: str | bytes | None) -> str | None:
    """The one-way study key of a header, or None when the header has no usable UID or is not XML."""
    try:
        return parse_header(xml).study_key
    except ValueError:
        return None
