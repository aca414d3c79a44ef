"""Role classification of incoming images: cine | ir | t1map | lge | vne | other.

Real sites tag images differently, so the role is decided by a configurable chain of rules, first
match wins (design §3):

1. explicit series-index map (``series_roles``),
2. ``GADGETRON_DataRole`` / ``DataRole`` meta (``data_roles``), then DICOM ImageType values
   (``ImageType`` meta: ``T1 MAP``),
3. sequence-description patterns (``description_patterns``, regular expressions, case-insensitive),
4. image type: phase or complex images are never used (``other``),
5. an inversion time in the meta (``GADGETRON_TI`` / ``TI`` / ``InversionTime``, or "TI 100" /
   "TIeff 100 ms" in ``ImageComments``) -> IR-weighted image,
6. many cardiac phases without TI -> cine (image ``phase`` > 0, or the session header's encoding
   limits announce more than ``min_cine_phases`` phases).

Anything else is ``other`` and is passed on untouched. Patterns come from the operator's configuration
only; they are compiled once and matched on the first :data:`MATCH_CHARS` characters of a description,
so the work per image is bounded whatever an image's meta holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import ismrmrd

from vne_inline.io.dicom_json import ti_from_comment
from vne_inline.io.records import ImageRecord, meta_float, meta_str

__all__ = ["Role", "RoleRules", "classify", "inversion_time_ms", "DESCRIPTION_KEYS", "MATCH_CHARS"]


class Role(str, Enum):
    CINE = "cine"
    IR = "ir"
    T1MAP = "t1map"
    LGE = "lge"
    VNE = "vne"
    OTHER = "other"


#: Characters of a description the patterns see (DICOM SeriesDescription is at most 64).
MATCH_CHARS = 256
DESCRIPTION_KEYS = ("GADGETRON_SeqDescription", "SequenceDescription", "SeriesDescription")
_TI_KEYS = ("GADGETRON_TI", "TI", "InversionTime")
_ROLE_KEYS = ("GADGETRON_DataRole", "DataRole")

DEFAULT_DATA_ROLES: dict[str, Role] = {
    "T1": Role.T1MAP,
    "T1MAP": Role.T1MAP,
    "PSIR": Role.LGE,
    "LGE": Role.LGE,
    "VNE": Role.VNE,
    "T1FITR2": Role.OTHER,  # goodness of fit and invalid pixels of fitted T1 maps (core.t1_fit)
    "T1FITINVALID": Role.OTHER,
}

DEFAULT_PATTERNS: tuple[tuple[str, Role], ...] = (
    (r"_VNE\b|\bVNE\b", Role.VNE),
    (r"t1[\s_-]*map|T1MAP|_MOCO_T1|MOLLI.*_T1$", Role.T1MAP),
    (r"psir|\blge\b|_lge|\bde_|delayed", Role.LGE),
    (r"molli", Role.IR),
    (r"cine|trufi|bssfp|ssfp|fiesta|b-?ffe", Role.CINE),
    # Vendor product names (the vendors' sequence names as their protocol documentation gives them):
    # GE "MDE" (myocardial delayed enhancement) LGE; Philips "(s)BTFE" balanced turbo field echo cine.
    (r"\bmde\b", Role.LGE),
    (r"b-?tfe", Role.CINE),
)

#: DICOM ImageType values (value 3 of MR ImageType, CT/MR defined terms; Siemens puts "T1 MAP" there and
#: "MOCO" on motion-corrected images) that decide the role before the description patterns.
IMAGE_TYPE_ROLES: dict[str, Role] = {"T1 MAP": Role.T1MAP, "T1MAP": Role.T1MAP, "VNE": Role.VNE}


@dataclass(frozen=True)
class RoleRules:
    """The configurable rule chain; defaults recognise the synthetic exams and Gadgetron 4.x tags."""

    series_roles: Mapping[int, Role] = field(default_factory=dict)
    data_roles: Mapping[str, Role] = field(default_factory=lambda: dict(DEFAULT_DATA_ROLES))
    description_patterns: tuple[tuple[str, Role], ...] = DEFAULT_PATTERNS
    min_cine_phases: int = 8
    _compiled: tuple[tuple[re.Pattern, Role], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = tuple((re.compile(regex, re.IGNORECASE), role) for regex, role in self.description_patterns)
        except re.error as exc:
            raise ValueError(f"bad role pattern: {exc}") from exc
        object.__setattr__(self, "_compiled", compiled)

    @classmethod
    def from_strings(
        cls,
        series_map: str | None = None,
        patterns: str | None = None,
        min_cine_phases: int = 8,
    ) -> RoleRules:
        """From configuration text: ``series_map`` like ``"5=cine,7=ir,8=t1map"``; ``patterns`` like
        ``"regex=role;regex=role"`` (tried before the defaults)."""
        series: dict[int, Role] = {}
        for item in filter(None, (s.strip() for s in (series_map or "").split(","))):
            index, _, role = item.partition("=")
            try:
                series[int(index)] = Role(role.strip().lower())
            except ValueError as exc:
                raise ValueError(f"bad series map entry {item!r}: use <series index>=<role>") from exc
        extra: list[tuple[str, Role]] = []
        for item in filter(None, (s.strip() for s in (patterns or "").split(";"))):
            regex, _, role = item.rpartition("=")
            try:
                re.compile(regex)
                extra.append((regex, Role(role.strip().lower())))
            except (re.error, ValueError) as exc:
                raise ValueError(f"bad role pattern {item!r}: use <regex>=<role>") from exc
        return cls(series_roles=series, description_patterns=tuple(extra) + DEFAULT_PATTERNS,
                   min_cine_phases=min_cine_phases)


def inversion_time_ms(record: ImageRecord) -> float | None:
    """The image's inversion time (ms) from its meta (TI tags, else the vendors' "TIeff 100 ms" /
    "TI 100" in ``ImageComments``), if any."""
    for key in _TI_KEYS:
        ti = meta_float(record.meta, key)
        if ti is not None:
            return ti
    return ti_from_comment(meta_str(record.meta, "ImageComments"))


def _image_type_role(record: ImageRecord) -> Role | None:
    """The role named by a DICOM ImageType value (``ImageType`` meta, a list or backslash-joined)."""
    for part in (meta_str(record.meta, "ImageType") or "").split("\\"):
        role = IMAGE_TYPE_ROLES.get(part.strip().upper())
        if role is not None:
            return role
    return None


def classify(record: ImageRecord, rules: RoleRules = RoleRules(), header_phases: int = 1) -> Role:
    """The role of one image; `header_phases` is the session header's announced number of phases."""
    if record.series_index in rules.series_roles:
        return rules.series_roles[record.series_index]
    for key in _ROLE_KEYS:
        value = meta_str(record.meta, key)
        for part in (value or "").split("\\"):
            role = rules.data_roles.get(part.strip().upper())
            if role is not None:
                return role
    image_type_role = _image_type_role(record)
    if image_type_role is not None:
        return image_type_role
    for key in DESCRIPTION_KEYS:
        description = (meta_str(record.meta, key) or "")[:MATCH_CHARS]
        if description:
            for pattern, role in rules._compiled:
                if pattern.search(description):
                    return role
    if record.image_type in (ismrmrd.IMTYPE_PHASE, ismrmrd.IMTYPE_COMPLEX):
        return Role.OTHER
    if inversion_time_ms(record) is not None:
        return Role.IR
    if record.phase > 0 or header_phases >= rules.min_cine_phases:
        return Role.CINE
    return Role.OTHER
