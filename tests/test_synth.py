"""Synthetic HCM exams: files, tags, geometry, physics numbers, ground truth, determinism, CLI.

One session-scoped set of three patients (seed 7, 1.5 T, two worker processes) serves most tests.
"""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest
from typer.testing import CliRunner

from vne_inline.cli import app
from vne_inline.core.match import Match, MatchCriteria, find_match, resample_onto
from vne_inline.core.slices import t1_map_ms
from vne_inline.io.header import parse_header
from vne_inline.io.mrd_file import read_file
from vne_inline.synth.exam import FILES, generate_exams, generate_patient
from vne_inline.synth.planning import LGE_MATCH
from vne_inline.synth.truth import read_lge_truth, read_truth

SEED = 7
N_PATIENTS = 3


@pytest.fixture(scope="session")
def exam_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    summaries = list(generate_exams(root, N_PATIENTS, SEED, field_t=1.5, workers=2))
    assert sorted(s.index for s in summaries) == list(range(N_PATIENTS))
    return root


@pytest.fixture(scope="session")
def exams(exam_root):
    """Per patient: the three files read back and the truth."""
    out = []
    for d in sorted(exam_root.glob("patient_*")):
        out.append({"dir": d, **{n: read_file(d / f"{n}.h5") for n in ("cine", "t1map", "lge")}, "truth": read_truth(d / "truth.h5")})
    return out


def _by_slice(records):
    return {r.slice: r for r in records}


# ------------------------------------------------------------------------------------------- files
def test_every_patient_has_four_files(exam_root):
    dirs = sorted(exam_root.glob("patient_*"))
    assert [d.name for d in dirs] == [f"patient_{i:03d}" for i in range(N_PATIENTS)]
    for d in dirs:
        assert sorted(p.name for p in d.iterdir()) == sorted(FILES)


def test_files_open_with_ismrmrd_and_headers_parse(exam_root):
    for d in sorted(exam_root.glob("patient_*")):
        facts = []
        for name in ("cine", "t1map", "lge"):
            with ismrmrd.Dataset(str(d / f"{name}.h5"), "dataset", create_if_needed=False) as ds:
                xml = ds.read_xml_header()
                header = ismrmrd.xsd.CreateFromDocument(xml.decode() if isinstance(xml, bytes) else xml)
                assert header.subjectInformation.patientID.startswith("SYN")
                assert header.acquisitionSystemInformation.systemFieldStrength_T == 1.5
            facts.append(parse_header(xml))
        assert len({f.study_uid for f in facts}) == 1 and facts[0].study_uid.startswith("2.25.")
        assert len({f.frame_of_reference_uid for f in facts}) == 1
        assert len({f.measurement_id for f in facts}) == 3


def test_tags_series_and_types(exams):
    for e in exams:
        cine = e["cine"].groups["image_1"]
        assert {r.series_index for r in cine} == {1}
        assert all(r.data.dtype == np.uint16 and r.meta_str("GADGETRON_DataRole") == "Image" for r in cine)
        assert all(r.meta_str("GADGETRON_SeqDescription") == "cine_sax" and r.meta_str("GADGETRON_ImageComment") for r in cine)
        n_phases, n_slices = len({r.phase for r in cine}), len({r.slice for r in cine})
        assert 25 <= n_phases <= 30 and 10 <= n_slices <= 12 and len(cine) == n_phases * n_slices

        ir = e["t1map"].groups["image_2"]
        assert {r.series_index for r in ir} == {2} and all(r.data.dtype == np.uint16 for r in ir)
        assert {r.set for r in ir} == set(range(7)) and {r.slice for r in ir} == {0, 1, 2}
        for s in range(3):  # ShMOLLI in acquisition order: the first inversion's five images, then two
            tis = [r.meta_float("GADGETRON_TI") for r in sorted(ir, key=lambda r: r.set) if r.slice == s]
            assert tis[0] == pytest.approx(100.0) and tis[5:] == pytest.approx([180.0, 260.0])
            assert tis[:5] == sorted(tis[:5]) and tis[1] > 500.0
        t1 = e["t1map"].groups["image_3"]
        assert {r.series_index for r in t1} == {3} and len(t1) == 3
        assert all(r.meta_str("GADGETRON_DataRole") == "T1" for r in t1)
        for r in t1:  # float ms, or uint16 ms x scale ratio
            assert r.data.dtype == np.float32 or (r.data.dtype == np.uint16 and r.meta_float("GADGETRON_ScaleRatio") in (1.0, 10.0))
        assert all(r.meta_str("GADGETRON_SeqDescription") == "ShMOLLI" for r in ir + t1)

        lge = e["lge"].groups["image_4"]
        assert {r.series_index for r in lge} == {4}
        assert all(r.data.dtype == np.float32 and r.image_type == ismrmrd.IMTYPE_REAL for r in lge)
        assert all(r.meta_str("GADGETRON_DataRole") == "PSIR" and r.meta_str("GADGETRON_SeqDescription") == "PSIR_LGE" for r in lge)
        assert min(float(r.pixels.min()) for r in lge) < 0  # signed


def test_grids_differ_between_scans(exams):
    for e in exams:
        cine = e["cine"].groups["image_1"][0].geometry
        t1 = e["t1map"].groups["image_3"][0].geometry
        lge = e["lge"].groups["image_4"][0].geometry
        assert len({cine.matrix, t1.matrix, lge.matrix}) == 3
        assert len({round(g.pixel_spacing[0], 3) for g in (cine, t1, lge)}) == 3
        assert 1.4 <= cine.pixel_spacing[0] <= 1.8 and 1.4 <= lge.pixel_spacing[0] <= 1.8
        assert 0.99 <= t1.pixel_spacing[0] <= 1.61 and t1.nx != t1.ny  # 1.0-1.6 mm, non-square matrix
        assert not np.allclose(cine.position, t1.position) and not np.allclose(t1.position, lge.position)


def test_each_t1_slice_has_cine_and_lge_matches(exams):
    for e in exams:
        cine = [(r.slice, r.geometry) for r in e["cine"].groups["image_1"] if r.phase == 0]
        lge = [(r.slice, r.geometry) for r in e["lge"].groups["image_4"]]
        for r in e["t1map"].groups["image_3"]:
            assert isinstance(find_match(r.geometry, cine, MatchCriteria()), Match)
            m = find_match(r.geometry, lge, LGE_MATCH)
            assert isinstance(m, Match) and m.plane.cosine > 0.95 and m.plane.distance_mm < 3.0


# ------------------------------------------------------------------------------------------- physics
def _pooled(e, mask_name):
    maps = _by_slice(e["t1map"].groups["image_3"])
    return np.concatenate([t1_map_ms(maps[t.slice])[getattr(t, mask_name)] for t in e["truth"]])


def test_fitted_t1_of_remote_blood_and_lesions(exams):
    for e in exams:
        attrs = e["truth"][0].attrs
        remote, blood = _pooled(e, "remote"), _pooled(e, "blood")
        assert remote.size > 300 and blood.size > 100
        assert 900.0 <= remote.mean() <= 1020.0, (e["dir"].name, remote.mean())
        assert blood.mean() > 1350.0
        if not attrs["artefacts"]["t1_motion"]:
            maps = _by_slice(e["t1map"].groups["image_3"])
            sds = [t1_map_ms(maps[t.slice])[t.remote].std() for t in e["truth"]]
            assert all(20.0 <= sd <= 80.0 for sd in sds), sds  # design: about 30-60 ms (ShMOLLI up to about 75)
        hyper = _pooled(e, "lesion_hyperintense")
        if hyper.size >= 20:
            assert hyper.mean() >= remote.mean() + 80.0


def _lge_contrast(e) -> tuple[np.ndarray, np.ndarray]:
    """LGE resampled onto the T1 grid: pixels of the true lesions and of remote myocardium, pooled over
    the slices that hold lesions."""
    lge = {r.slice: r for r in e["lge"].groups["image_4"]}
    lesion, remote = [np.zeros(0)], [np.zeros(0)]
    for t in e["truth"]:
        m = find_match(t.geometry, [(k, r.geometry) for k, r in lge.items()])
        assert isinstance(m, Match)
        if t.lesion.sum() < 10:
            continue
        image = resample_onto(t.geometry, lge[m.key].pixels, lge[m.key].geometry).data
        lesion.append(image[t.lesion])
        remote.append(image[t.remote])
    return np.concatenate(lesion), np.concatenate(remote)


def test_lge_lesions_stand_out_in_artefact_free_patients(exams):
    checked = 0
    for e in exams:
        if any(e["truth"][0].attrs["artefacts"].values()):
            continue
        lesion, remote = _lge_contrast(e)
        if lesion.size < 20:
            continue
        assert lesion.mean() - remote.mean() > 3.0 * remote.std(), (e["dir"].name, lesion.mean(), remote.mean(), remote.std())
        checked += 1
    assert checked >= 1


# ------------------------------------------------------------------------------------------- truth
def test_truth_masks_are_consistent(exams):
    for e in exams:
        maps = _by_slice(e["t1map"].groups["image_3"])
        for t in e["truth"]:
            g = maps[t.slice].geometry
            assert t.geometry.matrix == g.matrix and np.allclose(t.geometry.position, g.position)
            assert t.myocardium.shape == g.shape == t.t1_true_ms.shape == t.lge_true.shape
            assert not (t.lesion & ~t.myocardium).any()
            assert not (t.lesion_hyperintense & t.lesion_intermediate).any()
            assert not (t.remote & t.lesion).any() and not (t.remote & ~t.myocardium).any()
            assert not (t.blood & t.myocardium).any() and t.myocardium.sum() > 200
            assert abs(float(np.median(t.t1_true_ms[t.remote])) - float(np.median(t1_map_ms(maps[t.slice])[t.remote]))) < 40.0
            assert abs(float(t.lge_true[t.remote].mean())) < 0.05 * float(t.lge_true[t.blood].mean())  # TI nulls remote
        a = e["truth"][0].attrs
        assert a["phenotype"] in ("asymmetric_septal", "concentric", "apical", "none")
        assert 0.0 <= a["lesion_burden"] <= 0.45
        assert set(a["artefacts"]) == {"lge_wrong_ti", "lge_ghosts", "t1_motion", "lge_misregistered"}
        assert set(a["movement_mm"]) == {"t1", "lge"} and "patient" in a
        assert [t.attrs["level"] for t in e["truth"]] == ["basal", "mid", "apical"]
    assert any(e["truth"][0].attrs["lesion_burden"] > 0 for e in exams)


def test_lge_truth_is_drawn_on_each_lge_slice(exams):
    """One truth group per LGE slice, on its grid, outlining the anatomy the LGE image shows."""
    for e in exams:
        lge = _by_slice(e["lge"].groups["image_4"])
        truth = read_lge_truth(e["dir"] / "truth.h5")
        assert [t.slice for t in truth] == sorted(lge)
        flags = e["truth"][0].attrs["artefacts"]
        for t in truth:
            image = lge[t.slice]
            assert t.geometry.matrix == image.geometry.matrix and np.allclose(t.geometry.position, image.geometry.position)
            assert t.myocardium.shape == image.pixels.shape
            assert not (t.lesion & ~t.myocardium).any() and not (t.remote & ~t.myocardium).any()
            if t.remote.sum() > 50 and t.blood.sum() > 50 and not flags["lge_wrong_ti"]:
                blood, remote = image.pixels[t.blood].mean(), image.pixels[t.remote].mean()
                assert abs(remote) < 0.15 * blood, (e["dir"].name, t.slice, remote, blood)  # nulled where the truth says
        assert sum(t.myocardium.sum() > 200 for t in truth) >= 3


# ------------------------------------------------------------------------------------------- options
def test_same_seed_gives_identical_files(exam_root, tmp_path):
    generate_patient(tmp_path, SEED, 1, 1.5)
    for name in FILES:
        assert (tmp_path / "patient_001" / name).read_bytes() == (exam_root / "patient_001" / name).read_bytes(), name


def test_three_tesla_changes_t1(exams, tmp_path):
    generate_patient(tmp_path, SEED, 0, 3.0)
    d = tmp_path / "patient_000"
    header = parse_header(read_file(d / "t1map.h5").header_xml)
    assert header.field_strength_t == 3.0
    e3 = {"t1map": read_file(d / "t1map.h5"), "truth": read_truth(d / "truth.h5")}
    remote_15, remote_3 = _pooled(exams[0], "remote").mean(), _pooled(e3, "remote").mean()
    blood_15, blood_3 = _pooled(exams[0], "blood").mean(), _pooled(e3, "blood").mean()
    assert remote_3 > remote_15 + 60.0 and blood_3 > blood_15 + 150.0


def test_cli_show_and_synth_help(exam_root, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["show", str(exam_root / "patient_001"), "--out", str(tmp_path / "exam.png"), "--slice", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["show", str(exam_root / "patient_001" / "t1map.h5"), "--out", str(tmp_path / "t1.png")])
    assert result.exit_code == 0, result.output
    for png in ("exam.png", "t1.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0 and "--patients" in result.output


def test_cli_domain_options_make_molli_at_3t(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--patients", "1", "--seed", str(SEED), "--workers", "1",
                                 "--field", "3", "--t1-scheme", "molli-3335"])
    assert result.exit_code == 0, result.output
    d = tmp_path / "patient_000"
    t1map = read_file(d / "t1map.h5")
    assert parse_header(t1map.header_xml).field_strength_t == 3.0
    ir = t1map.groups["image_2"]
    assert {r.set for r in ir} == set(range(11))
    assert {r.meta_str("GADGETRON_SeqDescription") for r in ir} == {"MOLLI 3(3)3(3)5"}
    e = {"t1map": t1map, "truth": read_truth(d / "truth.h5")}
    assert 1000.0 <= _pooled(e, "remote").mean() <= 1250.0  # 3 T myocardium (Dabir 2014: MOLLI 1052 ms)
    for option, value in (("--field", "2"), ("--t1-scheme", "look-locker")):
        bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), option, value])
        assert bad.exit_code == 2 and option in bad.output


@pytest.mark.parametrize("vendor", ["siemens", "ge"])
def test_dicom_export_reads_back_as_the_same_exam(exam_root, tmp_path, vendor):
    import shutil
    import subprocess

    import pydicom

    from vne_inline.adapters.exam_files import read_exam
    from vne_inline.synth.dicom_export import T1_SLOPE_MS, write_dicom_exam
    from vne_inline.synth.patient import draw_patient

    src = exam_root / "patient_000"
    for name in ("cine.h5", "t1map.h5", "lge.h5"):
        shutil.copy(src / name, tmp_path / name)
    folder = write_dicom_exam(tmp_path, draw_patient(SEED, 0, 1.5), vendor)
    dicom = read_exam(folder)
    ismrmrd_exam = read_exam(src)
    assert (len(dicom.cine), len(dicom.t1), len(dicom.lge)) == (len(ismrmrd_exam.cine), len(ismrmrd_exam.t1), len(ismrmrd_exam.lge))
    for a, b in zip(dicom.t1, ismrmrd_exam.t1, strict=True):
        np.testing.assert_allclose(a.geometry.position, b.geometry.position, atol=1e-3)
        np.testing.assert_allclose(a.ti_ms, b.ti_ms, atol=0.5)
        np.testing.assert_allclose(a.t1_ms, np.clip(b.t1_ms, 0, None), atol=T1_SLOPE_MS / 2 + 1e-3)
    series = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(series) == (4 if vendor == "siemens" else 3)  # GE-like: IR images and map in one series
    first = [pydicom.dcmread(sorted(s.glob("*.dcm"))[0]) for s in series]
    assert {ds.Manufacturer for ds in first} == {f"vne-inline synthetic ({'Siemens' if vendor == 'siemens' else 'GE'}-like)"}
    if shutil.which("dciodvfy"):
        for s in series:
            check = subprocess.run(["dciodvfy", str(sorted(s.glob("*.dcm"))[-1])], capture_output=True, text=True)
            assert not [x for x in (check.stdout + check.stderr).splitlines() if x.startswith("Error")]
