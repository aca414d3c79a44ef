"""Write the validation report: ``report.md``, its figures and the burden tables (CSV) in one folder.

Patients are named by their exam directory only (synthetic names, or pseudonyms the user chose).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from vne_inline.validate.evaluate import READINGS, THRESHOLDS, Evaluation, PatientResult
from vne_inline.validate.figures import agreement_figure, montage
from vne_inline.validate.quality import QUALITY_SCORES
from vne_inline.validate.summary import (
    FALSE_POSITIVE_PERCENT,
    NEGATIVE_LGE_PERCENT,
    VNE_READINGS,
    AgreementRow,
    Summary,
    summarise,
)

__all__ = ["write_report", "example_patients"]

def _f(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _slug(name: str) -> str:
    return name.lower().replace(" ", "_")


def example_patients(patients: list[PatientResult], n: int) -> list[PatientResult]:
    """Up to `n` patients spread over the range of LGE burden (FWHM), highest first."""
    ranked = sorted(patients, key=lambda p: (-p.burden("LGE", "FWHM"), p.name))
    if n <= 0 or not ranked:
        return []
    picks = sorted({round(i * (len(ranked) - 1) / max(n - 1, 1)) for i in range(min(n, len(ranked)))})
    return [ranked[i] for i in picks]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _burden_tables(evaluation: Evaluation, out: Path) -> tuple[str, str]:
    columns = [f"{r.name} {t} (%)" for r in READINGS for t in THRESHOLDS]
    _write_csv(out / "burden_per_patient.csv", ["patient", "slices", "nondiagnostic_lge_slices", *columns],
               [[p.name, len(p.slices), len(p.nondiagnostic),
                 *(f"{p.burden(r.name, t):.3f}" for r in READINGS for t in THRESHOLDS)]
                for p in evaluation.patients])
    _write_csv(out / "burden_per_slice.csv", ["patient", "t1_slice", "lge_nondiagnostic", "myo_area_mm2", *columns],
               [[p.name, s.slice, s.lge_nondiagnostic or "", f"{s.burdens['LGE']['FWHM'].myo_area_mm2:.1f}",
                 *(f"{s.burdens[r.name][t].burden_percent:.3f}" for r in READINGS for t in THRESHOLDS)]
                for p in evaluation.patients for s in p.slices])
    return "burden_per_patient.csv", "burden_per_slice.csv"


def _agreement_table(rows: list[AgreementRow]) -> list[str]:
    lines = ["| VNE reading | threshold | n | Pearson r [95 % CI] | p | ICC(2,1) [95 % CI] | p | "
             "bias (VNE - LGE, %) | 95 % limits of agreement (%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        a, ba = row.stats, row.stats.bland_altman
        lines.append(
            f"| {row.reading} | {row.threshold} | {a.n} | {_f(a.pearson.r)} [{_f(a.pearson.ci_low)}, "
            f"{_f(a.pearson.ci_high)}] | {_p(a.pearson.p)} | {_f(a.icc.value)} [{_f(a.icc.ci_low)}, "
            f"{_f(a.icc.ci_high)}] | {_p(a.icc.p)} | {_f(ba.bias)} | {_f(ba.lower)} to {_f(ba.upper)} |"
        )
    return lines


def _median_iqr(values: np.ndarray) -> str:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"{median:.2f} [{q1:.2f}, {q3:.2f}]"


def _lge_rois(evaluation: Evaluation) -> str:
    """Where the LGE's ROIs came from, as a phrase."""
    slices = [s for p in evaluation.patients for s in p.slices]
    own = sum(s.lge_rois is not None for s in slices)
    if own == len(slices):
        return "every slice"
    return f"{own} of {len(slices)} slices; the others with the T1 slice's ROIs"


def _header(evaluation: Evaluation, everything: Evaluation, tables: tuple[str, str]) -> list[str]:
    """The report's opening: model, data and methods of the primary analysis `evaluation`, a subset
    of `everything` (every evaluated slice, non-diagnostic LGE included)."""
    n_slices = sum(len(p.slices) for p in evaluation.patients)
    withheld = everything.n_nondiagnostic
    lines = [
        "# VNE validation report", "",
        f"- **Model**: {evaluation.model}.",
        f"- **Data**: exam folder `{evaluation.exams}`; **n = {len(evaluation.patients)} patients**, "
        f"{n_slices} T1-map slices in the primary analysis"
        + (f" ({len(everything.patients)} patients and {n_slices + withheld} slices evaluated; the {withheld} "
           "slices with non-diagnostic LGE are left out, see the sensitivity analysis)." if withheld else "."),
        "- **LGE image quality**: a slice whose LGE is graded non-diagnostic (by the reader: the contours' "
        "`lge_nondiagnostic.txt`; synthetic exams: their recorded respiratory ghosts) is left out of the primary "
        "analysis, as readers reject such an LGE; the sensitivity analysis keeps it.",
        f"- **ROIs** (LV myocardium, remote myocardium, LV blood pool): {evaluation.rois}.",
        "- **VNE**: made by the inline core (cine, then T1 mapping, replayed as separate connections); "
        "LGE matched to each T1 slice (normal cosine > 0.9, distance < 4 mm) and resampled onto the T1 grid.",
        "- **Lesion burden**: myocardial pixels at or above remote mean + f x (blood mean - remote mean); "
        "LGE and VNE at f = 0.5 / 0.25 / 0.125 (FWHM / FWQM / FWEM), VNE adjusted at 0.35 / 0.20 / 0.10. "
        "Per patient: lesion area / myocardial area summed over slices. Each image is read with the ROIs "
        "drawn on it: VNE (on the T1 grid by construction) with the T1 slice's, the LGE with its own "
        f"({_lge_rois(evaluation)}), since patients move by a few mm between the T1 and LGE scans. "
        f"The myocardium ROIs leave out their {evaluation.margin_mm:g} mm partial-volume rim "
        "(a border pixel half filled with blood reaches the FWHM threshold by itself).",
        "- **Statistics**: Pearson r (95 % CI by Fisher z; scipy.stats.pearsonr); ICC(2,1) = two-way random "
        "effects, absolute agreement, single measures (McGraw & Wong ICC(A,1); pingouin.intraclass_corr, "
        "F-test p, CI rounded to 2 decimals); Bland-Altman bias = mean(VNE - LGE), limits = bias +/- 1.96 SD; "
        "Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided) on paired quality scores.",
        "- **Input-domain check** of the VNE (`VNE_QC`, every evaluated slice; flagged VNE are measured too): "
        + ", ".join(f"{k} {v}" for k, v in sorted(everything.qc_counts().items())) + ".",
        f"- Tables: [{tables[0]}]({tables[0]}), [{tables[1]}]({tables[1]}).", "",
    ]
    if evaluation.skipped:
        lines += ["Patients left out: " + "; ".join(evaluation.skipped) + ".", ""]
    if evaluation.ignored:
        lines += ["Files ignored (not the exam's own series): " + "; ".join(evaluation.ignored) + ".", ""]
    left_out = [f"{p.name} {line}" for p in evaluation.patients for line in p.skipped]
    if left_out:
        lines += ["Slices left out: " + "; ".join(left_out) + ".", ""]
    return lines


def _agreement_section(summary: Summary, agreement_pngs: dict[str, str]) -> list[str]:
    lines = []
    for level, unit in (("patient", "per patient (primary)"), ("slice", "per slice")):
        lines += [f"## Agreement of lesion burden, VNE vs LGE, {unit}", ""]
        lines += _agreement_table([a for a in summary.agreements if a.level == level]) + [""]
    return lines + [f"![{name} vs LGE]({png})\n" for name, png in agreement_pngs.items()]


def _false_positive_table(summary: Summary) -> list[str]:
    return ["| reading | threshold | negative patients | false positives | patients |", "|---|---|---|---|---|"] + [
        f"| {fp.reading} | {fp.threshold} | {fp.negatives} | {len(fp.patients)} | {', '.join(fp.patients) or '-'} |"
        for fp in summary.false_positives]


def _lesion_sections(summary: Summary) -> list[str]:
    """False-positive patients and lesion Dice, against the truth or against LGE."""
    truth = summary.reference == "truth"
    reference = ("the synthetic truth (no true lesion pixel in the evaluated myocardium = negative)" if truth else
                 f"LGE (LGE burden <= {NEGATIVE_LGE_PERCENT} % at the same threshold = negative)")
    lines = ["## False-positive patients", "",
             f"Reference: {reference}. A negative patient is a false positive when its burden is > "
             f"{FALSE_POSITIVE_PERCENT} %.", ""]
    lines += _false_positive_table(summary)
    target = "the true lesion (any grade)" if truth else "the LGE lesion at the same threshold"
    lines += ["", "## Lesion Dice", "",
              f"Lesion masks over all slices of a patient against {target}, in reference-positive patients.", "",
              "| reading | threshold | n | Dice mean +/- SD |", "|---|---|---|---|"]
    return lines + [f"| {d.reading} | {d.threshold} | {d.values.size} | {_f(d.mean)} +/- {_f(d.sd)} |"
                    for d in summary.dice] + [""]


def _sensitivity_section(everything: Evaluation) -> list[str]:
    """Agreement and false positives per patient with every slice, non-diagnostic LGE included."""
    summary = summarise(everything)
    lines = ["## Sensitivity analysis: every slice, non-diagnostic LGE included", "",
             f"n = {len(everything.patients)} patients. Non-diagnostic LGE: "
             + "; ".join(f"{p.name} ({len(p.nondiagnostic)} of {len(p.slices)} slices)"
                         for p in everything.patients if p.nondiagnostic) + ".", ""]
    lines += _agreement_table([a for a in summary.agreements if a.level == "patient"]) + [""]
    return lines + _false_positive_table(summary) + [""]


def _quality_section(summary: Summary) -> list[str]:
    lines = ["## Image quality (automated scores, VNE vs LGE, Wilcoxon signed-rank)", ""]
    lines += [f"- `{name}`: {text}" for name, text in QUALITY_SCORES.items()]
    lines += [
        "", "CNR is what the thresholds depend on (remote pixels cross a threshold at about f x CNR SDs), so "
        "noise, ghosts and poor nulling lower it; the pooled SD of the two ROIs is used because PSIR and the "
        "network output have no usable background noise. A smooth image scores a high CNR whether or not it is "
        "right, hence the fidelity score against the artefact-free truth (synthetic exams): a correlation, "
        "invariant to the intensity scale that differs between PSIR and VNE. The edge width is the border "
        "sharpness: the distance in mm over which the mean edge profile across the endocardial border (median "
        "intensity by signed distance to the border, from 8 mm inside the LV cavity to 4 mm into the wall) falls "
        "from 90 % to 10 % of the way from the blood-pool to the remote-myocardium level (the 10-90 % rise "
        "distance of an edge-spread function, ISO 12233; 2.56 sigma for a Gaussian blur of SD sigma); smaller is "
        "sharper, and an LGE read on the T1 grid includes its coarser acquisition pixels. Per patient: mean over "
        "slices.", "",
        "| score | n | VNE median [IQR] | LGE median [IQR] | median of differences | W | p |",
        "|---|---|---|---|---|---|---|",
    ]
    return lines + [f"| {q.score} | {q.test.n} | {_median_iqr(q.vne)} | {_median_iqr(q.lge)} | "
                    f"{_f(q.test.median_difference)} | {_f(q.test.statistic, 1)} | {_p(q.test.p)} |"
                    for q in summary.quality] + [""]


def _examples_section(montage_pngs: list[str]) -> list[str]:
    lines = ["## Example patients", "",
             "T1 map, VNE, LGE on the T1 grid and lesion regions at FWHM (red), FWQM (orange), FWEM (yellow); "
             "VNE lesions at the adjusted thresholds.", ""]
    return lines + [f"![{Path(m).stem}]({m})\n" for m in montage_pngs]


def write_report(evaluation: Evaluation, out: Path, examples: int = 3) -> Path:
    """Write figures, CSV tables and ``report.md`` into `out`; returns the report's path.

    The primary analysis leaves out slices whose LGE is non-diagnostic (:meth:`Evaluation.diagnostic`);
    when there are any, a sensitivity analysis with them follows. The CSV tables hold every slice.
    Raises ValueError when no patient was evaluated (or none has a diagnostic LGE).
    """
    everything, evaluation = evaluation, evaluation.diagnostic()
    summary = summarise(evaluation)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agreement_pngs = {r.name: f"agreement_{_slug(r.name)}.png" for r in VNE_READINGS}
    for reading, png in agreement_pngs.items():
        rows = [summary.agreement(reading, t) for t in THRESHOLDS]
        agreement_figure(rows, out / png, f"{reading} vs LGE lesion burden per patient")
    montage_pngs = []
    for patient in example_patients(evaluation.patients, examples):
        montage_pngs.append(f"montage_{_slug(patient.name)}.png")
        montage(patient, out / montage_pngs[-1])
    report = out / "report.md"
    sensitivity = _sensitivity_section(everything) if everything.n_nondiagnostic else []
    lines = (_header(evaluation, everything, _burden_tables(everything, out))
             + _agreement_section(summary, agreement_pngs) + sensitivity
             + _lesion_sections(summary) + _quality_section(summary) + _examples_section(montage_pngs))
    report.write_text("\n".join(lines) + "\n")
    return report
