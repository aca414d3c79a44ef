"""Cohort statistics of an :class:`Evaluation`: agreement, false positives, Dice, image quality.

- Agreement of each VNE reading with LGE at each threshold (Pearson r, ICC(2,1), Bland-Altman), per
  patient (the paper's unit) and per slice.
- False-positive patients: reference-negative patients whose burden exceeds
  :data:`FALSE_POSITIVE_PERCENT`. The reference is the truth (no true lesion pixel in the evaluated
  myocardium) when every patient has truth, else LGE (LGE burden at the same threshold at most
  :data:`NEGATIVE_LGE_PERCENT`).
- Lesion Dice per reference-positive patient, against the true lesion (any grade) when known,
  else against the LGE lesion at the same threshold.
- Image quality: per-patient scores of VNE vs LGE, Wilcoxon signed-rank test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vne_inline.validate.evaluate import READINGS, THRESHOLDS, Evaluation, PatientResult, Reading
from vne_inline.validate.quality import QUALITY_SCORES
from vne_inline.validate.stats import Agreement, Wilcoxon, agreement, wilcoxon

__all__ = [
    "FALSE_POSITIVE_PERCENT", "NEGATIVE_LGE_PERCENT", "VNE_READINGS", "AgreementRow", "DiceRow", "FalsePositiveRow", "QualityRow",
    "Summary", "summarise",
]

#: A reference-negative patient is a false positive when its burden exceeds this (%).
FALSE_POSITIVE_PERCENT = 2.0
#: Without truth, a patient counts as LGE-negative at a threshold when its LGE burden is at most this (%).
NEGATIVE_LGE_PERCENT = 0.5
LGE, VNE_READINGS = READINGS[0], READINGS[1:]


@dataclass(frozen=True)
class AgreementRow:
    reading: str
    threshold: str
    level: str  # "patient" or "slice"
    vne: np.ndarray
    lge: np.ndarray
    stats: Agreement


@dataclass(frozen=True)
class FalsePositiveRow:
    reading: str
    threshold: str
    negatives: int
    patients: list[str]  # directory names of the false-positive patients


@dataclass(frozen=True)
class DiceRow:
    reading: str
    threshold: str
    values: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if self.values.size else math.nan

    @property
    def sd(self) -> float:
        return float(self.values.std(ddof=1)) if self.values.size > 1 else math.nan


@dataclass(frozen=True)
class QualityRow:
    score: str
    vne: np.ndarray
    lge: np.ndarray
    test: Wilcoxon


@dataclass(frozen=True)
class Summary:
    reference: str  # "truth" or "LGE"
    agreements: list[AgreementRow]
    false_positives: list[FalsePositiveRow]
    dice: list[DiceRow]
    quality: list[QualityRow]

    def agreement(self, reading: str, threshold: str, level: str = "patient") -> AgreementRow:
        return next(a for a in self.agreements if (a.reading, a.threshold, a.level) == (reading, threshold, level))


def _agreements(patients: list[PatientResult]) -> list[AgreementRow]:
    rows = []
    for reading in VNE_READINGS:
        for t in THRESHOLDS:
            per_patient = (np.array([p.burden(reading.name, t) for p in patients]),
                           np.array([p.burden(LGE.name, t) for p in patients]))
            slices = [s for p in patients for s in p.slices]
            per_slice = (np.array([s.burdens[reading.name][t].burden_percent for s in slices]),
                         np.array([s.burdens[LGE.name][t].burden_percent for s in slices]))
            for level, (vne, lge) in (("patient", per_patient), ("slice", per_slice)):
                rows.append(AgreementRow(reading.name, t, level, vne, lge, agreement(vne, lge)))
    return rows


def _negative(patient: PatientResult, threshold: str, truth: bool) -> bool:
    if truth:
        return not patient.truth_positive
    return patient.burden(LGE.name, threshold) <= NEGATIVE_LGE_PERCENT


def _false_positives(patients: list[PatientResult], truth: bool) -> list[FalsePositiveRow]:
    readings = READINGS if truth else VNE_READINGS
    rows = []
    for reading in readings:
        for t in THRESHOLDS:
            negatives = [p for p in patients if _negative(p, t, truth)]
            flagged = [p.name for p in negatives if p.burden(reading.name, t) > FALSE_POSITIVE_PERCENT]
            rows.append(FalsePositiveRow(reading.name, t, len(negatives), flagged))
    return rows


def _dice(patients: list[PatientResult], truth: bool) -> list[DiceRow]:
    readings: tuple[Reading, ...] = READINGS if truth else VNE_READINGS
    rows = []
    for reading in readings:
        for t in THRESHOLDS:
            positives = [p for p in patients if not _negative(p, t, truth)]
            values = [p.dice(reading, t, None if truth else LGE) for p in positives]
            rows.append(DiceRow(reading.name, t, np.array(values, dtype=np.float64)))
    return rows


def _quality(patients: list[PatientResult]) -> list[QualityRow]:
    rows = []
    for score in QUALITY_SCORES:
        pairs = np.array([(p.quality(score, "vne"), p.quality(score, "lge")) for p in patients]).reshape(-1, 2)
        pairs = pairs[np.isfinite(pairs).all(axis=1)]
        if len(pairs):
            rows.append(QualityRow(score, pairs[:, 0], pairs[:, 1], wilcoxon(pairs[:, 0], pairs[:, 1])))
    return rows


def summarise(evaluation: Evaluation) -> Summary:
    """All cohort statistics; ValueError when no patient was evaluated."""
    patients = evaluation.patients
    if not patients:
        raise ValueError("no patient was evaluated")
    truth = all(p.has_truth for p in patients)
    return Summary(
        reference="truth" if truth else "LGE",
        agreements=_agreements(patients),
        false_positives=_false_positives(patients, truth),
        dice=_dice(patients, truth),
        quality=_quality(patients),
    )
