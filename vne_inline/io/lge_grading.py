"""LGE image-quality grades: the T1 slices whose matched LGE is non-diagnostic, and why.

Readers grade an LGE before they quantify it or train on it; a non-diagnostic one is no reference.
Two sources, one per kind of data:

- real exams: the reader's ``<patient>/lge_nondiagnostic.txt`` (:data:`NONDIAGNOSTIC_FILE`) in a
  folder laid out like the contours (docs/contours.md): one ``<k> [reason]`` per line, ``k`` the T1
  map's ``slice`` index, ``#`` starts a comment;
- synthetic exams: the artefacts recorded in ``truth.h5`` (:data:`NONDIAGNOSTIC_LGE_ARTEFACTS`).

`vne-inline evaluate` leaves graded slices out of its primary analysis; `vne-inline prepare` rejects
them as training targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["NONDIAGNOSTIC_FILE", "NONDIAGNOSTIC_LGE_ARTEFACTS", "read_nondiagnostic", "recorded_nondiagnostic",
           "synthetic_nondiagnostic"]

#: The reader's list of T1 slices whose LGE is non-diagnostic, in a patient's folder.
NONDIAGNOSTIC_FILE = "lge_nondiagnostic.txt"

#: Artefacts a synthetic exam records (``truth.h5`` attribute "artefacts") that make its LGE
#: non-diagnostic -> the reason given. Respiratory ghosts replicate fat, chest wall and blood along
#: the phase-encoding direction across the myocardium, where they read as enhancement; readers repeat
#: or reject such an LGE. Measured on the 330 training exams (seed 1000), LGE FWHM burden minus that of
#: the exam's artefact-free LGE: with ghosts median +10.1 points (+1.6 to +20.9; 19 exams whose
#: artefact-free LGE reads 0 % read up to 20.9 %); without artefacts median 0.0, 95 % within 1.1 points.
#: A wrong inversion time is not listed: the phase-sensitive reconstruction keeps the sign (median 0.0,
#: 95 % within 5.2 points; lesion-free exams at most 1.1 %).
NONDIAGNOSTIC_LGE_ARTEFACTS: dict[str, str] = {"lge_ghosts": "respiratory ghosts (synthetic exam's artefact record)"}


def read_nondiagnostic(directory: str | Path, patient: str) -> dict[int, str]:
    """The T1 slices of `patient` whose LGE the reader marked non-diagnostic -> the reason given
    ("marked non-diagnostic by the reader" when none); {} without a :data:`NONDIAGNOSTIC_FILE`.

    Raises ValueError for a line that does not start with a slice index.
    """
    path = Path(directory) / patient / NONDIAGNOSTIC_FILE
    if not path.is_file():
        return {}
    out: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        index, _, reason = text.partition(" ")
        if not index.isdigit():
            raise ValueError(f"{patient}/{NONDIAGNOSTIC_FILE} line {number}: expected '<slice index> [reason]', got {line!r}")
        out[int(index)] = reason.strip() or "marked non-diagnostic by the reader"
    return out


def recorded_nondiagnostic(attrs: Mapping) -> str | None:
    """Why a synthetic exam's LGE is non-diagnostic, from the artefacts recorded in its truth
    attributes (None: diagnostic)."""
    artefacts = attrs.get("artefacts", {})
    return "; ".join(reason for name, reason in NONDIAGNOSTIC_LGE_ARTEFACTS.items() if artefacts.get(name)) or None


def synthetic_nondiagnostic(exam_dir: str | Path) -> dict[int, str]:
    """By T1 slice index, why a synthetic exam's LGE is non-diagnostic ({} without ``truth.h5`` or
    when it is diagnostic)."""
    path = Path(exam_dir) / "truth.h5"
    if not path.exists():
        return {}
    from vne_inline.synth.truth import read_truth

    return {t.slice: reason for t in read_truth(path) if (reason := recorded_nondiagnostic(t.attrs)) is not None}
