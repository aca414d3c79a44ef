"""Training-triplet preparation and role rules on a real synthetic exam."""

import json

import h5py
import ismrmrd
import numpy as np
import pytest

from vne_inline.adapters.exam_files import read_exam
from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.geometry import plane_from_normal
from vne_inline.io.records import ImageRecord
from vne_inline.synth.exam import generate_patient
from vne_inline.train.prepare import MASK_NAMES, Registration, prepare, triplets_of_exam


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    root = tmp_path_factory.mktemp("exams")
    generate_patient(root, seed=5, index=1)
    return next(root.iterdir())


def test_triplets_match_every_t1_slice_onto_its_grid(exam):
    triplets, rejected, unregistered = triplets_of_exam(exam)
    assert rejected == []
    assert [t.slice for t in triplets] == [0, 1, 2]
    compared = 0
    for t in triplets:
        h, w = t.t1.shape
        assert t.cine.shape[1:] == (h, w) and 25 <= t.cine.shape[0] <= 30
        assert t.ir.shape == (7, h, w) and np.all(np.diff(t.ti_ms) > 0)
        assert t.lge.shape == (h, w)
        assert set(t.masks) == set(MASK_NAMES)
        assert t.valid.mean() > 0.75
        # the resampled LGE lines up with the T1 grid: remote myocardium darker than blood
        blood, remote = t.masks["blood"].astype(bool), t.masks["remote"].astype(bool)
        if blood.any() and remote.any():
            assert t.lge[blood].mean() > t.lge[remote].mean() + 0.1 * np.ptp(t.lge)
            compared += 1
    assert compared >= 2


def test_missing_lge_is_listed_with_a_reason(exam, tmp_path):
    partial = tmp_path / exam.name
    partial.mkdir()
    for name in ("cine.h5", "t1map.h5", "truth.h5"):
        (partial / name).write_bytes((exam / name).read_bytes())
    out = tmp_path / "triplets.h5"
    report = prepare([partial], out)
    assert report.written == 0
    assert len(report.rejected) == 3 and all("no LGE match" in r.reason for r in report.rejected)
    with h5py.File(out) as f:
        assert f.attrs["format"] == "vne-triplets/1"
        rows = [json.loads(r) for r in f["rejected"][:]]
        assert {r["slice"] for r in rows} == {0, 1, 2}


def test_unreadable_exam_is_rejected_not_raised(tmp_path):
    bad = tmp_path / "patient_bad"
    bad.mkdir()
    (bad / "t1map.h5").write_bytes(b"not hdf5")
    triplets, rejected, _ = triplets_of_exam(bad)
    assert triplets == [] and "not readable" in rejected[0].reason


def _record(meta=None, phase=0, image_type=ismrmrd.IMTYPE_MAGNITUDE, series=1):
    g = plane_from_normal([0, 0, 0], [0, 0, 1], (8.0, 8.0, 8.0), (4, 4))
    return ImageRecord.new(np.zeros((4, 4), np.float32), g, meta or {}, phase=phase,
                           image_type=image_type, image_series_index=series)


@pytest.mark.parametrize(
    ("meta", "phase", "image_type", "header_phases", "expected"),
    [
        ({"GADGETRON_DataRole": "T1"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.T1MAP),
        ({"GADGETRON_DataRole": "PSIR"}, 0, ismrmrd.IMTYPE_REAL, 1, Role.LGE),
        ({"GADGETRON_DataRole": "VNE"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.VNE),
        ({"GADGETRON_SeqDescription": "ShMOLLI_T1MAP"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.T1MAP),
        ({"SequenceDescription": "tfl_psir_sax"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.LGE),
        ({"GADGETRON_SeqDescription": "trufi_cine_sax"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.CINE),
        ({"GADGETRON_TI": "180"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.IR),
        ({"GADGETRON_TI": "180"}, 0, ismrmrd.IMTYPE_PHASE, 1, Role.OTHER),
        ({"GADGETRON_DataRole": "Image"}, 3, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.CINE),
        ({"GADGETRON_DataRole": "Image"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 25, Role.CINE),
        ({"GADGETRON_DataRole": "Image"}, 0, ismrmrd.IMTYPE_MAGNITUDE, 1, Role.OTHER),
    ],
)
def test_role_chain(meta, phase, image_type, header_phases, expected):
    assert classify(_record(meta, phase, image_type), RoleRules(), header_phases) == expected


def test_role_rules_from_strings_take_precedence_and_validate():
    rules = RoleRules.from_strings(series_map="7=ir", patterns=r"my_lge_proto=lge")
    assert classify(_record({"GADGETRON_DataRole": "T1"}, series=7), rules) == Role.IR
    assert classify(_record({"GADGETRON_SeqDescription": "my_lge_proto"}), rules) == Role.LGE
    with pytest.raises(ValueError, match="series map"):
        RoleRules.from_strings(series_map="seven=ir")
    with pytest.raises(ValueError, match="role pattern"):
        RoleRules.from_strings(patterns="([=lge")


def test_lge_is_registered_back_onto_the_t1_map(tmp_path):
    """Synthetic patient 5 of seed 1000 breathed 4-5 mm away between the T1 and LGE scans: the
    shift found per slice matches the in-plane part of that movement (known from the truth)."""
    generate_patient(tmp_path, seed=1000, index=5)
    exam = next(tmp_path.iterdir())
    with h5py.File(exam / "truth.h5") as f:
        attrs = json.loads(f.attrs["attrs"])
    assert attrs["artefacts"]["lge_misregistered"]
    moved = np.subtract(attrs["movement_mm"]["lge"], attrs["movement_mm"]["t1"])
    triplets, rejected, unregistered = triplets_of_exam(exam)
    assert rejected == [] and unregistered == [] and len(triplets) == 3
    geometries = {t.slice: t.geometry for t in read_exam(exam).t1}
    for t in triplets:
        g = geometries[t.slice]
        expected = np.array([moved @ g.read_dir, moved @ g.phase_dir])
        assert np.hypot(*expected) > 3.0
        assert np.hypot(*(np.asarray(t.lge_shift_mm) - expected)) < 1.5
    plain, _, unregistered = triplets_of_exam(exam, registration=Registration(enabled=False))
    assert unregistered == [] and all(t.lge_shift_mm is None for t in plain)
    out = tmp_path / "triplets.h5"
    report = prepare([exam], out)
    assert len(report.shifts_mm) == 3 and min(report.shifts_mm) > 2.0
    with h5py.File(out) as f:
        shifts = [f["slices"][n].attrs["lge_shift_mm"] for n in f["slices"]]
        assert len(f["unregistered"]) == 0
    assert np.allclose(sorted(np.hypot(*s) for s in shifts), sorted(report.shifts_mm))


def test_failed_registration_keeps_the_slice_and_says_why(exam, monkeypatch):
    import vne_inline.train.prepare as prepare_module

    def fail(*args, **kwargs):
        raise ValueError("only 12 pixels to compare (need 200)")

    monkeypatch.setattr(prepare_module, "register_matched", fail)
    triplets, rejected, unregistered = triplets_of_exam(exam)
    assert rejected == [] and len(triplets) == 3 and all(t.lge_shift_mm is None for t in triplets)
    assert [u.slice for u in unregistered] == [0, 1, 2]
    assert all("LGE not registered: only 12 pixels" in u.reason for u in unregistered)


def test_nondiagnostic_lge_is_rejected_as_a_target(exam, tmp_path):
    """Recorded respiratory ghosts reject every slice; a reader's grades replace the record; both can be kept."""
    import shutil

    from typer.testing import CliRunner

    from vne_inline.cli import app, prepare_cmds  # noqa: F401  (registers `prepare`)
    from vne_inline.train.prepare import grader

    ghosted = tmp_path / "exams" / exam.name
    shutil.copytree(exam, ghosted)
    with h5py.File(ghosted / "truth.h5", "r+") as f:
        attrs = json.loads(f.attrs["attrs"])
        attrs["artefacts"]["lge_ghosts"] = True
        f.attrs["attrs"] = json.dumps(attrs)
    report = prepare([ghosted], tmp_path / "a.h5", registration=Registration(False))
    assert report.written == 0 and [(r.slice, r.reason) for r in report.rejected] == [
        (k, "LGE non-diagnostic: respiratory ghosts (synthetic exam's artefact record)") for k in (0, 1, 2)]
    kept = prepare([ghosted], tmp_path / "b.h5", registration=Registration(False), grades=grader(keep=True))
    assert kept.written == 3 and not kept.rejected
    (tmp_path / "grades" / exam.name).mkdir(parents=True)
    (tmp_path / "grades" / exam.name / "lge_nondiagnostic.txt").write_text("1 ghosts over the septum\n")
    read = prepare([ghosted], tmp_path / "c.h5", registration=Registration(False), grades=grader(tmp_path / "grades"))
    assert read.written == 2 and [(r.slice, r.reason) for r in read.rejected] == [
        (1, "LGE non-diagnostic: ghosts over the septum")]
    with h5py.File(tmp_path / "c.h5") as f:
        assert sorted(f["slices"]) == [f"{exam.name}_s0", f"{exam.name}_s2"]
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "exams"), "--out", str(tmp_path / "d.h5"),
                                      "--no-register", "--grading", str(tmp_path / "grades")])
    assert result.exit_code == 0, result.output
    assert "2 triplets written" in result.output and "LGE non-diagnostic: ghosts over the septum" in result.output
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "exams"), "--out", str(tmp_path / "e.h5"),
                                      "--no-register", "--keep-nondiagnostic"])
    assert result.exit_code == 0 and "3 triplets written" in result.output
