"""Scans: what one connection to the inline core carries, read from an ISMRMRD file, an exam directory
of ISMRMRD files or a DICOM folder.

An ISMRMRD file is one scan. A DICOM folder holds series; each series is one scan in acquisition
order, except that the IR-weighted images and the T1 map of one T1-mapping acquisition travel
together (scanners write them as separate series: raw IR images, motion-corrected ``MOCO`` images, the
map): the IR images on a map's planes join the map's scan, the motion-corrected ones preferred
when both are there (the map is fitted from them). Every image goes into exactly one scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.core.slices import same_plane
from vne_inline.io.dicom import DicomFolder, DicomSeries, is_dicom_folder, read_dicom_folder
from vne_inline.io.dicom_json import conformed
from vne_inline.io.header import announced_phases
from vne_inline.io.mrd_file import read_file
from vne_inline.io.records import ImageRecord

__all__ = ["Scan", "read_scans", "dicom_scans", "is_exam_dir", "exam_files", "NON_IMAGE_FILES"]

NON_IMAGE_FILES = {"truth.h5"}


@dataclass
class Scan:
    """One connection's images: a name (file or series), the session header and the images in order;
    for DICOM also the series they come from (their headers, for DICOM output)."""

    name: str
    header_xml: str | None
    records: list[ImageRecord]
    series: list[DicomSeries] = field(default_factory=list)


def exam_files(directory: Path) -> list[Path]:
    """The ISMRMRD image files of an exam directory, sorted by name."""
    return sorted(p for p in Path(directory).glob("*.h5") if p.name not in NON_IMAGE_FILES)


def is_exam_dir(directory: Path) -> bool:
    """True for a directory of ISMRMRD image files or holding DICOM files."""
    return Path(directory).is_dir() and (bool(exam_files(directory)) or is_dicom_folder(directory))


def _roles(series: DicomSeries, rules: RoleRules) -> list[Role]:
    phases = announced_phases(series.header_xml)
    return [classify(conformed(r), rules, phases) for r in series.records]


def _is_moco(series: DicomSeries) -> bool:
    types = {str(t).upper() for r in series.records[:1] for t in (r.meta.get("ImageType") or [])}
    return "MOCO" in types or "MOCO" in series.description.upper()


def dicom_scans(folder: DicomFolder, rules: RoleRules = RoleRules()) -> list[Scan]:
    """The scans of a DICOM folder (see the module docstring), in acquisition order."""
    roles = {s.uid: _roles(s, rules) for s in folder.series}
    ir = [(s, r) for s in folder.series for r, role in zip(s.records, roles[s.uid], strict=True) if role is Role.IR]
    used: set[int] = set()
    scans: list[Scan] = []
    for s in folder.series:
        maps = [r for r, role in zip(s.records, roles[s.uid], strict=True) if role is Role.T1MAP]
        if not maps:
            continue
        mine = [(src, r) for src, r in ir if src is not s and id(r) not in used
                and any(same_plane(m.geometry, r.geometry) for m in maps)]
        if any(_is_moco(src) for src, _ in mine):
            mine = [(src, r) for src, r in mine if _is_moco(src)]
        used.update(id(r) for _, r in mine)
        used.update(id(r) for r in s.records)
        sources = list({id(src): src for src, _ in mine}.values())
        header = sources[0].header_xml if sources else s.header_xml  # the IR series' announces its images per plane
        scans.append(Scan(" + ".join(x.name for x in [*sources, s]), header,
                          [r for _, r in mine] + s.records, [*sources, s]))
    for s in folder.series:
        if any(scan.series[-1] is s for scan in scans):
            continue
        rest = [r for r in s.records if id(r) not in used]
        if rest:
            scans.append(Scan(s.name, s.header_xml, rest, [s]))
    order = {s.uid: i for i, s in enumerate(folder.series)}
    return sorted(scans, key=lambda scan: max(order[x.uid] for x in scan.series))


def read_scans(path: str | Path, rules: RoleRules = RoleRules()) -> list[Scan]:
    """The scans of an ISMRMRD file, an exam directory of ISMRMRD files or a DICOM folder
    (ValueError naming the path when it is none of these or cannot be read)."""
    path = Path(path)
    if path.is_file():
        mrd = read_file(path)
        if not mrd.records():
            raise ValueError(f"{path.name}: no images (ISMRMRD image groups such as image_1 are needed)")
        return [Scan(path.name, mrd.header_xml, mrd.records())]
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or directory")
    files = exam_files(path)
    if files:
        return [scan for f in files for scan in read_scans(f)]
    if is_dicom_folder(path):
        return dicom_scans(read_dicom_folder(path), rules)
    raise ValueError(f"{path.name}: neither ISMRMRD files (*.h5) nor DICOM files found")


def scans_of(paths: Sequence[str | Path], rules: RoleRules = RoleRules()) -> list[Scan]:
    """The scans of several paths, in the order given."""
    return [scan for p in paths for scan in read_scans(p, rules)]
