"""`vne-inline evaluate` end to end with a fake backend (no model file needed).

1. Three tiny hand-built exams with contour files (known answers). Each exam: cine (2 slices, 8 phases), T1 mapping (2 slices: map + 5 IR images) and PSIR LGE
(2 slices), on three different grids, as files in one patient folder. The anatomy is a ring of LV
myocardium around a blood pool with a lesion sector in two patients. The fake backend makes an
LGE-like image from the T1 input alone (blood bright, myocardium dark, lesion in between), so every
burden is known: VNE sees exactly the lesion sector; LGE also, except in patient_003 whose LGE has
a wrong inversion time (remote myocardium not nulled) and shows a false-positive rim.

2. Three synthetic exams (`vne_inline.synth`) with their truth.h5: ROIs, lesion and true LGE from the
truth; the numbers must be consistent between the objects, the summary and the CSV tables.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vne_inline.geometry import SliceGeometry, plane_from_normal
from vne_inline.io import ExamHeader, ImageRecord, make_header_xml
from vne_inline.io.mrd_file import write_file
from vne_inline.modelspec import ModelConfig
from vne_inline.quantify import LGE_FRACTIONS
from vne_inline.validate.evaluate import READINGS, THRESHOLDS, evaluate_exams
from vne_inline.validate.report import write_report
from vne_inline.validate.summary import summarise

pytest.importorskip("pingouin")  # the summary's ICC

NORMAL = np.array([0.2, -0.5, 0.84])
CENTRE = np.array([10.0, -20.0, 30.0])
SLICE_OFFSETS_MM = (0.0, 10.0)
TIS = (100.0, 180.0, 260.0, 1100.0, 2100.0)
R_BLOOD, R_MYO = 14.0, 24.0  # mm
T1_MS = {"blood": 1500.0, "myo": 960.0, "lesion": 1380.0, "outside": 400.0}
# lesion sector half-angle (degrees; 0 = no lesion); patient_003's LGE has a wrong TI
PATIENTS = {"patient_001": 40.0, "patient_002": 70.0, "patient_003": 0.0}


def _geometry(offset: float, fov: float, n: int, rotation: float) -> SliceGeometry:
    unit = NORMAL / np.linalg.norm(NORMAL)
    return plane_from_normal(CENTRE + offset * unit, NORMAL, (fov, fov, 8.0), (n, n), rotation)


def _polar(g: SliceGeometry) -> tuple[np.ndarray, np.ndarray]:
    d = g.pixel_centres() - g.position
    x, y = d @ g.read_dir, d @ g.phase_dir
    # anatomy fixed in the patient: angle measured in a plane frame that does not rotate with the grid
    ref = _geometry(0.0, 100.0, 10, 0.0)
    return np.hypot(x, y), np.degrees(np.arctan2(d @ ref.phase_dir, d @ ref.read_dir))


def tissue(g: SliceGeometry, half_angle: float) -> dict[str, np.ndarray]:
    r, angle = _polar(g)
    blood, ring = r < R_BLOOD, (r >= R_BLOOD) & (r < R_MYO)
    lesion = ring & (np.abs(angle) < half_angle)
    return {"blood": blood, "myo": ring, "lesion": lesion, "remote": ring & (np.abs(angle - 180.0) < 45.0)}


def t1_map(g: SliceGeometry, half_angle: float) -> np.ndarray:
    t = tissue(g, half_angle)
    out = np.full(g.shape, T1_MS["outside"], np.float32)
    out[t["blood"]], out[t["myo"]], out[t["lesion"]] = T1_MS["blood"], T1_MS["myo"], T1_MS["lesion"]
    return out


@dataclass
class T1Backend:
    """LGE-like image from the normalised T1 input: (T1 - 1000 ms) / 500 ms, so blood 1, myo 0, lesion 0.76,
    plus a fixed +/-0.01 ripple (image texture, so that a contrast-to-noise ratio exists)."""

    config: ModelConfig = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, name="t1-threshold")
    name: str = "fake"
    detail: str = "T1-threshold stand-in for tests"

    def run(self, batch):
        y, x = np.indices(batch["t1"].shape[-2:])
        return np.clip((batch["t1"] - 1.0) / 0.5 + 0.01 * np.sin(0.7 * x + 0.3 * y), 0.0, None).astype(np.float32)


def write_exam(folder: Path, contours: Path, half_angle: float, wrong_ti: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    exam = ExamHeader(study_uid=f"2.25.{seed}77{seed}")
    cine, t1, lge = [], [], []
    for s, off in enumerate(SLICE_OFFSETS_MM):
        g = _geometry(off + 0.5, 120.0, 48, 5.0)
        t = tissue(g, half_angle)
        for p in range(8):
            img = np.where(t["blood"], 900.0, np.where(t["myo"], 300.0, 150.0)) + 10 * p
            cine.append(ImageRecord.new(img.astype(np.uint16), g, {"GADGETRON_DataRole": "Image"},
                                        image_series_index=1, slice=s, phase=p))
        g = _geometry(off, 100.0, 64, 0.0)
        m = t1_map(g, half_angle)
        for k, ti in enumerate(TIS):
            ir = np.abs(1 - 2 * np.exp(-ti / m)) * 1000
            t1.append(ImageRecord.new(ir.astype(np.uint16), g, {"GADGETRON_TI": f"{ti:g}"},
                                      image_series_index=2, slice=s, set=k))
        t1.append(ImageRecord.new(m, g, {"GADGETRON_DataRole": "T1"}, image_series_index=3, slice=s))
        t = tissue(g, half_angle)
        np.savez(contours / f"slice_{s}.npz", myo=t["myo"], remote=t["remote"], blood=t["blood"])
        g = _geometry(off - 1.0, 110.0, 80, -7.0)
        t = tissue(g, half_angle)
        remote = 450.0 if wrong_ti else 0.0
        psir = np.where(t["blood"], 1000.0, np.where(t["lesion"], 760.0, np.where(t["myo"], remote, -300.0)))
        psir += rng.normal(0.0, 20.0, g.shape)
        lge.append(ImageRecord.new(psir.astype(np.float32), g, {"GADGETRON_DataRole": "PSIR"},
                                   image_series_index=4, slice=s, image_type=2))  # IMTYPE_REAL
    for name, records, phases, sets in (("cine", cine, 8, 1), ("t1map", t1, 1, len(TIS)), ("lge", lge, 1, 1)):
        header = make_header_xml(exam, f"SYNTH-{seed}", (64, 64), (100.0, 100.0, 8.0), n_slices=2,
                                 n_phases=phases, n_sets=sets)
        write_file(folder / f"{name}.h5", header, records)


@pytest.fixture(scope="module")
def exams(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    for seed, (name, half_angle) in enumerate(PATIENTS.items(), start=1):
        wrong_ti = name == "patient_003"
        (root / "exams" / name).mkdir(parents=True)
        (root / "contours" / name).mkdir(parents=True)
        write_exam(root / "exams" / name, root / "contours" / name, half_angle, wrong_ti, seed)
    (root / "exams" / "patient_004").mkdir()  # no files at all: not a patient folder
    write_file(root / "exams" / "patient_005" / "t1map.h5", None,
               [ImageRecord.new(np.ones((4, 4), np.float32), _geometry(0, 40, 4, 0), {"GADGETRON_DataRole": "T1"},
                                image_series_index=3)])
    return root / "exams", root / "contours"


@pytest.fixture(scope="module")
def evaluation(exams):
    return evaluate_exams(exams[0], T1Backend(), exams[1], margin_mm=0.0)  # whole ring: known answers


def test_every_complete_patient_is_evaluated(evaluation) -> None:
    assert [p.name for p in evaluation.patients] == ["patient_001", "patient_002", "patient_003"]
    assert evaluation.skipped == ["patient_005: no cine, ir, lge images"]
    assert all(len(p.slices) == 2 and not p.skipped for p in evaluation.patients)
    assert evaluation.model.startswith("t1-threshold (synthetic-trained), backend fake")
    assert evaluation.rois.startswith("contours")


def test_burdens_are_the_known_lesion_sizes(evaluation) -> None:
    for p in evaluation.patients:
        truth = [tissue(_geometry(o, 100.0, 64, 0.0), PATIENTS[p.name]) for o in SLICE_OFFSETS_MM]
        true_percent = 100.0 * sum(t["lesion"].sum() for t in truth) / sum(t["myo"].sum() for t in truth)
        for reading in ("VNE", "VNE adjusted"):
            for threshold in ("FWHM", "FWQM", "FWEM"):
                assert p.burden(reading, threshold) == pytest.approx(true_percent), (p.name, reading, threshold)
        # LGE resampled from another grid: the lesion edge is blurred, so only close at FWHM
        if p.name != "patient_003":
            assert p.burden("LGE", "FWHM") == pytest.approx(true_percent, abs=4.0)
    # wrong TI: remote myocardium at 0.45 of blood; partial volume at the blood border crosses the lower thresholds
    wrong_ti = evaluation.patients[2]
    assert wrong_ti.burden("LGE", "FWHM") < 0.5 < 2.0 < wrong_ti.burden("LGE", "FWEM")


def test_margin_leaves_out_the_partial_volume_rim(exams) -> None:
    from vne_inline.quantify import inner_myocardium

    evaluation = evaluate_exams(exams[0], T1Backend(), exams[1], margin_mm=2.0)
    assert evaluation.margin_mm == 2.0
    for p in evaluation.patients:
        truth = [tissue(_geometry(o, 100.0, 64, 0.0), PATIENTS[p.name]) for o in SLICE_OFFSETS_MM]
        inner = [inner_myocardium(t["myo"], (100.0 / 64, 100.0 / 64), 2.0) for t in truth]
        assert all(0 < i.sum() < t["myo"].sum() for i, t in zip(inner, truth, strict=True))
        true_percent = 100.0 * sum((t["lesion"] & i).sum() for t, i in zip(truth, inner, strict=True)) / sum(
            i.sum() for i in inner)
        assert p.burden("VNE", "FWHM") == pytest.approx(true_percent)
        assert sum(s.burdens["VNE"]["FWHM"].myo_area_px for s in p.slices) == sum(i.sum() for i in inner)


def test_lge_is_read_with_its_own_contours(exams, tmp_path) -> None:
    """LGE contours that leave the lesion sector out of the myocardium: LGE burden 0, VNE unchanged."""
    import shutil

    contours = tmp_path / "contours"
    shutil.copytree(exams[1], contours)
    for s in (0, 1):
        path = contours / "patient_002" / f"slice_{s}.npz"
        with np.load(path) as f:
            masks = dict(f)
        lesion = tissue(_geometry(SLICE_OFFSETS_MM[s], 100.0, 64, 0.0), PATIENTS["patient_002"])["lesion"]
        np.savez(path, **masks, lge_myo=masks["myo"] & ~lesion, lge_remote=masks["remote"], lge_blood=masks["blood"])
    before = evaluate_exams(exams[0], T1Backend(), exams[1], margin_mm=0.0).patients[1]
    after = evaluate_exams(exams[0], T1Backend(), contours, margin_mm=0.0).patients[1]
    assert after.name == "patient_002" and before.burden("LGE", "FWHM") > 10
    assert after.burden("LGE", "FWHM") < 0.5
    assert after.burden("VNE", "FWHM") == before.burden("VNE", "FWHM")
    assert all(s.lge_rois is not None and s.rois_for("vne") is s.rois for s in after.slices)


def test_summary_counts_false_positives_and_dice_against_lge(evaluation) -> None:
    summary = summarise(evaluation)
    assert summary.reference == "LGE"  # contours, no truth
    fwhm = summary.agreement("VNE", "FWHM")
    assert fwhm.stats.n == 3 and fwhm.stats.pearson.r > 0.95
    assert fwhm.stats.bland_altman.bias == pytest.approx(float(np.mean(fwhm.vne - fwhm.lge)))
    assert list(fwhm.vne) == [p.burden("VNE", "FWHM") for p in evaluation.patients]
    assert summary.agreement("VNE", "FWHM", "slice").stats.n == 6
    fp = {(r.reading, r.threshold): r for r in summary.false_positives}
    assert fp[("VNE", "FWHM")].negatives == 1 and fp[("VNE", "FWHM")].patients == []
    dice = {(d.reading, d.threshold): d for d in summary.dice}
    assert dice[("VNE", "FWHM")].values.size == 2 and dice[("VNE", "FWHM")].mean > 0.8
    quality = {q.score: q for q in summary.quality}
    assert set(quality) == {"cnr", "edge_width"} and quality["cnr"].test.n == 3  # no truth: no fidelity score


def test_edge_width_vne_vs_lge(evaluation, tmp_path) -> None:
    """The fake VNE is a step on the T1 grid; the LGE, a step on its own 1.375 mm grid resampled
    bilinearly onto the T1 grid, is blurred by that interpolation: its border is wider."""
    for p in evaluation.patients:
        for s in p.slices:
            assert s.pixel_spacing_mm == pytest.approx((100.0 / 64, 100.0 / 64))
            vne, lge = s.quality("edge_width", "vne"), s.quality("edge_width", "lge")
            assert 0.0 < vne < lge < 2.5, (p.name, s.slice, vne, lge)
    row = next(q for q in summarise(evaluation).quality if q.score == "edge_width")
    assert row.test.n == 3 and np.all(row.vne < row.lge)
    text = write_report(evaluation, tmp_path / "report", examples=0).read_text()
    assert "| edge_width | 3 |" in text and "10-90 % edge width (mm)" in text and "smaller is sharper" in text


def test_report_files(evaluation, tmp_path) -> None:
    report = write_report(evaluation, tmp_path / "report", examples=2)
    text = report.read_text()
    assert "n = 3 patients" in text and "ICC(2,1)" in text and "t1-threshold" in text
    for name in ("agreement_vne.png", "agreement_vne_adjusted.png", "burden_per_patient.csv", "burden_per_slice.csv"):
        assert f"({name})" in text and (tmp_path / "report" / name).stat().st_size > 0
    montages = sorted(p.name for p in (tmp_path / "report").glob("montage_*.png"))
    assert len(montages) == 2 and all(f"({m})" in text for m in montages)
    with (tmp_path / "report" / "burden_per_patient.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["patient"] for r in rows] == ["patient_001", "patient_002", "patient_003"]
    assert float(rows[0]["VNE FWHM (%)"]) == pytest.approx(evaluation.patients[0].burden("VNE", "FWHM"), abs=1e-3)
    assert "SYNTH-" not in text  # no patient IDs from the headers


def test_cli_evaluate(exams, tmp_path, monkeypatch) -> None:
    from vne_inline.cli import app, evaluate_cmds  # noqa: F401  (evaluate_cmds registers `evaluate`)

    monkeypatch.setattr("vne_inline.infer.load_backend", lambda name, model, threads: T1Backend())
    result = CliRunner().invoke(app, ["evaluate", "--exams", str(exams[0]), "--out", str(tmp_path / "r"),
                                      "--contours", str(exams[1]), "--examples", "1"])
    assert result.exit_code == 0, result.output
    assert "3 patients evaluated, 3 in the primary analysis (0 slice(s) with non-diagnostic LGE left out)" in result.output
    assert (tmp_path / "r" / "report.md").exists()


def test_nondiagnostic_lge_is_left_out_of_the_primary_analysis(exams, evaluation, tmp_path) -> None:
    """The reader grades patient_001's LGE non-diagnostic on both slices and patient_002's on slice 1."""
    import shutil

    contours = tmp_path / "contours"
    shutil.copytree(exams[1], contours)
    (contours / "patient_001" / "lge_nondiagnostic.txt").write_text("0 ghosts\n1 ghosts\n")
    (contours / "patient_002" / "lge_nondiagnostic.txt").write_text("1\n")
    graded = evaluate_exams(exams[0], T1Backend(), contours, margin_mm=0.0)
    assert [(p.name, [s.lge_nondiagnostic for s in p.slices]) for p in graded.patients] == [
        ("patient_001", ["ghosts", "ghosts"]),
        ("patient_002", [None, "marked non-diagnostic by the reader"]),
        ("patient_003", [None, None]),
    ]
    # grading changes no burden; the primary analysis drops the graded slices
    for before, after in zip(evaluation.patients, graded.patients, strict=True):
        assert after.burden("LGE", "FWHM") == before.burden("LGE", "FWHM")
    primary = graded.diagnostic()
    assert [p.name for p in primary.patients] == ["patient_002", "patient_003"]
    assert primary.skipped[-1] == ("patient_001: left out of the primary analysis "
                                   "(LGE non-diagnostic on every slice: ghosts)")
    p2 = primary.patients[0]
    assert [s.slice for s in p2.slices] == [0] and p2.skipped == [
        "T1 slice 1: left out of the primary analysis (LGE non-diagnostic: marked non-diagnostic by the reader)"]
    assert p2.burden("VNE", "FWHM") == pytest.approx(p2.slices[0].burdens["VNE"]["FWHM"].burden_percent)
    assert summarise(primary).agreement("VNE", "FWHM").stats.n == 2
    assert graded.patients[1].slices[1].lge_nondiagnostic is not None  # the full evaluation is untouched

    text = write_report(graded, tmp_path / "report", examples=1).read_text()
    assert "**n = 2 patients**, 3 T1-map slices in the primary analysis (3 patients and 6 slices evaluated" in text
    assert "## Sensitivity analysis: every slice, non-diagnostic LGE included" in text
    assert "patient_001 (2 of 2 slices); patient_002 (1 of 2 slices)" in text
    sensitivity = text.split("## Sensitivity analysis")[1].split("##")[0]
    assert "| VNE | FWHM | 3 |" in sensitivity
    with (tmp_path / "report" / "burden_per_slice.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and [r["lge_nondiagnostic"] for r in rows[:3]] == ["ghosts", "ghosts", ""]
    assert "Sensitivity" not in write_report(evaluation, tmp_path / "plain", examples=0).read_text()


# ---------------------------------------------------------------------------------------- synthetic exams
#: Data set 0 of the generator: patients 2 and 4 have no lesion (2 has LGE artefacts), 9 has lesions.
SYNTH_PATIENTS = (2, 4, 9)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from vne_inline.synth.exam import generate_patient

    root = tmp_path_factory.mktemp("synthetic")
    for index in SYNTH_PATIENTS:
        generate_patient(root / "exams", seed=0, index=index)
    evaluation = evaluate_exams(root / "exams", T1Backend())
    return evaluation, write_report(evaluation, root / "report", examples=1)


def test_an_unusable_truth_roi_leaves_out_only_its_slice(synthetic, tmp_path) -> None:
    import shutil

    import h5py

    evaluation, report = synthetic
    source = report.parent.parent / "exams" / "patient_009"
    shutil.copytree(source, tmp_path / "exams" / "patient_009")
    with h5py.File(tmp_path / "exams" / "patient_009" / "truth.h5", "r+") as f:
        f["slice_01/blood"][...] = 0
    damaged = evaluate_exams(tmp_path / "exams", T1Backend())
    (patient,) = damaged.patients
    assert [s.slice for s in patient.slices] == [0, 2]
    assert patient.skipped == ["T1 slice 1: left out (truth ROIs unusable: blood mask is empty)"]
    whole = next(p for p in evaluation.patients if p.name == "patient_009")
    assert patient.slices[0].burdens["LGE"]["FWHM"] == whole.slices[0].burdens["LGE"]["FWHM"]


def test_synthetic_exams_use_their_truth(synthetic) -> None:
    evaluation, _ = synthetic
    assert evaluation.rois == "synthetic truth (truth.h5)" and not evaluation.skipped
    assert [p.name for p in evaluation.patients] == [f"patient_{i:03d}" for i in SYNTH_PATIENTS]
    for p in evaluation.patients:
        assert p.has_truth and p.slices and not p.skipped
        for s in p.slices:
            assert s.vne.shape == s.lge.shape == s.t1_ms.shape == s.rois.shape == s.truth.lesion.shape
            assert s.lge_rois is not None and s.lge_rois.shape == s.rois.shape  # the LGE slice's own truth
            assert np.isfinite(s.quality("fidelity", "vne")) and np.isfinite(s.quality("fidelity", "lge"))
    positive = [p.truth_positive for p in evaluation.patients]
    assert positive.count(False) >= 1 and positive.count(True) >= 1


def test_synthetic_numbers_are_consistent(synthetic) -> None:
    evaluation, report = synthetic
    summary = summarise(evaluation)
    assert summary.reference == "truth"
    patients = evaluation.patients
    negatives = [p for p in patients if not p.truth_positive]
    for reading in READINGS:
        for t in THRESHOLDS:
            for p in patients:  # patient burden = area-weighted slice burdens
                areas = np.array([s.burdens[reading.name][t].myo_area_mm2 for s in p.slices])
                percent = np.array([s.burdens[reading.name][t].burden_percent for s in p.slices])
                assert p.burden(reading.name, t) == pytest.approx(float((areas * percent).sum() / areas.sum()))
            fp = next(r for r in summary.false_positives if (r.reading, r.threshold) == (reading.name, t))
            assert fp.negatives == len(negatives)
            assert fp.patients == [p.name for p in negatives if p.burden(reading.name, t) > 2.0]
            d = next(r for r in summary.dice if (r.reading, r.threshold) == (reading.name, t))
            assert d.values.size == len(patients) - len(negatives) and np.all((d.values >= 0) & (d.values <= 1))
    for row in summary.agreements:
        n = len(patients) if row.level == "patient" else sum(len(p.slices) for p in patients)
        assert row.stats.n == n == row.vne.size
        assert row.stats.bland_altman.bias == pytest.approx(float(np.mean(row.vne - row.lge)))
    assert {q.score for q in summary.quality} == {"cnr", "fidelity", "edge_width"}
    with (report.parent / "burden_per_patient.csv").open() as f:
        for row, p in zip(csv.DictReader(f), patients, strict=True):
            for t, reading in ((t, r.name) for r in READINGS for t in LGE_FRACTIONS):
                assert float(row[f"{reading} {t} (%)"]) == pytest.approx(p.burden(reading, t), abs=1e-3)
    text = report.read_text()
    assert "synthetic truth" in text and "fidelity" in text and "n = 3 patients" in text
    assert len(list(report.parent.glob("montage_*.png"))) == 1


def test_recorded_respiratory_ghosts_grade_a_synthetic_lge_nondiagnostic(synthetic, tmp_path) -> None:
    """A synthetic exam's artefact record grades its LGE: ghosts do, a wrong TI (patient_002) does not."""
    import json
    import shutil

    import h5py

    evaluation, report = synthetic
    assert all(not p.nondiagnostic for p in evaluation.patients)
    assert "Sensitivity" not in report.read_text()
    source = report.parent.parent / "exams"
    shutil.copytree(source / "patient_009", tmp_path / "exams" / "patient_009")
    shutil.copytree(source / "patient_002", tmp_path / "exams" / "patient_002")
    with h5py.File(tmp_path / "exams" / "patient_002" / "truth.h5", "r") as f:
        assert json.loads(f.attrs["attrs"])["artefacts"]["lge_wrong_ti"]
    with h5py.File(tmp_path / "exams" / "patient_009" / "truth.h5", "r+") as f:
        attrs = json.loads(f.attrs["attrs"])
        attrs["artefacts"]["lge_ghosts"] = True
        f.attrs["attrs"] = json.dumps(attrs)
    graded = evaluate_exams(tmp_path / "exams", T1Backend())
    ghosted = next(p for p in graded.patients if p.name == "patient_009")
    assert ghosted.slices and ghosted.nondiagnostic == ghosted.slices
    assert all("respiratory ghosts" in s.lge_nondiagnostic for s in ghosted.slices)
    assert not next(p for p in graded.patients if p.name == "patient_002").nondiagnostic
    primary = graded.diagnostic()
    assert [p.name for p in primary.patients] == ["patient_002"]
    assert primary.skipped == ["patient_009: left out of the primary analysis (LGE non-diagnostic on every slice: "
                               "respiratory ghosts (synthetic exam's artefact record))"]


def test_the_without_cine_reading_sends_no_cine(exams, evaluation) -> None:
    seen: list[bool] = []

    class Recording(T1Backend):
        def run(self, batch):
            seen.append(bool(np.any(batch["cine"])))
            return super().run(batch)

    without = evaluate_exams(exams[0], Recording(), exams[1], margin_mm=0.0, without_cine=True)
    assert seen and not any(seen)  # every slice inferred with a blank cine input
    assert "VNE without cine" in without.model and "without cine" not in evaluation.model
    for a, b in zip(without.patients, evaluation.patients, strict=True):  # this stand-in ignores the cine
        assert a.burden("VNE", "FWHM") == pytest.approx(b.burden("VNE", "FWHM"))


def test_the_domain_check_is_recorded_and_reported(evaluation, tmp_path) -> None:
    # the stand-in model carries no training-domain description: every VNE is made, tagged "warn", measured
    assert evaluation.qc_counts() == {"warn": 6}
    report = write_report(evaluation, tmp_path / "qc", examples=0).read_text()
    assert "**Input-domain check** of the VNE" in report and "warn 6" in report


def test_only_the_exams_own_series_are_read_and_damaged_exams_are_skipped(synthetic, tmp_path) -> None:
    """A replay output and a copied scan saved in a patient folder are listed as ignored, not counted as
    more slices; a half-written exam is reported and skipped while the others are evaluated."""
    import shutil

    from vne_inline.cli.inline_cmds import run_replay

    evaluation, report = synthetic
    source = report.parent.parent / "exams" / "patient_009"
    folder = tmp_path / "exams" / "patient_009"
    shutil.copytree(source, folder)
    run_replay([folder / "cine.h5", folder / "t1map.h5"], folder / "vne.h5", {}, None, backend=T1Backend())
    shutil.copy(folder / "t1map.h5", folder / "t1map_repeat.h5")
    broken = tmp_path / "exams" / "patient_010"
    shutil.copytree(source, broken)
    data = (broken / "truth.h5").read_bytes()
    (broken / "truth.h5").write_bytes(data[: len(data) // 2])  # half-written
    result = evaluate_exams(tmp_path / "exams", T1Backend())
    (patient,) = result.patients
    whole = next(p for p in evaluation.patients if p.name == "patient_009")
    assert [s.slice for s in patient.slices] == [s.slice for s in whole.slices]
    assert result.ignored == ["patient_009/t1map_repeat.h5: repeats series 2, 3 of t1map.h5",
                              "patient_009/vne.h5: holds VNE images (an output, not part of the exam)"]
    assert len(result.skipped) == 1 and result.skipped[0].startswith("patient_010: ")
    assert "truth.h5" in result.skipped[0] or "damaged" in result.skipped[0]
