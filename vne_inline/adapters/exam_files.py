"""Read one exam (a directory of ISMRMRD files, one per scan, or a DICOM folder) into cine, T1 and LGE
slices.

Every scan is classified with the same role rules as the inline core; `truth.h5` (synthetic ground
truth) is not an image file and is skipped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vne_inline.adapters.scans import Scan, exam_files, is_exam_dir, read_scans, scans_of
from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.core.slices import CineSlice, LgeSlice, T1Slice, cine_slices, lge_slices, t1_slices
from vne_inline.io.dicom_json import conformed
from vne_inline.io.header import announced_phases
from vne_inline.io.records import ImageRecord

__all__ = ["Exam", "read_exam", "exam_files", "is_exam_dir", "classified_records"]


@dataclass
class Exam:
    """The slices of one exam, by role."""

    name: str
    cine: list[CineSlice] = field(default_factory=list)
    t1: list[T1Slice] = field(default_factory=list)
    lge: list[LgeSlice] = field(default_factory=list)


def classified_records(scan: Scan | str | Path, rules: RoleRules = RoleRules()) -> list[tuple[Role, ImageRecord]]:
    """Every image of one scan (or of every scan of a file or folder) with its role (the header's
    announced phases inform the cine rule)."""
    if not isinstance(scan, Scan):
        return [item for s in read_scans(scan, rules) for item in classified_records(s, rules)]
    phases = announced_phases(scan.header_xml)
    records = [conformed(r) for r in scan.records]
    return [(classify(r, rules, phases), r) for r in records]


def read_exam(directory: Path, rules: RoleRules = RoleRules(), files: Sequence[Path] | None = None) -> Exam:
    """Read and group all scans of `directory` (ISMRMRD files or a DICOM folder), or of the given files."""
    by_role: dict[Role, list[ImageRecord]] = {role: [] for role in Role}
    for scan in scans_of(files, rules) if files is not None else read_scans(directory, rules):
        for role, record in classified_records(scan, rules):
            by_role[role].append(record)
    return Exam(
        name=Path(directory).name,
        cine=cine_slices(by_role[Role.CINE]),
        t1=t1_slices(by_role[Role.T1MAP], by_role[Role.IR]),
        lge=lge_slices(by_role[Role.LGE]),
    )
