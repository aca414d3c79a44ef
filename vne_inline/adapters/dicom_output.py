"""VNE images and fitted T1 maps as DICOM: each becomes a derived MR image of its inputs' study.

:class:`DicomOutput` remembers the inputs it is shown (T1 maps with their DICOM header, cine slices
with their SOP instances) and turns each VNE record into an MR Image Storage instance
(:func:`vne_inline.io.dicom_write.vne_dataset`): the T1 map's geometry, patient, study and frame of
reference; a new SeriesInstanceUID per T1 series, SeriesDescription = the T1 series' + ``_VNE``;
a SourceImageSequence naming the T1 map and the frames of the matched cine slice.

The T1 map's header comes from the DICOM series it was read from, else from its ``DicomJson`` meta
(MRD converted from DICOM), else from the ISMRMRD session header (study and frame-of-reference UIDs
only; patient attributes empty).

A T1 map fitted from the IR images (:func:`vne_inline.core.t1_fit.map_record`) becomes a derived MR
image of the IR series' study, in a series of its own per IR series (SeriesDescription = the IR
series' + ``_T1FIT``), stored in ms (uint16, RescaleSlope 1) with a SourceImageSequence naming the IR
images; a VNE made from it names the fitted map as its source.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import generate_uid

from vne_inline.core.match import MatchCriteria, NoMatch, find_match
from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.core.slices import same_plane
from vne_inline.core.t1_fit import is_fitted_map
from vne_inline.geometry import SliceGeometry
from vne_inline.io.dicom import DicomSeries
from vne_inline.io.dicom_json import conformed, dicom_header
from vne_inline.io.dicom_write import SeriesInfo, SourceImage, fitted_map_dataset, vne_dataset, write_dataset
from vne_inline.io.header import ExamHeader, announced_phases, parse_header
from vne_inline.io.records import ImageRecord

__all__ = ["DicomOutput"]


@dataclass
class _Map:
    geometry: SliceGeometry
    slice: int
    reference: Dataset
    source: SourceImage | None
    series_key: str


def _header_reference(header_xml: str | None) -> Dataset:
    """A reference holding what an ISMRMRD session header knows of the study (UIDs only)."""
    try:
        header = parse_header(header_xml)
    except ValueError:
        header = ExamHeader()
    ref = Dataset()
    if header.study_uid:
        ref.StudyInstanceUID = header.study_uid
    if header.frame_of_reference_uid:
        ref.FrameOfReferenceUID = header.frame_of_reference_uid
    if header.protocol_name:
        ref.SeriesDescription = header.protocol_name
    return ref


def _json_reference(record: ImageRecord) -> Dataset | None:
    header = dicom_header(record.meta)
    if header is None:
        return None
    try:
        return Dataset.from_json(header)
    except (ValueError, TypeError, KeyError):
        return None


class DicomOutput:
    """Collects the inputs' DICOM identities and writes VNE records as DICOM files."""

    def __init__(self, rules: RoleRules = RoleRules(), criteria: MatchCriteria = MatchCriteria()) -> None:
        self._rules, self._criteria = rules, criteria
        self._scans: dict[str, tuple[list[_Map], dict]] = {}  # per scan key: its maps and cine sources
        self._ir: dict[str, list[_Map]] = {}  # per scan key: its IR images (identities, for fitted maps)
        self._fitted: list[_Map] = []  # fitted maps written so far
        self._series: dict[str, SeriesInfo] = {}
        self._counts: dict[str, int] = {}

    @property
    def _maps(self) -> list[_Map]:
        return [m for maps, _ in self._scans.values() for m in maps] + self._fitted

    @property
    def _cine(self) -> dict[tuple[str, int], list[tuple[SliceGeometry, SourceImage]]]:
        return {k: v for _, cine in self._scans.values() for k, v in cine.items()}

    def knows(self, key: str) -> bool:
        """True when a scan was added under `key`."""
        return key in self._scans

    def add(self, records: Iterable[ImageRecord], header_xml: str | None,
            series: Iterable[DicomSeries] = (), key: str | None = None) -> None:
        """Remember the T1 maps and cine images among `records` (one scan, with its DICOM series); a
        scan added again under the same `key` replaces what was remembered of it. VNE of one T1 series
        written by one DicomOutput share a SeriesInstanceUID."""
        series = list(series)
        maps: list[_Map] = []
        ir: list[_Map] = []
        cine: dict[tuple[str, int], list[tuple[SliceGeometry, SourceImage]]] = {}
        key = key or f"scan-{len(self._scans)}"
        self._scans[key], self._ir[key] = (maps, cine), ir
        by_uid = {s.uid: s.reference for s in series}
        fallback = None
        phases = announced_phases(header_xml)
        for raw in records:
            record = conformed(raw)
            role = classify(record, self._rules, phases)
            if role not in (Role.T1MAP, Role.CINE, Role.IR):
                continue
            source = SourceImage.of(record)
            series_uid = record.meta_str("DicomSeriesInstanceUID") or f"series-{record.series_index}"
            if role is Role.CINE:
                if source is not None:
                    cine.setdefault((series_uid, record.slice), []).append((record.geometry, source))
                continue
            reference = by_uid.get(series_uid) or _json_reference(record)
            if reference is None:
                fallback = fallback or _header_reference(header_xml)
                reference = fallback
            (ir if role is Role.IR else maps).append(_Map(record.geometry, record.slice, reference, source, series_uid))

    def _t1_map(self, vne: ImageRecord) -> _Map:
        g = vne.geometry
        found = [m for m in self._maps if m.geometry.shape == g.shape and same_plane(m.geometry, g)]
        if not found:
            raise ValueError(f"T1 slice {vne.slice}: its T1 map's DICOM header was not seen")
        return next((m for m in found if m.slice == vne.slice), found[0])

    def _cine_sources(self, g: SliceGeometry) -> list[SourceImage]:
        cine = self._cine
        match = find_match(g, [(key, frames[0][0]) for key, frames in cine.items()], self._criteria)
        return [] if isinstance(match, NoMatch) else [s for _, s in cine[match.key]]

    def _series_info(self, key: str, reference: Dataset, fallback: str, suffix: str, number: int) -> tuple[SeriesInfo, int]:
        """The output series of input series `key` (made on first use) and the next instance number in it."""
        info = self._series.get(key)
        if info is None:
            description = str(reference.get("SeriesDescription", "") or fallback)
            description = description if description.endswith(suffix) else f"{description}{suffix}"
            info = self._series[key] = SeriesInfo(generate_uid(), number, description)
        self._counts[info.uid] = self._counts.get(info.uid, 0) + 1
        return info, self._counts[info.uid]

    def _fitted_map(self, record: ImageRecord) -> FileDataset:
        g = record.geometry
        ir = [i for images in self._ir.values() for i in images if i.geometry.shape == g.shape and same_plane(i.geometry, g)]
        if not ir:
            raise ValueError(f"T1 slice {record.slice}: fitted map, but its IR images' DICOM header was not seen")
        first = ir[0]
        info, number = self._series_info(f"fit-{first.series_key}", first.reference, "IR", "_T1FIT", record.series_index)
        ds = fitted_map_dataset(record, first.reference, info, number, [i.source for i in ir if i.source])
        self._fitted.append(_Map(g, record.slice, first.reference, SourceImage.of_dataset(ds), f"vne-{info.uid}"))
        return ds

    @staticmethod
    def writes(record: ImageRecord) -> bool:
        """True for what this output turns into DICOM: the core's VNE images (``GADGETRON_DataRole=VNE``, so a
        VNE read back from DICOM is not written again) and fitted T1 maps."""
        return record.meta_str("GADGETRON_DataRole") == "VNE" or is_fitted_map(record)

    def dataset(self, vne: ImageRecord) -> FileDataset:
        """The DICOM instance of one VNE record or fitted T1 map (ValueError with a one-line reason when it
        cannot be made). A fitted map must be given before the VNE made from it."""
        if is_fitted_map(vne):
            return self._fitted_map(vne)
        t1 = self._t1_map(vne)
        fallback = vne.meta_str("GADGETRON_SeqDescription", "") or "T1MAP"
        info, number = self._series_info(t1.series_key, t1.reference, fallback, "_VNE", vne.series_index)
        sources = ([t1.source] if t1.source else []) + self._cine_sources(vne.geometry)
        center = vne.meta_float("WindowCenter", vne.meta_float("GADGETRON_WindowCenter", 500.0))
        width = vne.meta_float("WindowWidth", vne.meta_float("GADGETRON_WindowWidth", 1000.0))
        comment = vne.meta_str("ImageComment") or vne.meta_str("GADGETRON_ImageComment") or "VNE"
        return vne_dataset(vne, t1.reference, info, number, sources, comment, (center, width))

    def write(self, vne: ImageRecord, directory: Path) -> Path:
        """Write one VNE record or fitted map under `directory` as ``<SOPInstanceUID>.dcm``."""
        return write_dataset(self.dataset(vne), directory)
