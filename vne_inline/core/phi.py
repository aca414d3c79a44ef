"""Patient-identifying image meta, removed before anything is written to the slice store.

The store keeps an image's meta only so that a VNE made on a later connection can carry the T1 map's
tags (series description, window, processing history). Names, IDs, birth dates, addresses and
accession numbers are never needed for that, so they are dropped: plain meta keys by name (with or
without a ``GADGETRON_``/``DICOM_`` prefix, any case), and in a ``DicomJson`` header (pydicom's JSON
form, as python-ismrmrd-server's ``dicom2mrd`` writes it) every Patient-group (0010,xxxx) element and
the study-level identifiers below. A ``DicomJson`` that cannot be read is dropped whole.
"""

from __future__ import annotations

import json
import re

from vne_inline.io.records import MetaValue

__all__ = ["IDENTIFYING_KEYS", "strip_identifiers"]

#: Meta keys (prefix removed, case-insensitive) that identify the patient or the visit.
IDENTIFYING_KEYS = frozenset(k.lower() for k in (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress", "PatientSex",
    "PatientAge", "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames", "PatientMotherBirthName",
    "IssuerOfPatientID", "AccessionNumber", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "InstitutionName", "InstitutionAddress", "StudyID", "RequestingPhysician",
    "PatientComments", "AdmissionID",
))
#: DICOM tags outside group 0010 that identify the patient or the visit (pydicom JSON keys, hex).
_DICOM_TAGS = frozenset({
    "00080050",  # AccessionNumber
    "00080080", "00080081",  # InstitutionName, InstitutionAddress
    "00080090", "00081050", "00081070",  # Referring, Performing physician, Operators' name
    "00200010",  # StudyID
    "00321032",  # RequestingPhysician
    "00380010",  # AdmissionID
})
_PREFIX = re.compile(r"^(GADGETRON_|DICOM_)", re.IGNORECASE)
_DICOM_JSON_KEY = "dicomjson"


def _identifying(key: str) -> bool:
    return _PREFIX.sub("", key).lower() in IDENTIFYING_KEYS


def _strip_dicom_json(value: MetaValue) -> str | None:
    """The DicomJson text without identifying elements; None when it is not a JSON object."""
    text = value[0] if isinstance(value, list) and value else value
    try:
        tags = json.loads(str(text))
    except (ValueError, RecursionError):
        return None
    if not isinstance(tags, dict):
        return None
    kept = {tag: v for tag, v in tags.items() if not (str(tag).startswith("0010") or str(tag) in _DICOM_TAGS)}
    return json.dumps(kept, sort_keys=True)


def strip_identifiers(meta: dict[str, MetaValue]) -> dict[str, MetaValue]:
    """A copy of `meta` without patient-identifying entries (see the module text)."""
    out: dict[str, MetaValue] = {}
    for key, value in meta.items():
        if _identifying(key):
            continue
        if _PREFIX.sub("", key).lower() == _DICOM_JSON_KEY:
            value = _strip_dicom_json(value)
            if value is None:
                continue
        out[key] = value
    return out
