"""DICOM in and out: geometry against hand-computed answers, classic and enhanced MR, TI, rescale,
series grouping, bad files; the writer's output read back and checked by dciodvfy and dcmdump."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from dicom_builders import FRAME, STUDY, classic_mr, enhanced_mr
from pydicom.uid import generate_uid

from vne_inline.geometry import SliceGeometry, plane_from_normal
from vne_inline.io.dicom import read_dicom_folder
from vne_inline.io.dicom_json import ti_from_comment
from vne_inline.io.dicom_write import SeriesInfo, SourceImage, mr_dataset, write_dataset
from vne_inline.io.header import parse_header

S2 = np.sqrt(0.5)
ROW, COL = (S2, S2, 0.0), (-0.5, 0.5, S2)  # oblique, orthonormal
IPP = (10.0, 20.0, 30.0)


def test_geometry_from_plane_hand_computed_oblique_non_square():
    # rows 3, columns 4; PixelSpacing = (row spacing dy 2.0, column spacing dx 1.5)
    g = SliceGeometry.from_dicom(IPP, (*ROW, *COL), (2.0, 1.5), rows=3, columns=4, thickness_mm=8.0)
    # centre = IPP + (4-1)/2 * 1.5 * row + (3-1)/2 * 2.0 * col
    np.testing.assert_allclose(g.position, [10.0 + 2.25 * S2 - 1.0, 20.0 + 2.25 * S2 + 1.0, 30.0 + 2.0 * S2], atol=1e-9)
    np.testing.assert_allclose(g.fov, [6.0, 6.0, 8.0])
    assert g.matrix == (4, 3) and g.shape == (3, 4)
    assert g.pixel_spacing == pytest.approx((1.5, 2.0))
    centres = g.pixel_centres()
    np.testing.assert_allclose(centres[0, 0], IPP, atol=1e-9)  # the first pixel's centre is IPP
    np.testing.assert_allclose(centres[0, 3], np.add(IPP, np.multiply(4.5, ROW)), atol=1e-9)  # along the row
    np.testing.assert_allclose(centres[2, 0], np.add(IPP, np.multiply(4.0, COL)), atol=1e-9)  # down the column
    np.testing.assert_allclose(g.normal, np.cross(ROW, COL), atol=1e-12)
    ipp, iop, spacing = g.to_dicom()
    np.testing.assert_allclose(ipp, IPP, atol=1e-9)
    np.testing.assert_allclose(iop, (*ROW, *COL), atol=1e-12)
    assert spacing == pytest.approx([2.0, 1.5])


@pytest.mark.parametrize("comment, ti", [("TIeff 100 ms", 100.0), ("TI 180", 180.0), ("TI=1100.5ms", 1100.5),
                                         ("T1 map", None), ("", None), ("STIR", None)])
def test_ti_from_comment(comment, ti):
    assert ti_from_comment(comment) == ti


def _ir_series(tmp_path, uid, tis, order):
    """Three IR images of one plane, written in acquisition order `order` (not TI order)."""
    for n, k in enumerate(order, start=1):
        extra = {"ImageComments": f"TIeff {tis[k]} ms"} if k % 2 == 0 else {"InversionTime": tis[k]}
        ds = classic_mr(np.full((3, 4), 100 + k), IPP, (*ROW, *COL), (2.0, 1.5), series_uid=uid, series_number=5,
                        description="ShMOLLI_SAX", instance=n, TriggerTime=300.0 + 10 * k, **extra)
        ds.save_as(tmp_path / f"ir_{n}.dcm", enforce_file_format=True)


def test_classic_series_ti_rescale_grouping_and_no_patient_identifiers(tmp_path):
    by_uid = generate_uid()
    _ir_series(tmp_path, by_uid, [100, 1100, 180], [1, 0, 2])
    t1 = classic_mr(np.full((3, 4), 4800), IPP, (*ROW, *COL), (2.0, 1.5), series_uid=generate_uid(), series_number=6,
                    description="ShMOLLI_SAX_T1MAP", RescaleSlope=0.25, RescaleIntercept=-200)
    t1.ImageType = ["DERIVED", "PRIMARY", "T1 MAP", "NONE"]
    (tmp_path / "sub").mkdir()
    t1.save_as(tmp_path / "sub" / "t1.dcm", enforce_file_format=True)  # folders are read recursively
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    extra = classic_mr(np.ones((3, 4)), IPP, (*ROW, *COL), (2.0, 1.5), series_uid=by_uid, series_number=5,
                       InversionTime=260.0)
    extra.save_as(tmp_path / "truncated.dcm", enforce_file_format=True)
    whole = (tmp_path / "truncated.dcm").read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(whole[: len(whole) - 10])  # pixel data cut short
    (tmp_path / "copy.dcm").write_bytes((tmp_path / "ir_1.dcm").read_bytes())  # the same instance twice
    folder = read_dicom_folder(tmp_path)
    by_number = {s.number: s for s in folder.series}
    assert sorted(by_number) == [5, 6]
    ir = by_number[5].records
    assert len(ir) == 3  # the truncated copy of an IR image is left out
    assert [r.meta_float("InversionTime") for r in ir] == [1100.0, 100.0, 180.0]  # acquisition order kept
    assert [r.set for r in ir] == [0, 1, 2] and {r.slice for r in ir} == {0} and {r.phase for r in ir} == {0}
    (t1_record,) = by_number[6].records
    assert t1_record.data.dtype == np.float32
    np.testing.assert_allclose(t1_record.pixels, 4800 * 0.25 - 200)  # ms after the rescale
    assert t1_record.meta["ImageType"] == ["DERIVED", "PRIMARY", "T1 MAP", "NONE"]
    header = parse_header(by_number[6].header_xml)
    assert (header.study_uid, header.frame_of_reference_uid) == (STUDY, FRAME)
    text = by_number[6].header_xml + repr([r.meta for s in folder.series for r in s.records])
    assert "Doe" not in text and "PID-12345" not in text
    assert any("broken.dcm: not readable as DICOM" in s for s in folder.skipped)
    assert any("left out: pixel data not readable" in s for s in folder.skipped), folder.skipped


def test_cine_phases_from_trigger_time_and_slices_in_acquisition_order(tmp_path):
    uid = generate_uid()
    normal = np.cross(ROW, COL)
    n = 0
    for offset in (16.0, 0.0, 8.0):  # acquired apex-first, not position order
        for trigger in (400.0, 0.0, 200.0):
            n += 1
            ds = classic_mr(np.full((3, 4), n), np.add(IPP, offset * normal), (*ROW, *COL), (2.0, 1.5),
                            series_uid=uid, description="cine_retro_SAX", instance=n, TriggerTime=trigger)
            ds.save_as(tmp_path / f"{n}.dcm", enforce_file_format=True)
    (series,) = read_dicom_folder(tmp_path).series
    got = [(r.slice, r.phase, int(r.pixels[0, 0])) for r in series.records]
    assert got == [(0, 2, 1), (0, 0, 2), (0, 1, 3), (1, 2, 4), (1, 0, 5), (1, 1, 6), (2, 2, 7), (2, 0, 8), (2, 1, 9)]
    assert parse_header(series.header_xml).n_phases == 3


def test_enhanced_multiframe_geometry_ti_and_rescale(tmp_path):
    frames = np.arange(3 * 3 * 4, dtype=np.uint16).reshape(3, 3, 4)
    positions = [IPP] * 3
    ds = enhanced_mr(frames, positions, (*ROW, *COL), (2.0, 1.5), series_uid=generate_uid(),
                     inversion_ms=[180.0, 100.0, 260.0], slope=2.0, intercept=1.0, description="MOLLI_SAX")
    ds.save_as(tmp_path / "enh.dcm", enforce_file_format=True)
    (series,) = read_dicom_folder(tmp_path).series
    assert len(series.records) == 3
    for k, r in enumerate(series.records):
        np.testing.assert_allclose(r.pixels, frames[k] * 2.0 + 1.0)
        assert r.meta["DicomFrameNumber"] == str(k + 1)
        np.testing.assert_allclose(r.geometry.pixel_centres()[0, 0], IPP, atol=1e-9)
        assert r.geometry.thickness == 6.0
    assert [r.meta_float("InversionTime") for r in series.records] == [180.0, 100.0, 260.0]
    assert [r.set for r in series.records] == [0, 1, 2]


def test_non_image_sop_class_and_empty_folder_are_clear_errors(tmp_path):
    ds = classic_mr(np.zeros((3, 4)), IPP, (*ROW, *COL), (2.0, 1.5), series_uid=generate_uid())
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match="no readable DICOM MR image.*Secondary Capture"):
        read_dicom_folder(tmp_path)


def test_written_mr_image_reads_back_with_its_geometry_and_passes_dciodvfy(tmp_path):
    g = plane_from_normal([10.0, -20.0, 30.0], [0.2, -0.4, 0.9], (300.0, 240.0, 8.0), (40, 32), 12.0)
    study = classic_mr(np.zeros((2, 2)), IPP, (*ROW, *COL), (1, 1), series_uid=generate_uid())
    image = np.linspace(-50, 950, 32 * 40, dtype=np.float32).reshape(32, 40)
    ds = mr_dataset(image, g, study, SeriesInfo(generate_uid(), 99, "T1MAP_VNE"), 1,
                    ["DERIVED", "SECONDARY", "OTHER", "VNE"], window=(500, 1000), comment="VNE",
                    sources=[SourceImage("1.2.840.10008.5.1.4.1.1.4", generate_uid())], derivation="test")
    path = write_dataset(ds, tmp_path / "out")
    (series,) = read_dicom_folder(tmp_path / "out").series
    (r,) = series.records
    np.testing.assert_allclose(r.geometry.position, g.position, atol=1e-6)
    np.testing.assert_allclose(r.geometry.read_dir, g.read_dir, atol=1e-9)
    np.testing.assert_allclose(r.geometry.fov, g.fov, atol=1e-6)
    np.testing.assert_allclose(r.pixels, image, atol=0.01)
    if shutil.which("dciodvfy") is None or shutil.which("dcmdump") is None:
        pytest.skip("dicom3tools / dcmtk not installed (.ci/run installs them)")
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
    dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert "MRImageStorage" in dump and "T1MAP_VNE" in dump
