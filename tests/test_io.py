"""ISMRMRD records, headers and HDF5 files: real ismrmrd objects and files, round trips and errors."""

import ismrmrd
import ismrmrd.xsd
import numpy as np
import pytest

from vne_inline.geometry import plane_from_normal
from vne_inline.io import ExamHeader, ImageRecord, make_header_xml, parse_header, study_key
from vne_inline.io.mrd_file import read_file, write_file

GEOM = plane_from_normal([10.0, -20.0, 30.0], [0.2, -0.4, 0.9], (300.0, 240.0, 8.0), (40, 32), 12.0)


def record(value: float = 1.0, series: int = 3, **fields) -> ImageRecord:
    data = (np.arange(32 * 40, dtype=np.float32).reshape(32, 40) * value)
    return ImageRecord.new(data, GEOM, {"GADGETRON_DataRole": "T1", "Multi": ["a", "b"]},
                           image_series_index=series, **fields)


def test_record_round_trip_through_ismrmrd_image_bytes():
    r = record(slice=2, phase=5, set=1)
    image = ismrmrd.Image.from_bytes(r.to_ismrmrd().to_bytes())
    back = ImageRecord.from_ismrmrd(image)
    np.testing.assert_array_equal(back.data, r.data)
    assert (back.slice, back.phase, back.set, back.series_index) == (2, 5, 1, 3)
    assert back.meta == {"GADGETRON_DataRole": "T1", "Multi": ["a", "b"]}
    assert back.geometry.compare(GEOM).distance_mm == pytest.approx(0.0, abs=1e-4)
    assert back.meta_float("missing", 7.0) == 7.0
    assert back.meta_str("Multi") == "a\\b"


def test_record_rejects_bad_shapes_and_fields():
    with pytest.raises(ValueError, match="does not match geometry"):
        ImageRecord.new(np.zeros((5, 5), np.float32), GEOM)
    with pytest.raises(AttributeError, match="no field"):
        ImageRecord.new(np.zeros((32, 40), np.float32), GEOM, bogus=1)
    with pytest.raises(ValueError, match="cha, z, y, x"):
        ImageRecord(data=np.zeros((3, 3)), head=ismrmrd.ImageHeader())


def test_header_is_valid_ismrmrd_and_parses():
    exam = ExamHeader(study_uid="2.25.123", frame_of_reference_uid="2.25.456", protocol_name="ShMOLLI",
                      field_strength_t=1.5)
    xml = make_header_xml(exam, "SYNTH-0001", (256, 208), (288.0, 234.0, 8.0), n_slices=3, n_sets=7,
                          ti_ms=[100.0, 180.0])
    parsed = ismrmrd.xsd.CreateFromDocument(xml)
    assert parsed.subjectInformation.patientID == "SYNTH-0001"
    assert parsed.encoding[0].encodingLimits.set.maximum == 6
    facts = parse_header(xml)
    assert facts == ExamHeader(**{**exam.__dict__, "n_sets": 7})
    assert "SYNTH-0001" not in repr(facts)


def test_study_key_is_one_way_and_falls_back():
    a = make_header_xml(ExamHeader(study_uid="2.25.1"), "P", (8, 8), (8.0, 8.0, 8.0))
    b = make_header_xml(ExamHeader(study_uid="2.25.2"), "P", (8, 8), (8.0, 8.0, 8.0))
    c = make_header_xml(ExamHeader(frame_of_reference_uid="2.25.9"), "P", (8, 8), (8.0, 8.0, 8.0))
    ka, kb, kc = study_key(a), study_key(b), study_key(c)
    assert len({ka, kb, kc}) == 3 and all(len(k) == 32 for k in (ka, kb, kc))
    assert "2.25.1" not in ka
    assert study_key(make_header_xml(ExamHeader(), "P", (8, 8), (8.0, 8.0, 8.0))) is None
    assert study_key("not xml at all") is None
    with pytest.raises(ValueError, match="not a valid ISMRMRD header"):
        parse_header("<foo/>")


def test_file_round_trip_opens_with_ismrmrd_dataset(tmp_path):
    path = tmp_path / "t1map.h5"
    xml = make_header_xml(ExamHeader(study_uid="2.25.7"), "SYNTH", (40, 32), (300.0, 240.0, 8.0))
    recs = [record(1.0, slice=s) for s in range(3)] + [record(2.0, series=2, set=k) for k in range(2)]
    counts = write_file(path, xml, recs)
    assert counts == {"image_3": 3, "image_2": 2}
    with ismrmrd.Dataset(str(path), "dataset", mode="r") as ds:
        assert set(ds.list()) == {"xml", "image_3", "image_2"}
        assert ds.number_of_images("image_3") == 3
        ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
    f = read_file(path)
    assert f.header_xml == xml
    assert [r.slice for r in f.groups["image_3"]] == [0, 1, 2]
    np.testing.assert_array_equal(f.groups["image_2"][1].pixels, recs[4].pixels)
    assert len(f.records()) == 5


def test_write_refuses_shape_change_within_group(tmp_path):
    small = ImageRecord.new(np.zeros((4, 4), np.float32),
                            plane_from_normal([0, 0, 0], [0, 0, 1], (4.0, 4.0, 8.0), (4, 4)),
                            image_series_index=3)
    with pytest.raises(ValueError, match="does not fit"):
        write_file(tmp_path / "x.h5", None, [record(), small])


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ValueError, match="truncated.h5"):
        read_file(bad)
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="no 'dataset' group"):
        read_file(tmp_path / "other.h5")
