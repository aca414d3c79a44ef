"""Evaluate VNE against LGE on exam directories: the same inline core, then lesion burden per slice.

Per patient directory (one ISMRMRD file per scan; ``truth.h5`` for synthetic exams):

1. VNE: the cine files, then the T1-mapping files, are replayed through :class:`InlineCore` as
   separate connections (as the scanner sends them), with a fresh temporary slice store.
2. LGE: the LGE slice matching each T1 slice (cosine > 0.9, < 4 mm; :func:`core.match.match_onto`)
   is resampled onto the T1 grid; T1 pixels the LGE slice does not cover become NaN (never lesion).
3. ROIs (LV myocardium, remote, blood pool) per T1 slice from ``--contours`` or from ``truth.h5``;
   the true lesion mask (any grade) and the artefact-free LGE come from ``truth.h5`` when present.
   Each image is read with the contours drawn on it, as readers do: the VNE (on the T1 map's grid)
   with the T1 slice's ROIs, the LGE with the LGE's own ROIs when known (``lge_`` contours, or the
   truth of the matched LGE slice, resampled onto the T1 grid like the image; else the T1 ROIs).
   Patients move between the scans by a few mm, so one set of ROIs for both images would put blood
   or lesion of the LGE into the wrong ROI.
   The myocardium ROIs lose their partial-volume rim (``margin_mm``, default
   :data:`quantify.BORDER_MARGIN_MM`; :func:`quantify.inner_myocardium`).
4. Lesion burden (:mod:`vne_inline.quantify`) for every :data:`READINGS` entry: LGE at 50/25/12.5 %,
   VNE at the same fractions and at the paper's adjusted 35/20/10 %; quality scores per image.

A T1 slice lacking any of VNE, matched LGE or ROIs is left out with a one-line reason.

5. LGE image quality, as a reader grades it before quantifying: a slice whose LGE is non-diagnostic
   (the contours' ``lge_nondiagnostic.txt``, or a synthetic exam's recorded artefacts in
   :mod:`vne_inline.io.lge_grading`) is evaluated but marked; :meth:`Evaluation.diagnostic` keeps
   it out of the primary analysis, and the report gives the analysis with it as well.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vne_inline.adapters.exam_files import classified_records, is_exam_dir
from vne_inline.adapters.replay import replay_scans
from vne_inline.adapters.scans import Scan, read_scans
from vne_inline.core.match import NoMatch, match_onto, resample_onto
from vne_inline.core.pipeline import CoreConfig, InlineCore
from vne_inline.core.roles import Role, classify
from vne_inline.core.slices import LgeSlice, T1Slice, lge_slices, same_plane, t1_slices
from vne_inline.io.lge_grading import read_nondiagnostic, recorded_nondiagnostic
from vne_inline.io.records import ImageRecord
from vne_inline.quantify import (
    BORDER_MARGIN_MM,
    LGE_FRACTIONS,
    VNE_ADJUSTED_FRACTIONS,
    SliceBurden,
    burdens,
    dice,
    inner_myocardium,
    lesion_mask,
    patient_burden,
)
from vne_inline.synth.truth import SliceMasks, read_lge_truth, read_truth
from vne_inline.validate.contours import SliceRois, read_contours
from vne_inline.validate.quality import cnr, edge_width, fidelity

__all__ = [
    "READINGS", "THRESHOLDS", "Evaluation", "PatientResult", "Reading", "SliceResult", "Truth",
    "evaluate_exams", "evaluate_patient", "exam_series", "patient_dirs",
]

#: Threshold names (FWHM, FWQM, FWEM), shared by every reading.
THRESHOLDS: tuple[str, ...] = tuple(LGE_FRACTIONS)


@dataclass(frozen=True)
class Reading:
    """A way to read lesion burden: which image ("vne" or "lge", whose ROIs it uses) and which
    threshold fractions."""

    name: str
    image: str
    fractions: Mapping[str, float]


READINGS: tuple[Reading, ...] = (
    Reading("LGE", "lge", LGE_FRACTIONS),
    Reading("VNE", "vne", LGE_FRACTIONS),
    Reading("VNE adjusted", "vne", VNE_ADJUSTED_FRACTIONS),
)


@dataclass(frozen=True)
class Truth:
    """Ground truth on a T1 slice's grid: the lesion mask (any grade) and the artefact-free LGE."""

    lesion: np.ndarray
    lge: np.ndarray


@dataclass
class SliceResult:
    """One evaluated T1 slice: images on the T1 grid (y, x), ROIs (the T1 slice's, and the LGE's own
    when known), truth, the LGE's quality grade and burdens by reading. `pixel_spacing_mm` is the T1
    grid's (dx, dy) in mm, as :attr:`SliceGeometry.pixel_spacing` (None: square pixels of `pixel_area_mm2`)."""

    slice: int
    pixel_area_mm2: float
    t1_ms: np.ndarray
    vne: np.ndarray
    lge: np.ndarray
    rois: SliceRois
    truth: Truth | None = None
    lge_rois: SliceRois | None = None
    lge_nondiagnostic: str | None = None  # why the LGE is graded non-diagnostic; None: diagnostic
    qc: str | None = None  # the VNE's input-domain check (VNE_QC: pass, warn, fail); None: not recorded
    burdens: dict[str, dict[str, SliceBurden]] = field(default_factory=dict)
    pixel_spacing_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.pixel_spacing_mm is None:
            side = math.sqrt(self.pixel_area_mm2)
            self.pixel_spacing_mm = (side, side)
        if not self.burdens:
            self.burdens = {}
            for r in READINGS:
                rois = self.rois_for(r.image)
                self.burdens[r.name] = burdens(getattr(self, r.image), rois.myo, rois.remote, rois.blood,
                                               r.fractions, self.pixel_area_mm2)

    def rois_for(self, image: str) -> SliceRois:
        """The ROIs `image` ("vne" or "lge") is read with: the LGE's own for LGE when known, else the T1 slice's."""
        return self.lge_rois if image == "lge" and self.lge_rois is not None else self.rois

    def lesion(self, reading: Reading, threshold: str) -> np.ndarray:
        """The lesion mask of `reading` at `threshold`."""
        r = self.rois_for(reading.image)
        return lesion_mask(getattr(self, reading.image), r.myo, r.remote, r.blood, reading.fractions[threshold])

    def quality(self, score: str, image: str) -> float:
        """Quality `score` (a :data:`QUALITY_SCORES` name) of `image` ("vne" or "lge"); NaN when undefined."""
        data = getattr(self, image)
        rois = self.rois_for(image)
        if score == "cnr":
            return cnr(data, rois.remote, rois.blood)
        if score == "edge_width":
            return edge_width(data, rois.myo, rois.remote, rois.blood, self.pixel_spacing_mm)
        if self.truth is None:
            return math.nan
        return fidelity(data, self.truth.lge, self.rois.myo | self.rois.blood)


@dataclass
class PatientResult:
    """The evaluated slices of one patient (named by its directory) and the slices left out, with why."""

    name: str
    slices: list[SliceResult]
    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files of the folder that are not the exam's series, and why

    def burden(self, reading: str, threshold: str) -> float:
        """Patient lesion burden in %: lesion areas / myocardial areas summed over slices."""
        return patient_burden([s.burdens[reading][threshold] for s in self.slices])

    @property
    def has_truth(self) -> bool:
        return all(s.truth is not None for s in self.slices)

    @property
    def truth_positive(self) -> bool:
        """True when the truth holds lesion pixels inside the evaluated myocardium (needs truth)."""
        return any((s.truth.lesion & s.rois.myo).any() for s in self.slices if s.truth is not None)

    def dice(self, reading: Reading, threshold: str, reference: Reading | None = None) -> float:
        """Dice of the lesion masks over all slices against the truth (or against `reference`)."""
        mine = [s.lesion(reading, threshold) for s in self.slices]
        if reference is None:
            ref = [s.truth.lesion & s.rois.myo for s in self.slices]
        else:
            ref = [s.lesion(reference, threshold) for s in self.slices]
        return dice(np.concatenate([m.ravel() for m in mine]), np.concatenate([m.ravel() for m in ref]))

    def quality(self, score: str, image: str) -> float:
        """Mean of the slices' finite scores (NaN when none is finite)."""
        values = [v for s in self.slices if math.isfinite(v := s.quality(score, image))]
        return float(np.mean(values)) if values else math.nan

    @property
    def nondiagnostic(self) -> list[SliceResult]:
        """The slices whose LGE is graded non-diagnostic."""
        return [s for s in self.slices if s.lge_nondiagnostic is not None]

    @property
    def nondiagnostic_reasons(self) -> str:
        """The distinct reasons of the non-diagnostic grades, "; "-joined ("" when there are none)."""
        return "; ".join(sorted({s.lge_nondiagnostic for s in self.nondiagnostic}))


@dataclass
class Evaluation:
    """Everything the report needs: where the data and ROIs came from, the model, the patients."""

    exams: str
    rois: str
    model: str
    patients: list[PatientResult]
    skipped: list[str] = field(default_factory=list)
    margin_mm: float = BORDER_MARGIN_MM
    ignored: list[str] = field(default_factory=list)  # files in patient folders that are not the exam's series

    def qc_counts(self) -> dict[str, int]:
        """How many evaluated slices' VNE the input-domain check rated pass, warn, fail (or not recorded)."""
        counts: dict[str, int] = {}
        for p in self.patients:
            for s in p.slices:
                counts[s.qc or "not recorded"] = counts.get(s.qc or "not recorded", 0) + 1
        return counts

    @property
    def n_nondiagnostic(self) -> int:
        """How many evaluated slices have an LGE graded non-diagnostic."""
        return sum(len(p.nondiagnostic) for p in self.patients)

    def diagnostic(self) -> Evaluation:
        """The primary analysis set: only slices whose LGE is diagnostic. The others are listed as left
        out of their patient; a patient left with no slice is listed in `skipped`."""
        patients, skipped = [], list(self.skipped)
        for p in self.patients:
            bad = p.nondiagnostic
            kept = [s for s in p.slices if s.lge_nondiagnostic is None]
            if not bad:
                patients.append(p)
            elif kept:
                notes = [f"T1 slice {s.slice}: left out of the primary analysis (LGE non-diagnostic: "
                         f"{s.lge_nondiagnostic})" for s in bad]
                patients.append(replace(p, slices=kept, skipped=p.skipped + notes))
            else:
                skipped.append(f"{p.name}: left out of the primary analysis (LGE non-diagnostic on every slice: "
                               f"{p.nondiagnostic_reasons})")
        return replace(self, patients=patients, skipped=skipped)


# ---------------------------------------------------------------------------------------- reading
def patient_dirs(exams: Path) -> list[Path]:
    """Sub-directories of `exams` holding ISMRMRD files or DICOM files, sorted by name."""
    return sorted(p for p in Path(exams).iterdir() if is_exam_dir(p))


def _roles(records: list[tuple[Role, ImageRecord]]) -> set[Role]:
    return {role for role, _ in records}


def exam_series(files: list[tuple[Scan, list[tuple[Role, ImageRecord]]]]):
    """The scans (files or DICOM series) that hold the exam's own series, and one line per scan left out: one holding VNE
    images is an output of this product (a replay saved in the folder), and a file repeating series of
    an earlier file (by name) is a copy; either would count slices twice."""
    kept, ignored, owner = [], [], {}
    for scan, records in files:
        series = sorted({r.series_index for _, r in records})
        if Role.VNE in _roles(records):
            ignored.append(f"{scan.name}: holds VNE images (an output, not part of the exam)")
        elif repeated := [s for s in series if s in owner]:
            ignored.append(f"{scan.name}: repeats series {', '.join(map(str, repeated))} of {owner[repeated[0]]}")
        else:
            owner.update({s: scan.name for s in series})
            kept.append((scan, records))
    return kept, ignored


def _vne(core: InlineCore, scans: list[Scan]) -> tuple[list[ImageRecord], dict[int, str]]:
    """Replay `scans` in order, one connection each: the VNE images made and, by T1 slice index, why
    a slice got none (the core's last word on it)."""
    results = replay_scans(core, scans)
    made = [o for r in results for o in r.outputs if classify(o, core.config.rules) is Role.VNE]
    return made, {rep.slice: rep.reason for r in results for rep in r.reports if not rep.made}


def _rois_or_reason(myo: np.ndarray, remote: np.ndarray, blood: np.ndarray) -> SliceRois | str:
    try:
        return SliceRois(myo, remote, blood)
    except ValueError as exc:
        return f"truth ROIs unusable: {exc}"


def _truth(directory: Path) -> tuple[dict[int, tuple[SliceRois | str, Truth, str | None]], list[SliceMasks]]:
    """By T1 slice index: ROIs (or why a slice has none usable), truth and why the LGE is non-diagnostic
    (None: diagnostic); and the LGE slices' truth masks; from ``truth.h5``."""
    path = directory / "truth.h5"
    if not path.exists():
        return {}, []
    t1 = {t.slice: (_rois_or_reason(t.myocardium, t.remote, t.blood), Truth(t.lesion, t.lge_true.astype(np.float32)),
                    recorded_nondiagnostic(t.attrs))
          for t in read_truth(path)}
    return t1, read_lge_truth(path)


def _masks_on(t1: T1Slice, source: LgeSlice, truth: list[SliceMasks]) -> SliceRois | None:
    """The truth ROIs of LGE slice `source` resampled onto the T1 grid like its image (None when unknown)."""
    found = [t for t in truth if same_plane(t.geometry, source.geometry)]
    if not found:
        return None
    t = found[0]
    resampled = resample_onto(t1.geometry, np.stack([t.myocardium, t.remote, t.blood]).astype(np.float32),
                              source.geometry)
    myo, remote, blood = (resampled.data >= 0.5) & ~resampled.outside
    try:
        return SliceRois(myo, remote, blood)
    except ValueError as exc:
        raise ValueError(f"LGE truth ROIs unusable: {exc}") from exc


def _lge_on(t1: T1Slice, lge: list[LgeSlice], core: InlineCore, truth: list[SliceMasks]) -> tuple[np.ndarray, SliceRois | None]:
    """The matching LGE slice on the T1 grid (NaN outside its coverage) and its truth ROIs there
    (None without LGE truth); ValueError when there is no matching slice."""
    matched = match_onto(t1.geometry, [(i, s.geometry) for i, s in enumerate(lge)], lambda i: lge[i].image,
                         core.config.criteria)
    if isinstance(matched, NoMatch):
        raise ValueError(f"no LGE match: {matched.reason}")
    image = np.where(matched.resampled.outside, np.nan, matched.resampled.data).astype(np.float32)
    return image, _masks_on(t1, lge[matched.match.key], truth)


def _inner(rois: SliceRois, spacing: tuple[float, float], margin_mm: float) -> SliceRois:
    """`rois` with the myocardium's partial-volume rim (`margin_mm` deep) left out."""
    return replace(rois, myo=inner_myocardium(rois.myo, spacing, margin_mm))


def evaluate_patient(
    directory: Path, core: InlineCore, contours: Path | None = None, margin_mm: float = BORDER_MARGIN_MM,
    without_cine: bool = False,
) -> PatientResult:
    """Run VNE for one patient directory and quantify every T1 slice that has VNE, LGE and ROIs;
    `without_cine`: the cine files are not sent (the VNE-without-cine reading; the core must have
    ``vne_without_cine`` set).

    Only the exam's own series are read (:func:`exam_series`). Raises ValueError when the directory lacks
    cine, T1 mapping (map and IR images) or LGE, or a file cannot be read.
    """
    directory = Path(directory)
    files, ignored = exam_series([(scan, classified_records(scan, core.config.rules))
                                  for scan in read_scans(directory, core.config.rules)])
    present = set().union(*(_roles(recs) for _, recs in files))
    missing = sorted(r.value for r in {Role.CINE, Role.IR, Role.T1MAP, Role.LGE} - present)
    if missing:
        raise ValueError(f"no {', '.join(missing)} images")
    wanted = [f for f in files if _roles(f[1]) & {Role.CINE, Role.IR, Role.T1MAP}
              and not (without_cine and Role.CINE in _roles(f[1]))]
    cine_first = sorted(wanted, key=lambda f: Role.CINE not in _roles(f[1]))
    vnes, reasons = _vne(core, [scan for scan, _ in cine_first])
    by_role = {role: [r for _, recs in files for rl, r in recs if rl is role] for role in Role}
    truth, lge_truth = _truth(directory)
    if contours is not None:
        rois, lge_rois = read_contours(contours, directory.name), read_contours(contours, directory.name, "lge")
        nondiagnostic = read_nondiagnostic(contours, directory.name)
    else:
        rois, lge_rois = {k: v[0] for k, v in truth.items()}, {}
        nondiagnostic = {k: v[2] for k, v in truth.items() if v[2] is not None}
    lge = lge_slices(by_role[Role.LGE])
    result = PatientResult(directory.name, [], ignored=ignored)
    for t1 in t1_slices(by_role[Role.T1MAP], by_role[Role.IR]):
        vne = [v for v in vnes if same_plane(v.geometry, t1.geometry)]
        try:
            if not vne:
                raise ValueError(f"no VNE: {reasons.get(t1.slice, 'not made')}")
            if t1.slice not in rois:
                raise ValueError("no ROIs (contours or truth)")
            if isinstance(rois[t1.slice], str):
                raise ValueError(rois[t1.slice])
            if rois[t1.slice].shape != t1.geometry.shape:
                raise ValueError(f"ROIs of shape {rois[t1.slice].shape}, T1 map {t1.geometry.shape}")
            spacing = t1.geometry.pixel_spacing
            image, lge_truth_rois = _lge_on(t1, lge, core, lge_truth)
            own = lge_rois.get(t1.slice, lge_truth_rois)
            result.slices.append(SliceResult(
                slice=t1.slice, pixel_area_mm2=spacing[0] * spacing[1], t1_ms=t1.t1_ms,
                vne=vne[-1].pixels.astype(np.float32), lge=image, rois=_inner(rois[t1.slice], spacing, margin_mm),
                truth=truth[t1.slice][1] if t1.slice in truth else None,
                lge_rois=_inner(own, spacing, margin_mm) if own is not None else None,
                lge_nondiagnostic=nondiagnostic.get(t1.slice), pixel_spacing_mm=spacing,
                qc=vne[-1].meta_str("VNE_QC"),
            ))
        except ValueError as exc:
            result.skipped.append(f"T1 slice {t1.slice}: left out ({exc})")
    return result


def evaluate_exams(
    exams: Path,
    backend,
    contours: Path | None = None,
    config: CoreConfig | None = None,
    progress: Callable[[str], None] = lambda line: None,
    margin_mm: float = BORDER_MARGIN_MM,
    without_cine: bool = False,
) -> Evaluation:
    """Evaluate every patient directory of `exams` with `backend` (an inference backend object).

    The inline core runs with `config` (default settings) but a fresh temporary store, so earlier
    runs never suppress a VNE, and with ``qc_withhold=never`` so that a VNE the input-domain check
    flags is still measured (its verdict is kept per slice). `progress` receives one line per patient
    (directory name only).
    `without_cine`: the VNE-without-cine reading (IR images and T1 map only; see :func:`evaluate_patient`).
    """
    config = replace(config or CoreConfig(), qc_withhold="never", vne_without_cine=without_cine)
    model = f"{backend.config.name} ({backend.config.trained_on}-trained), backend {backend.name}"
    if without_cine:
        model += "; VNE without cine (IR images and T1 map only)"
    if backend.config.trained_on == "synthetic":
        model += "; weights trained on synthetic data are a demonstration, not for clinical use"
    out = Evaluation(
        exams=Path(exams).name,
        rois=f"contours ({Path(contours).name}/)" if contours is not None else "synthetic truth (truth.h5)",
        model=model,
        patients=[],
        margin_mm=margin_mm,
    )
    with tempfile.TemporaryDirectory(prefix="vne-evaluate-") as store:
        core = InlineCore(replace(config, store_dir=Path(store)), backend=backend)
        for directory in patient_dirs(exams):
            try:
                patient = evaluate_patient(directory, core, contours, margin_mm, without_cine)
            except ValueError as exc:
                out.skipped.append(f"{directory.name}: {exc}")
                progress(out.skipped[-1])
                continue
            except (OSError, KeyError) as exc:  # a damaged or half-written file (truth, contours): skip the exam
                out.skipped.append(f"{directory.name}: damaged or incomplete exam ({type(exc).__name__}: {exc})")
                progress(out.skipped[-1])
                continue
            out.ignored += [f"{directory.name}/{line}" for line in patient.ignored]
            for line in patient.ignored:
                progress(f"{directory.name}/{line}: ignored")
            if patient.slices:
                out.patients.append(patient)
            else:
                out.skipped.append(f"{directory.name}: no slice evaluated ({'; '.join(patient.skipped)})")
            progress(f"{directory.name}: {len(patient.slices)} slice(s) evaluated, {len(patient.skipped)} left out")
    return out
