"""Validate reduced precision on the task: lesion burden of float32 vs each candidate, per slice.

1. Calibration: synthetic patients (their own seed) run through the inline core with the float32 model;
   the padded model inputs it sees calibrate the int8 model (:func:`vne_inline.infer.quantize.quantize_int8`).
2. Validation: other synthetic patients run once through :func:`evaluate_exams` with the reference
   (float32 ONNX Runtime); every candidate (OpenVINO float32 and bfloat16, int8 with ONNX Runtime and
   OpenVINO) runs on the same model inputs, batch by batch, and its output is read with the same ROIs.
   Per T1 slice: the VNE burden difference at FWHM/FWQM/FWEM for the paper's fractions
   (50/25/12.5 %) and the adjusted ones (35/20/10 %), the largest absolute pixel difference, and the
   Dice of the lesion masks.
3. A candidate is accepted when it made the VNE of every slice the reference made and every slice's
   burden differs by at most :data:`TOLERANCE_POINTS` percentage points at every threshold.
4. Every candidate is timed (median ms per 256 x 256 slice, batch 1) in the same run, and the record
   is written beside the model (:func:`vne_inline.infer.precision.write_record`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vne_inline.core.normalise import crop, pad_to_multiple, to_vne
from vne_inline.infer.base import BackendError, model_file
from vne_inline.infer.bench import time_backend
from vne_inline.infer.cpu_features import matrix_features
from vne_inline.infer.precision import TOLERANCE_POINTS, int8_path, write_record
from vne_inline.infer.select import load_backend
from vne_inline.quantify import dice
from vne_inline.validate.evaluate import READINGS as ALL_READINGS
from vne_inline.validate.evaluate import THRESHOLDS, Evaluation, Reading, evaluate_exams

__all__ = ["CANDIDATES", "READINGS", "Candidate", "SliceDiff", "compare", "slice_rows", "summary_rows", "to_markdown",
           "validate_precision"]

#: The VNE readings whose burden must agree (the paper's fractions and its adjusted ones for VNE).
READINGS: tuple[Reading, ...] = tuple(r for r in ALL_READINGS if r.image == "vne")
#: (backend, precision) validated, the reference first.
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8"), ("openvino", "int8"),
)
_TIME_SIZE = 256


@dataclass(frozen=True)
class SliceDiff:
    """One T1 slice, candidate vs reference: burden (%) of the reference and difference (candidate -
    reference, percentage points) by reading and threshold, pixel differences (VNE image units) and
    Dice of the lesion masks by reading and threshold."""

    patient: str
    slice: int
    reference: dict[str, dict[str, float]]
    difference: dict[str, dict[str, float]]
    max_abs_pixel: float
    max_abs_reference: float
    dice: dict[str, dict[str, float]]

    def worst(self, threshold: str) -> float:
        """Largest |burden difference| at `threshold` over the readings (points)."""
        return max(abs(d[threshold]) for d in self.difference.values())

    def min_dice(self, threshold: str) -> float:
        return min(d[threshold] for d in self.dice.values())


@dataclass
class Candidate:
    """A validated (backend, precision): its slices, whether accepted and why, its speed."""

    backend: str
    precision: str
    detail: str = ""
    slices: list[SliceDiff] = field(default_factory=list)
    accepted: bool = False
    reason: str = ""
    ms_per_slice: float | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def max_difference(self, threshold: str | None = None) -> float:
        """Largest |burden difference| (points) over slices, at `threshold` or any threshold."""
        names = THRESHOLDS if threshold is None else (threshold,)
        return max((s.worst(t) for s in self.slices for t in names), default=math.nan)

    def to_json(self) -> dict:
        """The record's entry (see :mod:`vne_inline.infer.precision`)."""
        measured = bool(self.slices)
        return {
            "backend": self.backend, "precision": self.precision, "detail": self.detail,
            "accepted": self.accepted, "reason": self.reason, "ms_per_slice": self.ms_per_slice,
            "slices": len(self.slices),
            "max_burden_diff_points": self.max_difference() if measured else None,
            "max_burden_diff_by_threshold": {t: self.max_difference(t) for t in THRESHOLDS} if measured else None,
            "max_abs_pixel_diff": max(s.max_abs_pixel for s in self.slices) if measured else None,
            "min_dice": min(s.min_dice(t) for s in self.slices for t in THRESHOLDS) if measured else None,
            "per_slice": [{"patient": s.patient, "slice": s.slice, "reference": s.reference,
                           "difference": s.difference, "max_abs_pixel_diff": s.max_abs_pixel,
                           "max_abs_reference": s.max_abs_reference, "dice": s.dice} for s in self.slices],
        }


def compare(reference: Evaluation, candidate: Evaluation) -> tuple[list[SliceDiff], list[str]]:
    """Per-slice differences for the slices both evaluated, and one line per reference slice the
    candidate lacks."""
    theirs = {(p.name, s.slice): s for p in candidate.patients for s in p.slices}
    diffs, missing = [], []
    for patient in reference.patients:
        for ref in patient.slices:
            other = theirs.get((patient.name, ref.slice))
            if other is None:
                missing.append(f"{patient.name} T1 slice {ref.slice}: no VNE with this precision")
                continue
            burden = {r.name: {t: ref.burdens[r.name][t].burden_percent for t in THRESHOLDS} for r in READINGS}
            diff = {r.name: {t: other.burdens[r.name][t].burden_percent - burden[r.name][t] for t in THRESHOLDS}
                    for r in READINGS}
            dice_by = {r.name: {t: dice(ref.lesion(r, t), other.lesion(r, t)) for t in THRESHOLDS} for r in READINGS}
            delta = np.abs(other.vne.astype(np.float64) - ref.vne)
            diffs.append(SliceDiff(patient.name, ref.slice, burden, diff, float(np.nanmax(delta)),
                                   float(np.nanmax(np.abs(ref.vne))), dice_by))
    return diffs, missing


def _verdict(candidate: Candidate, missing: list[str], tolerance: float) -> None:
    if missing:
        candidate.reason = f"rejected: {len(missing)} slice(s) without VNE ({missing[0]})"
        return
    if not candidate.slices:
        candidate.reason = "rejected: no slice evaluated"
        return
    worst = max(candidate.slices, key=lambda s: max(s.worst(t) for t in THRESHOLDS))
    threshold = max(THRESHOLDS, key=worst.worst)
    largest = worst.worst(threshold)
    where = f"largest {largest:.2f} points at {threshold} ({worst.patient} T1 slice {worst.slice})"
    candidate.accepted = largest <= tolerance + 1e-9
    verb = "accepted" if candidate.accepted else "rejected"
    candidate.reason = f"{verb}: {len(candidate.slices)} slices, burden within {tolerance} points: {where}"


def calibration_batches(exams: Path, backend, config=None) -> list[dict[str, np.ndarray]]:
    """The padded model inputs the inline core gives `backend` for the patients in `exams`."""
    recorder = _Recorder(backend)
    evaluate_exams(exams, recorder, config=config)
    return recorder.batches


class _Recorder:
    """A backend that keeps a copy of every input batch it runs (for calibration)."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.name, self.config, self.detail = backend.name, backend.config, backend.detail
        self.batches: list[dict[str, np.ndarray]] = []

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        self.batches.append({name: np.array(a, dtype=np.float32) for name, a in batch.items()})
        return self._backend.run(batch)


class _Tee:
    """The reference backend (whose output the inline core uses), running every candidate on each batch
    too and keeping their outputs, so that all precisions see the same model inputs."""

    def __init__(self, reference, candidates: Mapping[str, object]) -> None:
        self._reference, self._candidates = reference, dict(candidates)
        self.name, self.config, self.detail = reference.name, reference.config, reference.detail
        self.runs: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.errors: dict[str, str] = {}

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        output = np.asarray(self._reference.run(batch))
        others = {}
        for label, backend in self._candidates.items():
            if label not in self.errors:
                try:
                    others[label] = np.asarray(backend.run(batch))
                except Exception as exc:  # a failing candidate is rejected, the reference goes on
                    self.errors[label] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        self.runs.append((output, others))
        return output

    def _outputs(self, vne: np.ndarray) -> dict[str, np.ndarray]:
        """The candidates' VNE images for the slice whose reference VNE image is `vne` ({} if unknown)."""
        _, info = pad_to_multiple(np.zeros(vne.shape, np.float32), self.config.size_multiple)
        for output, others in self.runs:
            if output.shape[-2:] != (info.shape[0] + info.top + info.bottom, info.shape[1] + info.left + info.right):
                continue
            for i in range(output.shape[0]):
                if np.array_equal(to_vne(crop(output[i, 0], info)), vne):
                    return {label: to_vne(crop(o[i, 0], info)) for label, o in others.items()}
        return {}

    def evaluation(self, reference: Evaluation, label: str) -> Evaluation:
        """`reference` with candidate `label`'s VNE images read with the same ROIs (slices it lacks left out)."""
        patients = []
        for p in reference.patients:
            slices = [replace(s, vne=out[label], burdens={}) for s in p.slices
                      if label in (out := self._outputs(s.vne))]
            patients.append(replace(p, slices=slices))
        return replace(reference, patients=patients)


def validate_precision(
    exams: Path,
    calibration: Path,
    model: Path | None = None,
    threads: int | None = None,
    candidates: tuple[tuple[str, str], ...] = CANDIDATES,
    runs: int = 20,
    tolerance: float = TOLERANCE_POINTS,
    progress: Callable[[str], None] = lambda line: None,
    provenance: Mapping[str, object] | None = None,
) -> tuple[list[Candidate], Path]:
    """Validate `candidates` on the patients in `exams` (int8 calibrated on those in `calibration`),
    write the record beside the model and return (the candidates, the record's path).

    `provenance` (seeds, patient counts, the command) is stored in the record as its "validation".
    Raises BackendError when the reference (first candidate) cannot be loaded or evaluates no slice.
    """
    onnx = model_file(model, ".onnx")
    features = matrix_features()
    ref_name, ref_precision = candidates[0]
    reference_backend = load_backend(ref_name, onnx, threads, ref_precision)
    if any(p == "int8" for _, p in candidates):
        progress(f"calibrating int8 on the patients in {Path(calibration).name}")
        batches = calibration_batches(calibration, reference_backend)
        from vne_inline.infer.quantize import quantize_int8

        quantize_int8(onnx, batches, int8_path(onnx), reduce_range=not features.int8_dot)
        progress(f"int8 model written to {int8_path(onnx)} ({len(batches)} calibration batches)")
    results, loaded = [], {}
    for name, precision in candidates:
        candidate = Candidate(name, precision)
        results.append(candidate)
        try:
            backend = load_backend(name, onnx, threads, precision)
        except BackendError as exc:
            candidate.reason = f"not run: {exc}"
            progress(f"{candidate.label}: {candidate.reason}")
            continue
        candidate.detail = backend.detail
        candidate.ms_per_slice = time_backend(backend, _TIME_SIZE, 1, runs)
        progress(f"{candidate.label}: {candidate.ms_per_slice:.1f} ms per {_TIME_SIZE} x {_TIME_SIZE} slice")
        if candidate is not results[0]:
            loaded[candidate.label] = backend
    progress(f"reference {results[0].label} on the patients in {Path(exams).name}, with {', '.join(loaded) or 'nothing'}")
    tee = _Tee(reference_backend, loaded)
    reference = evaluate_exams(exams, tee, progress=progress)
    n_ref = sum(len(p.slices) for p in reference.patients)
    if n_ref == 0:
        raise BackendError("the reference evaluated no slice: " + "; ".join(reference.skipped[:3]))
    for candidate in results:
        if candidate is results[0]:
            candidate.slices, _ = compare(reference, reference)
            candidate.accepted, candidate.reason = True, f"reference: {n_ref} slices"
        elif candidate.label in tee.errors:
            candidate.reason = f"rejected: failed to run: {tee.errors[candidate.label]}"
        elif candidate.label in loaded:
            candidate.slices, missing = compare(reference, tee.evaluation(reference, candidate.label))
            _verdict(candidate, missing, tolerance)
        progress(f"{candidate.label}: {candidate.reason}")
    record = {
        "machine": {"cpu": features.model, "features": features.names, "description": features.describe(),
                    "threads": threads},
        "criterion": f"every slice's VNE burden within {tolerance} percentage points of {ref_name} {ref_precision} "
                     f"at FWHM/FWQM/FWEM for fractions 50/25/12.5 % and 35/20/10 %, and no slice lost",
        "tolerance_points": tolerance,
        "validation": {"patients": len(reference.patients), "slices": n_ref, **(provenance or {})},
        "timing": f"median ms per {_TIME_SIZE} x {_TIME_SIZE} slice, batch 1, {runs} runs",
        "candidates": [c.to_json() for c in results],
    }
    return results, write_record(onnx, record)


# ---------------------------------------------------------------------------------------- tables
SUMMARY_HEADERS = ("backend", "precision", "ms/slice", "slices", "max |d| FWHM", "max |d| FWQM", "max |d| FWEM",
                   "max |d pixel|", "min Dice", "verdict")
SLICE_HEADERS = ("patient", "slice", "fp32 FWHM %", "fp32 FWQM %", "fp32 FWEM %", "|d| FWHM", "|d| FWQM",
                 "|d| FWEM", "max |d pixel|", "Dice FWHM", "Dice FWQM", "Dice FWEM")


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def summary_rows(candidates: list[Candidate]) -> list[tuple[str, ...]]:
    """One row per candidate: speed, largest burden difference per threshold (points), largest pixel
    difference (relative to the largest reference pixel), smallest Dice, verdict."""
    rows = []
    for c in candidates:
        pixel = "-"
        if c.slices:
            worst = max(c.slices, key=lambda s: s.max_abs_pixel)
            pixel = f"{worst.max_abs_pixel:.3g} ({worst.max_abs_pixel / max(worst.max_abs_reference, 1e-12):.1e})"
        dices = [s.min_dice(t) for s in c.slices for t in THRESHOLDS]
        rows.append((c.backend, c.precision, _f(c.ms_per_slice, 1), str(len(c.slices)),
                     *(_f(c.max_difference(t) if c.slices else None) for t in THRESHOLDS), pixel,
                     _f(min(dices) if dices else None, 3), c.reason))
    return rows


def slice_rows(candidate: Candidate) -> list[tuple[str, ...]]:
    """One row per slice: reference burdens (%, paper's fractions), |difference| per threshold (points,
    largest over both readings), largest |pixel difference| and Dice per threshold (smallest over both)."""
    return [(s.patient, str(s.slice), *(_f(s.reference["VNE"][t]) for t in THRESHOLDS),
             *(_f(s.worst(t)) for t in THRESHOLDS), f"{s.max_abs_pixel:.3g}",
             *(_f(s.min_dice(t), 3) for t in THRESHOLDS)) for s in candidate.slices]


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)] + ["| " + " | ".join(r) + " |" for r in rows]


def to_markdown(candidates: list[Candidate], record: Path, command: str = "", machine: str = "") -> str:
    """Summary table, then the per-slice table of every reduced-precision candidate that ran."""
    lines = [f"Written by `{command}`." if command else "", "", f"Record: `{record.name}` (beside the model). "
             f"{machine}", "", *_table(SUMMARY_HEADERS, summary_rows(candidates)), "",
             "Burden differences |d| in percentage points of the LV myocardium (largest over the readings at "
             "50/25/12.5 % and 35/20/10 %); pixel differences in VNE image units (relative to the largest "
             "float32 pixel); Dice of the lesion masks, float32 vs the candidate."]
    for c in candidates:
        if c.slices and c.precision != "fp32":
            lines += ["", f"### {c.label} per slice", "", *_table(SLICE_HEADERS, slice_rows(c))]
    return "\n".join(lines).strip() + "\n"
