"""Read one exam (a directory of ISMRMRD files, one per scan) into cine, T1 and LGE slices.

Every file is classified with the same role rules as the inline core; `truth.h5` (synthetic ground
truth) is not an image file and is skipped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.core.slices import CineSlice, LgeSlice, T1Slice, cine_slices, lge_slices, t1_slices
from vne_inline.io.header import parse_header
from vne_inline.io.mrd_file import read_file
from vne_inline.io.records import ImageRecord

__all__ = ["Exam", "read_exam", "exam_files", "classified_records"]

NON_IMAGE_FILES = {"truth.h5"}


@dataclass
class Exam:
    """The slices of one exam, by role."""

    name: str
    cine: list[CineSlice] = field(default_factory=list)
    t1: list[T1Slice] = field(default_factory=list)
    lge: list[LgeSlice] = field(default_factory=list)


def exam_files(directory: Path) -> list[Path]:
    """The ISMRMRD image files of an exam directory, sorted by name."""
    return sorted(p for p in Path(directory).glob("*.h5") if p.name not in NON_IMAGE_FILES)


def classified_records(path: Path, rules: RoleRules = RoleRules()) -> list[tuple[Role, ImageRecord]]:
    """Every image of one file with its role (the header's announced phases inform the cine rule)."""
    f = read_file(path)
    try:
        phases = parse_header(f.header_xml).n_phases
    except ValueError:
        phases = 1
    return [(classify(r, rules, phases), r) for r in f.records()]


def read_exam(directory: Path, rules: RoleRules = RoleRules(), files: Sequence[Path] | None = None) -> Exam:
    """Read and group all image files of `directory` (or the given files)."""
    by_role: dict[Role, list[ImageRecord]] = {role: [] for role in Role}
    for path in files if files is not None else exam_files(directory):
        for role, record in classified_records(path, rules):
            by_role[role].append(record)
    return Exam(
        name=Path(directory).name,
        cine=cine_slices(by_role[Role.CINE]),
        t1=t1_slices(by_role[Role.T1MAP], by_role[Role.IR]),
        lge=lge_slices(by_role[Role.LGE]),
    )
