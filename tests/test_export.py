"""ONNX export: a clean single-file model, its metadata, and parity with PyTorch (fp32 and fp16)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from scipy.ndimage import gaussian_filter  # noqa: E402

from vne_inline.core.normalise import INPUT_NAMES, ModelInputs, prepare_inputs, stack_batch  # noqa: E402
from vne_inline.infer.base import OUTPUT_NAME  # noqa: E402
from vne_inline.infer.export import OPSET, export_onnx  # noqa: E402
from vne_inline.infer.onnx_meta import read_metadata, read_onnx_config  # noqa: E402
from vne_inline.infer.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from vne_inline.model.generator import VNEGenerator, save_weights  # noqa: E402
from vne_inline.modelspec import ModelConfig  # noqa: E402

CONFIG = ModelConfig(n_cine_frames=6, n_ir_images=5, base_width=4, depth=3, fusion_width=8, name="tiny")
FP32_LIMIT, FP16_LIMIT = 1e-4, 3e-3
SHMOLLI_TI_MS = np.array([100, 180, 260, 1100, 2100, 3100, 4100], dtype=np.float32)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max|b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def model() -> VNEGenerator:
    torch.manual_seed(0)
    net = VNEGenerator(CONFIG).eval()
    with torch.no_grad():  # non-trivial norm affine parameters, as after training
        for name, p in net.named_parameters():
            if "1.weight" in name or "1.bias" in name:
                p.add_(0.3 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> dict[str, object]:
    """fp32 from a weights file, fp16 from the model object (both ways export_onnx is called)."""
    out = tmp_path_factory.mktemp("onnx")
    save_weights(model, out / "model.safetensors")
    return {
        "fp32": export_onnx(out / "model.safetensors", out / "fp32.onnx"),
        "fp16": export_onnx(model, out / "fp16.onnx", fp16=True),
    }


def reference(model: VNEGenerator, batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(batch[n]) for n in INPUT_NAMES)).numpy()


def realistic_slice(h: int = 100, w: int = 84, seed: int = 1) -> ModelInputs:
    """A short-axis-like slice from smooth blobs: LV blood pool, myocardial ring with a lesion, smooth
    background; cine (25 phases, contracting), ShMOLLI-like IR images and a noisy T1 map (ms)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w].astype(np.float32)
    r = np.hypot(y - 0.5 * h, x - 0.45 * w)
    background = 1000 + gaussian_filter(rng.normal(0, 300, (h, w)), 6) * 4
    blood, myo = r < 14, (r >= 14) & (r < 24)
    lesion = myo & (np.hypot(y - 0.5 * h + 18, x - 0.45 * w) < 6)
    t1 = np.where(blood, 1500, np.where(myo, 960, background)) + 220 * lesion + rng.normal(0, 30, (h, w))
    a, b = 1.0, 1.9
    t1_star = t1 / (b / a - 1)
    ir = 800 * np.abs(a - b * np.exp(-SHMOLLI_TI_MS[:, None, None] / t1_star[None]))
    ir += rng.normal(0, 10, ir.shape)
    phases = []
    for p in range(25):
        squeeze = 1 - 0.25 * np.sin(np.pi * p / 25) ** 2
        rp = r / squeeze
        signal = np.where(rp < 14, 2.0, np.where(rp < 24 / squeeze**0.5, 1.0, 0.8))
        phases.append(gaussian_filter(400 * signal, 1.0) + rng.normal(0, 8, (h, w)))
    return prepare_inputs(np.abs(np.array(phases)), np.abs(ir), SHMOLLI_TI_MS, t1, CONFIG)


def test_single_file_model_with_named_dynamic_io(exported):
    for precision, path in exported.items():
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto, full_check=True)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
        assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == OPSET >= 17
        io = {v.name: v.type.tensor_type for v in [*proto.graph.input, *proto.graph.output]}
        assert list(io) == [*INPUT_NAMES, OUTPUT_NAME]
        for t in io.values():
            assert t.elem_type == onnx.TensorProto.FLOAT  # both variants take and return float32
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            assert dims[0] == "batch" and dims[2:] == ["height", "width"]
        assert not any(node.metadata_props for node in proto.graph.node)  # no exporter stack traces
        assert read_onnx_config(path) == CONFIG
        assert read_metadata(path)["vne_precision"] == precision


def test_fp16_graph_is_strongly_typed_with_float32_norms(exported):
    proto = onnx.load(str(exported["fp16"]))
    dtypes = {t.name: t.data_type for t in proto.graph.initializer}
    kinds = {}
    for node in proto.graph.node:
        for name in node.input[1:]:
            if name in dtypes:
                kinds.setdefault(node.op_type, set()).add(dtypes[name])
    assert kinds["Conv"] == {onnx.TensorProto.FLOAT16}
    assert kinds["InstanceNormalization"] == {onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("precision, limit", [("fp32", FP32_LIMIT), ("fp16", FP16_LIMIT)])
def test_parity_on_random_inputs(model, exported, precision, limit):
    backend = OnnxRuntimeBackend(exported[precision], threads=2)
    rng = np.random.default_rng(7)
    m = CONFIG.size_multiple
    for b, h, w in [(1, 4 * m, 4 * m), (3, 5 * m, 2 * m)]:
        batch = {n: rng.random((b, c, h, w), dtype=np.float32) for n, c in zip(INPUT_NAMES, (6, 5, 1), strict=True)}
        out = backend.run(batch)
        assert out.shape == (b, 1, h, w) and out.dtype == np.float32
        assert relative_error(out, reference(model, batch)) < limit


@pytest.mark.parametrize("precision, limit", [("fp32", FP32_LIMIT), ("fp16", FP16_LIMIT)])
def test_parity_on_a_realistic_slice(model, exported, precision, limit):
    batch, _ = stack_batch([realistic_slice()], CONFIG.size_multiple)
    out = OnnxRuntimeBackend(exported[precision], threads=2).run(batch)
    assert relative_error(out, reference(model, batch)) < limit


def test_openvino_matches_pytorch(model, exported):
    pytest.importorskip("openvino")
    from vne_inline.infer.openvino_backend import OpenVinoBackend

    batch, _ = stack_batch([realistic_slice()], CONFIG.size_multiple)
    expected = reference(model, batch)
    assert relative_error(OpenVinoBackend(exported["fp32"], threads=2).run(batch), expected) < FP32_LIMIT
    assert relative_error(OpenVinoBackend(exported["fp16"], threads=2).run(batch), expected) < FP16_LIMIT
