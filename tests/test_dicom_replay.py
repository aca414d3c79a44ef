"""DICOM exams through the offline commands: replay (and --dicom-out), the MRD form python-ismrmrd-server's
dicom2mrd.py writes (DicomJson meta, IPP in `position`), vendor naming, missing TIs, show."""

from __future__ import annotations

import base64
import shutil
import subprocess

import ismrmrd
import numpy as np
import pydicom
import pytest
from dicom_builders import FRAME, STUDY, write_exam
from test_pipeline import CINE_HEADER, FakeBackend, cine_records, t1_records

from vne_inline.cli.inline_cmds import run_replay, write_dicom_vne
from vne_inline.core.roles import Role, classify
from vne_inline.io.dicom import read_dicom_folder
from vne_inline.io.mrd_file import write_file
from vne_inline.io.records import ImageRecord


def _replay(tmp_path, *paths):
    return run_replay(list(paths), tmp_path / "out.h5", {}, tmp_path / "store", backend=FakeBackend())


def _made(results):
    return [r for res in results for r in res.reports if r.made]


def _maps(folder):
    return [ds for ds in map(pydicom.dcmread, sorted((folder / "t1").rglob("*.dcm")))]


@pytest.mark.parametrize("style", ["siemens", "ge"])
def test_dicom_folder_replays_to_one_vne_per_t1_slice_and_dicom_output(tmp_path, style):
    exam = tmp_path / "exam"
    uids = write_exam(exam, cine_records(), t1_records(), style)
    results = _replay(tmp_path, exam)
    assert len(_made(results)) == 2
    names = [r.name for r in results]
    assert any("+" in name for name in names) == (style == "siemens")  # IR series joined its map series
    written, _, failures = write_dicom_vne(results, tmp_path / "vne")
    assert (written, failures) == (2, [])
    out = [pydicom.dcmread(p) for p in sorted((tmp_path / "vne").glob("*.dcm"))]
    maps = {float(np.dot(m.ImagePositionPatient, np.cross(m.ImageOrientationPatient[:3], m.ImageOrientationPatient[3:]))): m
            for m in _maps(exam)}
    cine_uids = {ds.SOPInstanceUID for ds in map(pydicom.dcmread, (exam / "cine").glob("*.dcm"))}
    assert len({ds.SeriesInstanceUID for ds in out}) == 1
    for ds in out:
        assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.PatientID) == (STUDY, FRAME, "PID-12345")
        assert ds.SeriesInstanceUID not in uids.values() and ds.SeriesDescription.endswith("_VNE")
        assert list(ds.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        n = np.cross(ds.ImageOrientationPatient[:3], ds.ImageOrientationPatient[3:])
        m = min(maps.items(), key=lambda kv: abs(kv[0] - float(np.dot(ds.ImagePositionPatient, n))))[1]
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), np.asarray(m.ImagePositionPatient, float), atol=0.01)
        np.testing.assert_allclose(np.asarray(ds.ImageOrientationPatient, float), np.asarray(m.ImageOrientationPatient, float), atol=1e-6)
        np.testing.assert_allclose(np.asarray(ds.PixelSpacing, float), np.asarray(m.PixelSpacing, float), atol=1e-6)
        assert (ds.Rows, ds.Columns) == (m.Rows, m.Columns)
        refs = {item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence}
        assert m.SOPInstanceUID in refs and len(refs & cine_uids) == 10  # the matched cine slice's phases
        assert "fake-test" in ds.ImageComments
    if shutil.which("dciodvfy"):
        for p in (tmp_path / "vne").glob("*.dcm"):
            check = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True)
            assert not [x for x in (check.stdout + check.stderr).splitlines() if x.startswith("Error")]


def _as_dicom2mrd(folder, path):
    """The MRD file python-ismrmrd-server's dicom2mrd.py makes of `folder`: DICOM's IPP in `position`, its
    field of view (PixelSpacing[1] x Rows, PixelSpacing[0] x Columns), ImageType / ImageComments /
    SequenceDescription / DicomJson meta, no GADGETRON tags; `slice` from SliceLocation, `phase` from
    TriggerTime; one file, one group per series."""
    datasets = sorted(map(pydicom.dcmread, folder.rglob("*.dcm")), key=lambda d: (d.SeriesNumber, d.InstanceNumber))
    numbers = sorted({d.SeriesNumber for d in datasets})
    records = []
    locations = {n: sorted({float(d.SliceLocation) for d in datasets if d.SeriesNumber == n}) for n in numbers}
    triggers = {n: sorted({float(d.get("TriggerTime", 0) or 0) for d in datasets if d.SeriesNumber == n}) for n in numbers}
    for d in datasets:
        head = ismrmrd.ImageHeader()
        data = d.pixel_array[None, None]
        head.matrix_size[:] = (d.Columns, d.Rows, 1)
        head.field_of_view[:] = (d.PixelSpacing[1] * d.Rows, d.PixelSpacing[0] * d.Columns, d.get("SliceThickness") or 1)
        head.position[:] = [float(v) for v in d.ImagePositionPatient]
        head.read_dir[:] = [float(v) for v in d.ImageOrientationPatient[:3]]
        head.phase_dir[:] = [float(v) for v in d.ImageOrientationPatient[3:]]
        head.slice_dir[:] = np.cross(head.read_dir[:], head.phase_dir[:]).tolist()
        head.image_series_index = numbers.index(d.SeriesNumber)
        head.slice = locations[d.SeriesNumber].index(float(d.SliceLocation))
        head.phase = triggers[d.SeriesNumber].index(float(d.get("TriggerTime", 0) or 0))
        head.image_type, head.channels, head.data_type = ismrmrd.IMTYPE_MAGNITUDE, 1, ismrmrd.DATATYPE_USHORT
        meta = {"ImageType": list(d.ImageType), "SequenceDescription": d.SeriesDescription}
        if "ImageComments" in d:
            meta["ImageComments"] = d.ImageComments
        del d.PixelData
        meta["DicomJson"] = base64.b64encode(d.to_json().encode()).decode()
        records.append(ImageRecord(data=data, head=head, meta=meta))
    write_file(path, CINE_HEADER.replace("2.25.31415926535", STUDY), records)


def test_dicom2mrd_file_replays_with_the_dicom_geometry_and_ti(tmp_path):
    write_exam(tmp_path / "exam", cine_records(), t1_records(), "siemens")
    _as_dicom2mrd(tmp_path / "exam", tmp_path / "exam.h5")
    results = _replay(tmp_path, tmp_path / "exam.h5")
    assert len(_made(results)) == 2, [r.line() for res in results for r in res.reports]
    vne = [o for o in results[0].outputs if o.meta_str("DataRole") == "VNE"]
    truth = sorted((r.geometry for r in t1_records() if r.meta_str("GADGETRON_DataRole") == "T1"),
                   key=lambda g: g.position @ g.normal)
    for v, g in zip(sorted(vne, key=lambda v: v.geometry.position @ v.geometry.normal), truth, strict=True):
        np.testing.assert_allclose(v.geometry.position, g.position, atol=0.01)  # the image centre, not IPP
        np.testing.assert_allclose(v.geometry.fov, g.fov, atol=0.01)
    written, _, failures = write_dicom_vne(results, tmp_path / "vne")  # DICOM header from DicomJson
    assert (written, failures) == (2, [])
    assert {pydicom.dcmread(p).PatientID for p in (tmp_path / "vne").glob("*.dcm")} == {"PID-12345"}


def test_ir_images_without_ti_get_one_report_line_no_traceback(tmp_path):
    write_exam(tmp_path / "exam", cine_records(), t1_records(), "siemens", ti_tags=False)
    results = _replay(tmp_path, tmp_path / "exam")
    lines = [r.line() for res in results for r in res.reports]
    assert len(lines) == 2 and all("no VNE" in x and "5 more without an inversion time" in x for x in lines)


def test_a_second_display_map_on_the_same_plane_is_reported_not_used(tmp_path):
    write_exam(tmp_path / "exam", cine_records(), t1_records(), "siemens", display_maps=True)
    results = _replay(tmp_path, tmp_path / "exam")
    lines = [r.line() for res in results for r in res.reports]
    assert len(_made(results)) == 2
    assert sorted(x for x in lines if "display map" in x) == [
        "T1 slice 0: no VNE: second T1 map on the plane of T1 slice 0 (a display map): not used",
        "T1 slice 1: no VNE: second T1 map on the plane of T1 slice 1 (a display map): not used"]


def test_vendor_conventions_in_the_default_role_rules():
    folder_records = {name: ImageRecord(np.zeros((1, 1, 2, 2), np.uint16), ismrmrd.ImageHeader(), meta)
                      for name, meta in {
                          "siemens map": {"ImageType": ["DERIVED", "PRIMARY", "T1 MAP", "MOCO"], "SequenceDescription": "MOLLI_5(3)3_SAX"},
                          "siemens moco ir": {"ImageType": ["DERIVED", "PRIMARY", "M", "MOCO"], "ImageComments": "TI 180"},
                          "shmolli ir": {"SequenceDescription": "ShMOLLI_192i_SAX", "ImageComments": "TIeff 100 ms"},
                          "ge lge": {"SequenceDescription": "MDE PSIR SAX"},
                          "ge cine": {"SequenceDescription": "FIESTA CINE SAX"},
                          "philips cine": {"SequenceDescription": "sBTFE_SA"},
                          "siemens map by name": {"SequenceDescription": "ShMOLLI_SAX_T1MAP"},
                      }.items()}
    roles = {name: classify(r) for name, r in folder_records.items()}
    assert roles == {"siemens map": Role.T1MAP, "siemens moco ir": Role.IR, "shmolli ir": Role.IR, "ge lge": Role.LGE,
                     "ge cine": Role.CINE, "philips cine": Role.CINE, "siemens map by name": Role.T1MAP}


def test_show_and_replay_cli_on_a_dicom_folder(tmp_path):
    from typer.testing import CliRunner

    from vne_inline.cli import app

    write_exam(tmp_path / "exam", cine_records(), t1_records(), "siemens", ti_tags=False)
    result = CliRunner().invoke(app, ["show", str(tmp_path / "exam"), "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.png").stat().st_size > 1000
    assert len(read_dicom_folder(tmp_path / "exam").series) == 3
    result = CliRunner().invoke(app, ["replay", str(tmp_path / "exam"), "--out", str(tmp_path / "o.h5"),
                                      "--model", str(tmp_path / "missing.onnx"), "--dicom-out", str(tmp_path / "v")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 3 and "Traceback" not in result.output  # T1-map slices given, no VNE made
    assert "0 VNE written as DICOM" in result.output


def test_ir_only_dicom_replay_and_t1map_write_fitted_maps_as_dicom(tmp_path):
    """A DICOM exam without its map series: replay fits the maps, and --dicom-out writes them (uint16 ms, the
    IR series' study, sources = the IR images) before the VNE that name them; `t1map` writes the same maps."""
    from typer.testing import CliRunner

    from vne_inline.cli.app import app

    exam = tmp_path / "exam"
    write_exam(exam, cine_records(), t1_records(), "siemens")
    shutil.rmtree(exam / "t1")  # the scanner sent IR images only
    ir_uids = {ds.SOPInstanceUID for ds in map(pydicom.dcmread, (exam / "ir").glob("*.dcm"))}
    results = _replay(tmp_path, exam)
    assert len(_made(results)) == 2 and all("fitted" in r.line() for r in _made(results))
    written, fitted, failures = write_dicom_vne(results, tmp_path / "vne")
    assert (written, fitted, failures) == (2, 2, [])
    out = [pydicom.dcmread(p) for p in sorted((tmp_path / "vne").glob("*.dcm"))]
    maps = [ds for ds in out if "T1 MAP" in ds.ImageType]
    vne = [ds for ds in out if "VNE" in ds.ImageType]
    assert len(maps) == len(vne) == 2
    for m in maps:
        assert m.SeriesDescription.endswith("_T1FIT") and m.StudyInstanceUID == STUDY
        assert {s.ReferencedSOPInstanceUID for s in m.SourceImageSequence} <= ir_uids
        assert len(m.SourceImageSequence) == 5
        t1 = m.pixel_array * float(m.get("RescaleSlope", 1)) + float(m.get("RescaleIntercept", 0))
        assert np.median(t1[t1 > 0]) == pytest.approx(960.0, rel=0.01)  # the hand-made tissue's T1
    map_uids = {m.SOPInstanceUID for m in maps}
    assert all(v.SourceImageSequence[0].ReferencedSOPInstanceUID in map_uids for v in vne)
    # the offline command on the same folder: the maps as DICOM, read back as T1 maps of the study
    result = CliRunner().invoke(app, ["t1map", str(exam), "--out", str(tmp_path / "t1.h5"),
                                      "--dicom-out", str(tmp_path / "t1dcm")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "wrote 2 T1 map(s) as DICOM" in result.output
    back = read_dicom_folder(tmp_path / "t1dcm")
    assert [classify(r) for s in back.series for r in s.records] == [Role.T1MAP, Role.T1MAP]
    if shutil.which("dciodvfy") is not None:
        for path in sorted((tmp_path / "t1dcm").glob("*.dcm")):
            check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            assert [x for x in (check.stdout + check.stderr).splitlines() if x.startswith("Error")] == []
