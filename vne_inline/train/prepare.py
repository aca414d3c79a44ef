"""Training triplets: per T1-map slice, the matched cine and LGE resampled onto the T1 grid.

The paper's automated pipeline: match slices by plane (normal cosine > 0.9, distance < 4 mm) with
`core.match`, interpolate cine and LGE onto the T1 map's pixel grid. Every slice that is not written
is listed in ``/rejected`` with its reason (no match, NaN, shape, failed resampling), never dropped
silently. Format ``vne-triplets/1`` (see docs/architecture.md and `train.dataset`).

By default the LGE is then registered to the T1 map (`core.register`: in-plane translation, mutual
information around the heart, at most 6 mm), because the patient breathes to a different position
between the two scans and a target that is a few mm off teaches the generator blurred, displaced
lesions. The heart centre is the truth myocardium's centroid when masks exist, else the image
centre. Each written slice records the shift in its ``lge_shift_mm`` attribute (x, y in mm along the
T1 grid's columns and rows; NaN, NaN when not registered). A slice whose registration fails is
written unregistered and listed in ``/unregistered`` with the reason.

A slice whose LGE is graded non-diagnostic (`io.lge_grading`: a synthetic exam's recorded respiratory
ghosts, or a reader's ``lge_nondiagnostic.txt`` in a grading folder) is rejected with that reason
unless the caller keeps such targets: ghosts put enhancement into the target that no native image
shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vne_inline.adapters.exam_files import Exam, read_exam
from vne_inline.core.match import MatchCriteria, Matched, match_onto
from vne_inline.core.register import MAX_SHIFT_MM, Shift, register_matched
from vne_inline.core.roles import RoleRules
from vne_inline.core.slices import T1Slice
from vne_inline.io.lge_grading import read_nondiagnostic, synthetic_nondiagnostic

__all__ = ["Triplet", "Rejection", "Registration", "PrepareReport", "grader", "triplets_of_exam", "prepare",
           "FORMAT", "MASK_NAMES"]

FORMAT = "vne-triplets/1"
MASK_NAMES = ("myo", "remote", "blood", "lesion_hyper", "lesion_intermediate")
#: triplet mask name -> `synth.truth.SliceTruth` field
_TRUTH_FIELDS = {"myo": "myocardium", "remote": "remote", "blood": "blood",
                 "lesion_hyper": "lesion_hyperintense", "lesion_intermediate": "lesion_intermediate"}


@dataclass
class Triplet:
    """One matched T1 slice with cine (P, H, W), IR (K, H, W), T1 (ms), LGE and optional truth masks."""

    patient: str
    slice: int
    cine: np.ndarray
    ir: np.ndarray
    ti_ms: np.ndarray
    t1: np.ndarray
    lge: np.ndarray
    valid: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    lge_shift_mm: tuple[float, float] | None = None  # registration of the LGE onto the T1 map

    @property
    def name(self) -> str:
        return f"{self.patient}_s{self.slice}"


@dataclass(frozen=True)
class Rejection:
    patient: str
    slice: int | None
    reason: str


@dataclass(frozen=True)
class Registration:
    """How triplet preparation aligns the LGE to the T1 map: `enabled`, largest shift searched (mm)."""

    enabled: bool = True
    max_shift_mm: float = MAX_SHIFT_MM


@dataclass
class PrepareReport:
    """Slices written, slices rejected, slices written without registration (with reasons), and
    the LGE shifts applied (mm)."""

    written: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    unregistered: list[Rejection] = field(default_factory=list)
    shifts_mm: list[float] = field(default_factory=list)


TruthReader = Callable[[Path], dict[int, dict[str, np.ndarray]]]
#: Exam directory -> {T1 slice index: why its LGE is non-diagnostic}.
Grader = Callable[[Path], dict[int, str]]


def synthetic_truth_masks(directory: Path) -> dict[int, dict[str, np.ndarray]]:
    """Masks per T1 slice index from a synthetic exam's truth.h5 (empty when there is none)."""
    path = Path(directory) / "truth.h5"
    if not path.exists():
        return {}
    from vne_inline.synth.truth import read_truth

    return {t.slice: {name: np.asarray(getattr(t, f), dtype=np.uint8) for name, f in _TRUTH_FIELDS.items()}
            for t in read_truth(path)}


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")


def _heart_centre(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> tuple[float, float]:
    """(row, column) of the myocardium mask's centroid, else of the image centre."""
    myo = masks.get("myo")
    if myo is not None and myo.any():
        yy, xx = np.nonzero(myo)
        return float(yy.mean()), float(xx.mean())
    return (shape[0] - 1) / 2, (shape[1] - 1) / 2


def _register(t1: T1Slice, lge: Matched, image: np.ndarray, masks: dict[str, np.ndarray],
              max_shift_mm: float) -> tuple[Matched, Shift | str]:
    """The LGE registered to the T1 map and its shift, or the LGE as matched and why it is not."""
    try:
        return register_matched(t1.geometry, t1.t1_ms, lge, image, _heart_centre(masks, t1.t1_ms.shape), max_shift_mm)
    except ValueError as exc:
        return lge, f"LGE not registered: {exc}"


def _triplet(exam: Exam, t1: T1Slice, cine: Matched, lge: Matched, masks: dict[str, np.ndarray],
             shift: Shift | None) -> Triplet:
    _check_finite("T1 map", t1.t1_ms)
    _check_finite("IR images", t1.ir)
    cine_on_t1, lge_on_t1 = cine.resampled, lge.resampled
    for name, mask in masks.items():
        if mask.shape != t1.t1_ms.shape:
            raise ValueError(f"truth mask {name} has shape {mask.shape}, T1 map {t1.t1_ms.shape}")
    return Triplet(
        patient=exam.name,
        slice=t1.slice,
        cine=cine_on_t1.data.astype(np.float32),
        ir=t1.ir.astype(np.float32),
        ti_ms=t1.ti_ms.astype(np.float32),
        t1=t1.t1_ms.astype(np.float32),
        lge=lge_on_t1.data.astype(np.float32),
        valid=(~(cine_on_t1.outside | lge_on_t1.outside)).astype(np.uint8),
        pixel_spacing_mm=t1.geometry.pixel_spacing,
        masks=masks,
        lge_shift_mm=None if shift is None else (shift.x_mm, shift.y_mm),
    )


def grader(folder: Path | None = None, keep: bool = False) -> Grader:
    """The LGE grades `prepare` rejects by: none when `keep`; else a reader's files under `folder`
    (``<folder>/<exam name>/lge_nondiagnostic.txt``) when given, else a synthetic exam's record."""
    if keep:
        return lambda directory: {}
    if folder is not None:
        return lambda directory: read_nondiagnostic(folder, Path(directory).name)
    return synthetic_nondiagnostic


def triplets_of_exam(
    directory: Path,
    criteria: MatchCriteria = MatchCriteria(),
    truth: TruthReader = synthetic_truth_masks,
    registration: Registration = Registration(),
    grades: Grader = synthetic_nondiagnostic,
    rules: RoleRules = RoleRules(),
) -> tuple[list[Triplet], list[Rejection], list[Rejection]]:
    """Matched triplets of one exam directory, the slices (or the whole exam) rejected and the
    slices written without registration, with reasons."""
    name = Path(directory).name
    try:
        exam = read_exam(directory, rules)
        masks = truth(directory)
        nondiagnostic = grades(directory)
    except (ValueError, OSError) as exc:
        return [], [Rejection(name, None, f"exam not readable: {exc}")], []
    if not exam.t1:
        return [], [Rejection(name, None, "no T1 map with IR images")], []
    out, rejected, unregistered = [], [], []
    for t1 in exam.t1:
        if t1.slice in nondiagnostic:
            rejected.append(Rejection(name, t1.slice, f"LGE non-diagnostic: {nondiagnostic[t1.slice]}"))
            continue
        cine_frames = {c.key: c.frames for c in exam.cine}
        lge_images = {g.key: g.image for g in exam.lge}
        cine = match_onto(t1.geometry, [(c.key, c.geometry) for c in exam.cine], cine_frames.__getitem__, criteria)
        lge = match_onto(t1.geometry, [(g.key, g.geometry) for g in exam.lge], lge_images.__getitem__, criteria)
        for what, m in (("cine", cine), ("LGE", lge)):
            if not isinstance(m, Matched):
                rejected.append(Rejection(name, t1.slice, f"no {what} match: {m.reason}"))
        if not (isinstance(cine, Matched) and isinstance(lge, Matched)):
            continue
        slice_masks = masks.get(t1.slice, {})
        try:
            shift = None
            if registration.enabled:
                lge, shift = _register(t1, lge, lge_images[lge.match.key], slice_masks, registration.max_shift_mm)
                if isinstance(shift, str):
                    unregistered.append(Rejection(name, t1.slice, shift))
                    shift = None
            out.append(_triplet(exam, t1, cine, lge, slice_masks, shift))
        except ValueError as exc:
            rejected.append(Rejection(name, t1.slice, str(exc)))
    return out, rejected, unregistered


def _write_triplet(group: h5py.Group, t: Triplet) -> None:
    g = group.create_group(t.name)
    for key in ("cine", "ir", "ti_ms", "t1", "lge"):
        g.create_dataset(key, data=getattr(t, key), compression="gzip", compression_opts=1, shuffle=True)
    g.create_dataset("valid", data=t.valid, compression="gzip")
    for name, mask in t.masks.items():
        g.create_dataset(name, data=mask.astype(np.uint8), compression="gzip")
    g.attrs["patient"] = t.patient
    g.attrs["slice"] = t.slice
    g.attrs["pixel_spacing_mm"] = np.asarray(t.pixel_spacing_mm, dtype=np.float64)
    g.attrs["lge_shift_mm"] = np.asarray(t.lge_shift_mm if t.lge_shift_mm is not None else (np.nan, np.nan))
    if "myo" in t.masks and t.masks["myo"].any():
        g.attrs["heart_centre_px"] = np.array(_heart_centre(t.masks, t.t1.shape))


def prepare(
    exam_dirs: Iterable[Path],
    out: Path,
    criteria: MatchCriteria = MatchCriteria(),
    on_exam: Callable[[str], None] | None = None,
    registration: Registration = Registration(),
    grades: Grader = synthetic_nondiagnostic,
    rules: RoleRules = RoleRules(),
) -> PrepareReport:
    """Write `out` (triplets.h5) from the exam directories; returns counts and the rejection list.
    `grades` says which slices' LGE is non-diagnostic (see :func:`grader`)."""
    report = PrepareReport()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w") as h5:
        h5.attrs["format"] = FORMAT
        slices = h5.create_group("slices")
        for directory in exam_dirs:
            triplets, rejected, unregistered = triplets_of_exam(Path(directory), criteria, registration=registration,
                                                               grades=grades, rules=rules)
            for t in triplets:
                _write_triplet(slices, t)
                if t.lge_shift_mm is not None:
                    report.shifts_mm.append(float(np.hypot(*t.lge_shift_mm)))
            report.written += len(triplets)
            report.rejected.extend(rejected)
            report.unregistered.extend(unregistered)
            if on_exam:
                on_exam(Path(directory).name)
        for key, rows in (("rejected", report.rejected), ("unregistered", report.unregistered)):
            h5.create_dataset(
                key,
                data=[json.dumps({"patient": r.patient, "slice": r.slice, "reason": r.reason}) for r in rows],
                dtype=h5py.string_dtype(),
            )
    return report
