"""Reduced precision: CPU feature detection, the validation record (hash-keyed) and what `auto` picks,
int8 quantization of a tiny generator, and the burden comparison that accepts or rejects a precision."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from vne_inline.infer import BackendError, load_backend
from vne_inline.infer import select as select_module
from vne_inline.infer.cpu_features import matrix_features
from vne_inline.infer.precision import choose, int8_path, read_record, record_path, write_record
from vne_inline.modelspec import ModelConfig
from vne_inline.validate.contours import SliceRois
from vne_inline.validate.evaluate import Evaluation, PatientResult, SliceResult
from vne_inline.validate.precision import Candidate, _verdict, compare, summary_rows, to_markdown

CONFIG = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, fusion_width=4, name="toy")
AMX = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile\n"
ZEN3 = "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2 vaes\n"
ZEN4 = "model name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 avx512_vnni\n"


@pytest.fixture(autouse=True)
def empty_backend_cache(monkeypatch):
    monkeypatch.setattr(select_module, "_cache", {})


def test_cpu_matrix_features_are_named_from_cpuinfo():
    amx, zen3, zen4 = matrix_features(AMX), matrix_features(ZEN3), matrix_features(ZEN4)
    assert amx.names == ["AMX-BF16", "AMX-INT8", "AVX512-BF16", "AVX512-VNNI"]
    assert amx.bf16_native and amx.int8_dot and amx.precision_note("bf16") == "bf16 on AMX-BF16"
    assert amx.precision_note("int8") == "int8 on AMX-INT8"
    assert zen4.model == "AMD EPYC 9654" and zen4.bf16_native and zen4.precision_note("int8") == "int8 on AVX512-VNNI"
    assert zen3.names == [] and not zen3.bf16_native and not zen3.int8_dot
    assert zen3.describe() == "AMD EPYC: AVX2, no AMX-BF16/AMX-INT8/AVX512-BF16/AVX512-VNNI/AVX-VNNI"
    assert "no AMX-BF16 or AVX512-BF16" in zen3.precision_note("bf16")


# ---------------------------------------------------------------------------- record and choice
def _candidate(backend, precision, ms, accepted=True):
    return {"backend": backend, "precision": precision, "accepted": accepted, "ms_per_slice": ms,
            "max_burden_diff_points": 0.0 if precision == "fp32" else 0.2}


def _model(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"float32 weights")
    int8_path(onnx).write_bytes(b"int8 weights")
    return onnx


def _record(onnx, cpuinfo, candidates):
    f = matrix_features(cpuinfo)
    return write_record(onnx, {"machine": {"cpu": f.model, "features": f.names}, "validation": {"patients": 30},
                               "candidates": candidates})


def test_auto_picks_the_fastest_accepted_precision_this_cpu_runs(tmp_path):
    onnx = _model(tmp_path)
    _record(onnx, AMX, [_candidate("onnxruntime", "fp32", 74.0), _candidate("openvino", "bf16", 19.0),
                        _candidate("onnxruntime", "int8", 15.0, accepted=False), _candidate("openvino", "int8", 25.0)])
    choice, why = choose(onnx, features=matrix_features(AMX))
    assert (choice.backend, choice.precision, why) == ("openvino", "bf16", "")
    assert "19.0 ms" in choice.reason and "74.0 ms" in choice.reason and "30 synthetic patients" in choice.reason
    choice, _ = choose(onnx, "onnxruntime", matrix_features(AMX))  # the rejected int8 is never chosen
    assert (choice.backend, choice.precision) == ("onnxruntime", "fp32")
    # on a CPU without bf16 the record's timings do not apply: bf16 is left out, int8 preferred on VNNI
    choice, _ = choose(onnx, features=matrix_features(ZEN4.replace("avx512_bf16 ", "")))
    assert (choice.backend, choice.precision) == ("openvino", "int8") and "timed on another CPU" in choice.reason
    choice, _ = choose(onnx, features=matrix_features(ZEN3))
    assert (choice.backend, choice.precision) == ("onnxruntime", "fp32")


def test_a_record_is_void_for_other_weights_or_another_int8_file(tmp_path):
    onnx = _model(tmp_path)
    _record(onnx, AMX, [_candidate("onnxruntime", "fp32", 74.0), _candidate("onnxruntime", "int8", 15.0)])
    assert read_record(onnx)[0]["model_sha256"] and choose(onnx, features=matrix_features(AMX))[0].precision == "int8"
    int8_path(onnx).write_bytes(b"other int8 weights")
    assert choose(onnx, features=matrix_features(AMX))[0].precision == "fp32"
    onnx.write_bytes(b"new float32 weights")
    choice, why = choose(onnx, features=matrix_features(AMX))
    assert choice is None and "other weights" in why and "validate-precision" in why
    record_path(onnx).write_text("{not json")
    assert "unreadable" in choose(onnx)[1]
    record_path(onnx).unlink()
    assert "no precision validation" in choose(onnx)[1]


# ---------------------------------------------------------------------------- int8 model and backends
@pytest.fixture()
def tiny_model(tmp_path):
    """inputs -> Concat -> 3x3 Conv (8) -> LeakyRelu -> 3x3 Conv (1) = vne, with the config metadata."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from vne_inline.modelspec import CONFIG_KEY

    rng = np.random.default_rng(0)
    def io(name, channels):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height", "width"])

    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
               for name, shape in (("w1", (8, 8, 3, 3)), ("w2", (1, 8, 3, 3)))]
    nodes = [helper.make_node("Concat", ["cine", "ir", "t1"], ["x"], axis=1),
             helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.2),
             helper.make_node("Conv", ["a", "w2"], ["vne"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "tiny", [io("cine", 4), io("ir", 3), io("t1", 1)], [io("vne", 1)],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    model.metadata_props.add(key=CONFIG_KEY, value=CONFIG.to_json())
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def _batch(seed, size=16):
    rng = np.random.default_rng(seed)
    return {name: rng.random((1, c, size, size), dtype=np.float32) for name, c in (("cine", 4), ("ir", 3), ("t1", 1))}


def test_int8_model_runs_close_to_float32_and_auto_loads_it_when_accepted(tiny_model, tmp_path, caplog):
    from vne_inline.infer.quantize import quantize_int8

    onnx = tiny_model
    with pytest.raises(BackendError, match="no int8 model"):
        load_backend("onnxruntime", onnx, 1, "int8")
    quantize_int8(onnx, [_batch(i) for i in range(4)], int8_path(onnx), reduce_range=True)
    fp32, int8 = load_backend("onnxruntime", onnx, 1, "fp32"), load_backend("onnxruntime", onnx, 1, "int8")
    assert int8.precision == "int8" and int8.config == fp32.config and "tiny.int8.onnx" in int8.detail
    a, b = fp32.run(_batch(9)), int8.run(_batch(9))
    assert 0 < np.abs(a - b).max() < 0.1 * np.abs(a).max()  # quantized: different, but close
    assert load_backend("auto", onnx, 1).precision == "fp32"  # no record: float32
    f = matrix_features()
    write_record(onnx, {"machine": {"cpu": f.model, "features": f.names}, "validation": {"patients": 1},
                        "candidates": [_candidate("onnxruntime", "fp32", 50.0), _candidate("onnxruntime", "int8", 20.0)]})
    select_module._cache.clear()
    with caplog.at_level(logging.INFO, logger="vne_inline.infer.select"):
        chosen = load_backend("auto", onnx, 1)
    assert (chosen.name, chosen.precision) == ("onnxruntime", "int8")
    assert any(r.getMessage().startswith("precision int8 with onnxruntime: fastest accepted") for r in caplog.records)
    assert load_backend("auto", onnx, 1, "fp32").precision == "fp32"  # float32 stays available
    with pytest.raises(BackendError, match="unknown precision"):
        load_backend("auto", onnx, 1, "fp8")


# ---------------------------------------------------------------------------- the burden comparison
def _slice(vne: np.ndarray) -> SliceResult:
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    rois = SliceRois(myo=(r > 8) & (r < 14), remote=(r > 8) & (r < 14) & (xx < 20), blood=r < 6)
    return SliceResult(slice=0, pixel_area_mm2=1.0, t1_ms=np.zeros((40, 40)), vne=vne, lge=vne, rois=rois)


def _evaluation(vne: np.ndarray) -> Evaluation:
    return Evaluation("exams", "truth", "toy", [PatientResult("patient_000", [_slice(vne)])])


def test_compare_reports_burden_pixel_and_dice_differences_and_the_verdict():
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    ref = np.where(r < 6, 100.0, 10.0).astype(np.float32)
    ref[(r > 8) & (r < 14) & (xx > 30)] = 80.0  # a lesion in the free wall
    myo = int(((r > 8) & (r < 14)).sum())
    for added, accepted in ((0, True), (3, False)):
        cand = ref.copy()
        cand[20, 9 : 9 + added] = 80.0  # `added` remote pixels become lesion at every threshold
        diffs, missing = compare(_evaluation(ref), _evaluation(cand))
        (d,) = diffs
        assert missing == [] and d.worst("FWHM") == pytest.approx(100 * added / myo)
        assert d.max_abs_pixel == (70.0 if added else 0.0) and d.min_dice("FWEM") <= 1.0
        c = Candidate("onnxruntime", "int8", slices=diffs)
        _verdict(c, missing, 0.5)
        assert c.accepted is accepted and c.reason.startswith("accepted" if accepted else "rejected")
    _, missing = compare(_evaluation(ref), Evaluation("exams", "truth", "toy", []))
    c = Candidate("openvino", "bf16")
    _verdict(c, missing, 0.5)
    assert not c.accepted and "without VNE" in c.reason
    rows = summary_rows([c])
    assert rows[0][:2] == ("openvino", "bf16") and "rejected" in rows[0][-1]
    assert "| backend | precision | ms/slice |" in to_markdown([c], record_path("m.onnx"))
    json.dumps(Candidate("onnxruntime", "int8", slices=diffs).to_json())  # the record entry is JSON


@pytest.mark.slow
def test_validate_precision_end_to_end_on_a_synthetic_patient(tiny_model, tmp_path):
    from vne_inline.synth.exam import generate_patient
    from vne_inline.validate.precision import validate_precision

    exams = tmp_path / "exams"
    generate_patient(exams, seed=4040, index=0)
    candidates, path = validate_precision(exams, exams, tiny_model, threads=1, runs=1, candidates=(
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "bf16"), ("pytorch", "int8")))
    ref, int8, bf16, unknown = candidates
    assert ref.accepted and len(ref.slices) == 3 and ref.max_difference() == 0.0
    assert int8_path(tiny_model).is_file() and len(int8.slices) == 3 and int8.ms_per_slice > 0
    assert int8.accepted == (int8.max_difference() <= 0.5) and int8.reason.startswith(("accepted", "rejected"))
    assert {s.slice for s in int8.slices} == {s.slice for s in ref.slices}
    assert 0 < max(s.max_abs_pixel for s in int8.slices) < max(s.max_abs_reference for s in int8.slices)
    if not matrix_features().bf16_native:
        assert bf16.reason.startswith("not run:") and "bf16" in bf16.reason and not bf16.accepted
    assert unknown.reason.startswith("not run:") and not unknown.accepted
    record, why = read_record(tiny_model)
    assert path == record_path(tiny_model) and why == "" and record["validation"]["patients"] == 1
    assert [c["precision"] for c in record["candidates"]] == ["fp32", "int8", "bf16", "int8"]
    assert len(record["candidates"][1]["per_slice"]) == 3
