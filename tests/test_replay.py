"""Offline replay: files as connections, in order, through one core; output file and the CLI table."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
from test_pipeline import (  # the shared exam builders
    CINE_HEADER,
    T1_HEADER,
    VNE_SERIES,
    FakeBackend,
    cine_records,
    make_core,
    t1_records,
)

from vne_inline.adapters.replay import replay_files, write_outputs
from vne_inline.core.t1_fit import DEFAULT_T1_SERIES
from vne_inline.io.mrd_file import read_file, write_file
from vne_inline.modelspec import CONFIG_KEY

onnx = pytest.importorskip("onnx")


@pytest.fixture
def exam_files(tmp_path):
    """A cine file and a T1-mapping file of one study, as the scanner exports them."""
    cine, t1 = tmp_path / "cine.h5", tmp_path / "t1map.h5"
    write_file(cine, CINE_HEADER, cine_records())
    write_file(t1, T1_HEADER, t1_records())
    return cine, t1


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """A tiny ONNX model with the generator's interface: vne = t1 + mean(cine) - mean(ir)."""
    from onnx import TensorProto, helper

    config = FakeBackend().config
    path = tmp_path_factory.mktemp("model") / "toy.onnx"

    def io(name, channels):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height", "width"])

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("ReduceMean", ["cine", "axes"], ["c"], keepdims=1),
             helper.make_node("ReduceMean", ["ir", "axes"], ["i"], keepdims=1),
             helper.make_node("Add", ["t1", "c"], ["s"]),
             helper.make_node("Sub", ["s", "i"], ["vne"])]
    graph = helper.make_graph(nodes, "toy", [io("cine", config.n_cine_frames), io("ir", config.n_ir_images),
                                             io("t1", 1)], [io("vne", 1)], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    model.metadata_props.add(key=CONFIG_KEY, value=config.to_json())
    onnx.save(model, str(path))
    return path


def test_replay_files_in_order_and_write_series_groups(tmp_path, exam_files):
    results = replay_files(make_core(tmp_path), exam_files)
    assert [r.name for r in results] == ["cine.h5", "t1map.h5"]
    assert results[0].reports == [] and [r.made for r in results[1].reports] == [True, True]
    counts = write_outputs(tmp_path / "out.h5", results)
    assert counts == {"image_1": 30, "image_2": 10, "image_3": 2, f"image_{VNE_SERIES}": 2}
    back = read_file(tmp_path / "out.h5")
    assert back.header_xml == CINE_HEADER
    vne = back.groups[f"image_{VNE_SERIES}"]
    assert [v.meta["GADGETRON_DataRole"] for v in vne] == ["VNE", "VNE"]
    with ismrmrd.Dataset(str(tmp_path / "out.h5"), "dataset", mode="r") as ds:
        assert ds.number_of_images(f"image_{VNE_SERIES}") == 2


def test_reverse_order_makes_the_vne_on_the_cine_file(tmp_path, exam_files):
    cine, t1 = exam_files
    results = replay_files(make_core(tmp_path), [t1, cine])
    assert [r.made for r in results[0].reports] == [False, False]
    assert [r.made for r in results[1].reports] == [True, True]
    assert sum(o.series_index == VNE_SERIES for o in results[1].outputs) == 2


def test_unreadable_file_names_itself(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="broken.h5"):
        replay_files(make_core(tmp_path), [bad])


# ---------------------------------------------------------------------------- command line
def _invoke(args):
    from typer.testing import CliRunner

    from vne_inline.cli import inline_cmds  # noqa: F401  (registers replay and demo)
    from vne_inline.cli.app import app

    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def test_cli_replay_prints_a_table_and_writes_the_file(tmp_path, exam_files, toy_model):
    out = tmp_path / "out.h5"
    result = _invoke(["replay", *map(str, exam_files), "--out", str(out), "--model", str(toy_model),
                      "--backend", "onnxruntime", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "VNE per T1 slice" in result.output and result.output.count("made") >= 2
    assert "t1map.h5" in result.output
    vne = read_file(out).groups[f"image_{VNE_SERIES}"]
    assert len(vne) == 2 and all(np.isfinite(v.data).all() and v.data.max() > 0 for v in vne)


def test_cli_replay_without_a_model_passes_images_says_why_and_exits_3(tmp_path, exam_files):
    out = tmp_path / "out.h5"
    result = _invoke(["replay", *map(str, exam_files), "--out", str(out), "--model", str(tmp_path / "none.onnx"),
                      "--backend", "onnxruntime"])
    assert result.exit_code == 3, result.output
    assert "skipped" in result.output and "backend unavailable" in result.output
    assert "error: no VNE made from 2 T1-map slice(s): backend unavailable" in result.output
    assert f"image_{VNE_SERIES}" not in read_file(out).groups and len(read_file(out).records()) == 42


def test_cli_replay_store_persists_between_runs(tmp_path, exam_files, toy_model):
    cine, t1 = exam_files
    store = tmp_path / "store"
    common = ["--model", str(toy_model), "--backend", "onnxruntime", "--store", str(store)]
    assert _invoke(["replay", str(cine), "--out", str(tmp_path / "a.h5"), *common]).exit_code == 0
    result = _invoke(["replay", str(t1), "--out", str(tmp_path / "b.h5"), *common])
    assert result.exit_code == 0, result.output
    assert len(read_file(tmp_path / "b.h5").groups[f"image_{VNE_SERIES}"]) == 2


def test_cli_demo_fails_clearly_without_the_default_model(tmp_path, monkeypatch):
    from vne_inline.infer import base

    monkeypatch.setattr(base, "DEFAULT_ONNX", tmp_path / "missing.onnx")
    result = _invoke(["demo", "--out", str(tmp_path / "demo"), "--backend", "onnxruntime"])
    assert result.exit_code == 1
    assert "missing.onnx" in result.output and "not built yet" in result.output
    assert not (tmp_path / "demo").exists()


def test_cli_demo_replays_a_synthetic_exam(tmp_path, toy_model):
    out = tmp_path / "demo"
    result = _invoke(["demo", "--out", str(out), "--model", str(toy_model), "--backend", "onnxruntime",
                      "--threads", "1", "--seed", "8"])  # seed 8: the patient's LGE has respiratory ghosts
    assert result.exit_code == 0, result.output
    groups = read_file(out / "vne.h5").groups
    assert len(groups[f"image_{VNE_SERIES}"]) == len(groups["image_3"]) == 3
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Lesion burden" in result.output and "FWHM" in result.output and "ground truth" in result.output
    assert result.output.count("made") >= 3
    assert "LGE graded non-diagnostic on 3 slice(s) (respiratory ghosts" in " ".join(result.output.split())


def test_cli_replay_refuses_to_overwrite_an_input(tmp_path, exam_files):
    cine, t1 = exam_files
    before = t1.read_bytes()
    result = _invoke(["replay", str(cine), str(t1), "--out", str(t1)])
    assert result.exit_code == 2 and "is one of the input files" in result.output
    assert t1.read_bytes() == before


def test_cli_replay_unusable_input_exits_2_with_the_reason(tmp_path):
    broken, raw, empty = tmp_path / "broken.h5", tmp_path / "meas.h5", tmp_path / "empty.h5"
    broken.write_bytes(b"not hdf5")
    with ismrmrd.Dataset(str(raw), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(CINE_HEADER.encode())
        acq = ismrmrd.Acquisition.from_array(np.zeros((2, 64), np.complex64))
        for _ in range(3):
            ds.append_acquisition(acq)
    write_file(empty, CINE_HEADER, [])
    for path, why in ((broken, "not a readable HDF5 file"), (raw, "raw data (3 acquisitions, no images)"),
                      (empty, "no images")):
        result = _invoke(["replay", str(path), "--out", str(tmp_path / "out.h5")])
        assert result.exit_code == 2, result.output
        assert f"error: {path.name}: {why}" in result.output and "Traceback" not in result.output


def test_cli_replay_of_a_cine_alone_exits_0_and_says_no_t1_was_given(tmp_path, exam_files):
    result = _invoke(["replay", str(exam_files[0]), "--out", str(tmp_path / "out.h5"), "--model",
                      str(tmp_path / "none.onnx"), "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert "no T1-map slice in the input" in result.output


def test_cli_replay_role_rules_classify_untagged_series(tmp_path, toy_model):
    cine, t1 = tmp_path / "cine.h5", tmp_path / "t1map.h5"
    write_file(cine, CINE_HEADER, cine_records())
    records = t1_records()
    for r in records:
        r.meta.pop("GADGETRON_DataRole", None)  # a site whose maps carry no role tag
        r.meta.pop("GADGETRON_SeqDescription", None)
    write_file(t1, T1_HEADER, records)
    common = [str(cine), str(t1), "--model", str(toy_model), "--backend", "onnxruntime", "--threads", "1"]
    untagged = _invoke(["replay", *common, "--out", str(tmp_path / "a.h5")])  # the maps are not recognised:
    assert untagged.exit_code == 0 and "(2 VNE)" in untagged.output, untagged.output  # fitted from the IR images
    assert untagged.output.count("T1 map fitted from the IR images") == 2
    assert f"image_{DEFAULT_T1_SERIES}" in read_file(tmp_path / "a.h5").groups
    mapped = _invoke(["replay", *common, "--out", str(tmp_path / "b.h5"), "--series-roles", "3=t1map"])
    assert mapped.exit_code == 0 and "(2 VNE)" in mapped.output, mapped.output
    assert f"image_{DEFAULT_T1_SERIES}" not in read_file(tmp_path / "b.h5").groups  # the scanner's maps used
