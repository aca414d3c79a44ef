"""The backend interface: predict (grouping, pad/crop, order), batch checks, model files, selection and cache.

ONNX Runtime and OpenVINO run a small hand-built ONNX graph with a known pointwise answer
(``vne = 2 t1 + mean(cine) - mean(ir)``), so pad/crop errors show as wrong pixels; the PyTorch backend
runs a tiny generator. Export parity with the real generator is in test_export.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from vne_inline.core.normalise import INPUT_NAMES, ModelInputs, crop, pad_to_multiple
from vne_inline.infer import BackendError, load_backend, predict
from vne_inline.infer import select as select_module
from vne_inline.infer.base import MAX_BATCH, check_batch, model_file
from vne_inline.infer.onnx_meta import read_metadata, read_onnx_config
from vne_inline.modelspec import CONFIG_KEY, ModelConfig

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

CONFIG = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, fusion_width=4, name="toy")


def expected_output(item: ModelInputs) -> np.ndarray:
    return 2 * item.t1[0] + item.cine.mean(axis=0) - item.ir.mean(axis=0)


def write_toy_onnx(path, config: ModelConfig = CONFIG) -> None:
    """vne = 2 t1 + mean_c(cine) - mean_c(ir), dynamic batch/height/width, with the config metadata."""
    def io(name, channels):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height", "width"])

    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [
        helper.make_node("ReduceMean", ["cine", "axes"], ["cine_mean"], keepdims=1),
        helper.make_node("ReduceMean", ["ir", "axes"], ["ir_mean"], keepdims=1),
        helper.make_node("Mul", ["t1", "two"], ["t1_twice"]),
        helper.make_node("Add", ["t1_twice", "cine_mean"], ["partial"]),
        helper.make_node("Sub", ["partial", "ir_mean"], ["vne"]),
    ]
    graph = helper.make_graph(
        nodes, "toy", [io("cine", config.n_cine_frames), io("ir", config.n_ir_images), io("t1", 1)],
        [io("vne", 1)], initializer=[axes, two],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    model.metadata_props.add(key=CONFIG_KEY, value=config.to_json())
    onnx.save(model, str(path))


def random_slice(h: int, w: int, seed: int, config: ModelConfig = CONFIG) -> ModelInputs:
    rng = np.random.default_rng(seed)
    return ModelInputs(*(rng.random((c, h, w), dtype=np.float32) for c in (config.n_cine_frames, config.n_ir_images, 1)))


@pytest.fixture()
def toy_model(tmp_path):
    path = tmp_path / "toy.onnx"
    write_toy_onnx(path)
    return path


@pytest.fixture(autouse=True)
def empty_backend_cache(monkeypatch):
    monkeypatch.setattr(select_module, "_cache", {})


def onnx_backends():
    names = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        names.append("openvino")
    except ImportError:
        pass
    return names


@pytest.mark.parametrize("name", onnx_backends())
def test_predict_pads_batches_crops_and_keeps_order(toy_model, name):
    backend = load_backend(name, toy_model, threads=1)
    assert backend.name == name and backend.config == CONFIG
    shapes = [(30, 22)] * (MAX_BATCH + 2) + [(16, 16), (31, 45), (30, 22)]  # > one batch, mixed shapes
    items = [random_slice(h, w, seed) for seed, (h, w) in enumerate(shapes)]
    outputs = predict(backend, items)
    assert len(outputs) == len(items)
    for item, out in zip(items, outputs, strict=True):
        assert out.shape == item.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, expected_output(item), rtol=1e-5, atol=1e-5)


def test_predict_batch_size_does_not_change_results(toy_model):
    backend = load_backend("onnxruntime", toy_model, threads=1)
    items = [random_slice(20, 28, seed) for seed in range(5)]
    for a, b in zip(predict(backend, items, batch_size=2), predict(backend, items, batch_size=5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_pytorch_backend_matches_the_generator_on_padded_input(tmp_path):
    torch = pytest.importorskip("torch")
    from vne_inline.model.generator import VNEGenerator, save_weights

    torch.manual_seed(0)
    save_weights(VNEGenerator(CONFIG), tmp_path / "m.safetensors")
    backend = load_backend("pytorch", tmp_path / "m.onnx", threads=1)  # sibling .safetensors is used
    assert backend.name == "pytorch" and backend.config == CONFIG
    item = random_slice(18, 13, 3)
    (out,) = predict(backend, [item])
    padded = {n: pad_to_multiple(a[None], CONFIG.size_multiple)[0] for n, a in item.arrays().items()}
    _, info = pad_to_multiple(item.t1, CONFIG.size_multiple)
    with torch.no_grad():
        raw = backend._model(*(torch.from_numpy(padded[n]) for n in INPUT_NAMES)).numpy()
    np.testing.assert_allclose(out, crop(raw, info)[0, 0], rtol=1e-5, atol=1e-6)
    # batched with other slices of the same shape, the result stays the same (per-slice normalisation)
    batched = predict(backend, [random_slice(18, 13, 4), item, random_slice(18, 13, 5)])[1]
    np.testing.assert_allclose(batched, out, rtol=1e-4, atol=1e-5)


def test_check_batch_rejects_wrong_inputs():
    m = CONFIG.size_multiple
    good = {n: np.zeros((2, c, m, 2 * m), np.float32) for n, c in zip(INPUT_NAMES, (4, 3, 1), strict=True)}
    assert check_batch(good, CONFIG)["cine"].flags.c_contiguous
    with pytest.raises(ValueError, match="exactly the inputs"):
        check_batch({"cine": good["cine"], "ir": good["ir"]}, CONFIG)
    for name, shape in [("cine", (2, 5, m, 2 * m)), ("ir", (1, 3, m, 2 * m)), ("t1", (2, 1, m + 1, 2 * m))]:
        with pytest.raises(ValueError, match="multiples of"):
            check_batch({**good, name: np.zeros(shape, np.float32)}, CONFIG)


def test_model_file_uses_the_sibling_and_reports_missing_files(tmp_path, toy_model):
    assert model_file(toy_model.with_suffix(".safetensors"), ".onnx") == toy_model
    with pytest.raises(BackendError, match="no .safetensors model file"):
        model_file(toy_model, ".safetensors")


def test_onnx_metadata_without_the_onnx_package(toy_model, tmp_path):
    assert read_onnx_config(toy_model) == CONFIG
    assert set(read_metadata(toy_model)) == {CONFIG_KEY}
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 40)
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        read_metadata(tmp_path / "bad.onnx")


def test_load_backend_caches_per_name_model_and_threads(toy_model):
    a = load_backend("onnxruntime", toy_model, threads=1)
    assert load_backend("onnxruntime", str(toy_model), threads=1) is a
    assert load_backend("onnxruntime", toy_model, threads=2) is not a


def test_auto_logs_each_skipped_backend_and_its_choice(toy_model, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # not installed
    with caplog.at_level(logging.INFO, logger="vne_inline.infer.select"):
        backend = load_backend("auto", toy_model, threads=1)
    assert backend.name == "onnxruntime"
    assert load_backend("auto", toy_model, threads=1) is backend
    assert load_backend("onnxruntime", toy_model, threads=1) is backend
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("inference backend tensorrt skipped: ")
    assert lines[1].startswith("precision fp32: no precision validation for toy.onnx")
    assert lines[2].startswith("inference backend openvino skipped: openvino is not installed")
    assert lines[3].startswith("inference backend: onnxruntime (onnxruntime ")
    assert len(lines) == 4 and all("\n" not in line for line in lines)


def test_load_failures_are_one_line_backend_errors(tmp_path, monkeypatch):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    for name in ("onnxruntime", "nonsense"):
        with pytest.raises(BackendError) as info:
            load_backend(name, tmp_path / "broken.onnx")
        assert "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendError, match="no inference backend could be loaded") as info:
        load_backend("auto", tmp_path / "missing.onnx")
    assert all(f"{name}: " in str(info.value) for name in select_module.BACKENDS)


def test_importing_the_package_loads_no_runtime():
    code = ("import sys, vne_inline.infer; heavy = {'torch', 'onnxruntime', 'openvino', 'tensorrt', 'onnx'}; "
            "print(sorted(heavy & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
