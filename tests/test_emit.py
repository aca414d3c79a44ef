"""The emitted VNE image: header copied field by field from the T1 map, own series, meta tags."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from vne_inline.core.emit import COPIED_FIELDS, WINDOW_CENTER, WINDOW_WIDTH, model_comment, vne_record
from vne_inline.core.normalise import VNE_SCALE
from vne_inline.geometry import plane_from_normal
from vne_inline.io import ImageRecord
from vne_inline.modelspec import ModelConfig

GEOM = plane_from_normal([12.0, -30.0, 55.0], [0.3, -0.5, 0.8], (280.0, 230.0, 8.0), (56, 46), 17.0)
MODEL = ModelConfig()


def t1_map(dtype=np.float32, **meta) -> ImageRecord:
    """A T1 map with every header field set to something recognisable."""
    data = np.full((46, 56), 1000, dtype)
    record = ImageRecord.new(data, GEOM, {"GADGETRON_DataRole": "T1", "GADGETRON_ColorMap": "t1.pal",
                                          "GADGETRON_ScaleRatio": "1", **meta},
                             image_series_index=3, slice=2, phase=0, set=0, contrast=1, repetition=4, average=1,
                             image_index=7, measurement_uid=1234, acquisition_time_stamp=99,
                             flags=ismrmrd.IMAGE_LAST_IN_SLICE)
    h = record.head
    h.physiology_time_stamp[0], h.patient_table_position[2] = 450, -12.5
    h.user_int[3], h.user_float[1] = 42, 0.25
    return record


def test_header_copies_the_t1_map_and_sets_its_own_fields():
    m = t1_map(np.uint16)
    vne = vne_record(m, np.full((46, 56), 0.5, np.float32), 120, MODEL)
    for name in COPIED_FIELDS:
        a, b = getattr(vne.head, name), getattr(m.head, name)
        assert (list(a) == list(b)) if hasattr(a, "__len__") else a == b, name
    assert list(vne.head.matrix_size) == [56, 46, 1]
    assert (vne.head.image_series_index, vne.head.image_type) == (120, ismrmrd.IMTYPE_MAGNITUDE)
    assert vne.head.data_type == ismrmrd.DATATYPE_FLOAT and vne.head.channels == 1
    assert vne.data.shape == (1, 1, 46, 56) and vne.data.dtype == np.float32
    np.testing.assert_allclose(vne.pixels, 0.5 * VNE_SCALE)
    g = vne.geometry
    assert g.compare(GEOM).distance_mm == pytest.approx(0, abs=1e-5) and g.pixel_spacing == GEOM.pixel_spacing
    assert m.head.image_series_index == 3  # the map itself is untouched


def test_meta_names_vne_and_the_model_for_gadgetron_and_mrd_clients():
    m = t1_map(GADGETRON_SeqDescription="ShMOLLI_T1MAP", GADGETRON_ImageProcessingHistory=["GT", "T1"])
    meta = vne_record(m, np.zeros((46, 56), np.float32), 99, MODEL).meta
    comment = "VNE vne-default (synthetic-trained, not for clinical use)"
    assert meta["GADGETRON_DataRole"] == meta["DataRole"] == "VNE"
    assert meta["GADGETRON_SeqDescription"] == "ShMOLLI_T1MAP_VNE"
    assert meta["GADGETRON_ImageProcessingHistory"] == ["GT", "T1", "VNE"]
    assert meta["GADGETRON_ImageComment"] == meta["ImageComment"] == comment
    assert meta["SequenceDescriptionAdditional"] == "VNE"
    assert float(meta["GADGETRON_WindowCenter"]) == float(meta["WindowCenter"]) == WINDOW_CENTER
    assert float(meta["GADGETRON_WindowWidth"]) == float(meta["WindowWidth"]) == WINDOW_WIDTH
    assert "GADGETRON_ColorMap" not in meta and "GADGETRON_ScaleRatio" not in meta


def test_meta_defaults_without_description_and_for_site_trained_models():
    meta = vne_record(t1_map(), np.zeros((46, 56), np.float32), 99, ModelConfig(trained_on="site", name="m1")).meta
    assert meta["GADGETRON_SeqDescription"] == "T1MAP_VNE"
    assert meta["GADGETRON_ImageProcessingHistory"] == "VNE"
    assert meta["ImageComment"] == "VNE m1" == model_comment(ModelConfig(trained_on="site", name="m1"))


def test_survives_ismrmrd_serialisation():
    vne = vne_record(t1_map(), np.linspace(-1, 2, 46 * 56, dtype=np.float32).reshape(46, 56), 99, MODEL)
    back = ImageRecord.from_ismrmrd(ismrmrd.Image.from_bytes(vne.to_ismrmrd().to_bytes()))
    np.testing.assert_array_equal(back.data, vne.data)
    assert back.data.min() == 0  # negatives clipped by normalise.to_vne
    assert back.meta["GADGETRON_DataRole"] == "VNE" and back.series_index == 99 and back.slice == 2


def test_output_on_another_grid_is_refused():
    with pytest.raises(ValueError, match="does not match the T1 map"):
        vne_record(t1_map(), np.zeros((46, 55), np.float32), 99, MODEL)
