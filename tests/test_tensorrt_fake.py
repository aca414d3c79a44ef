"""The TensorRT backend against a fake `tensorrt` module, a fake CUDA driver and fake device memory:
engine cache key, cache hits, rebuilds, the driver probe, execution, and the fallback of "auto"."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from vne_inline.infer import BackendError, cuda_probe, load_backend
from vne_inline.infer import select as select_module
from vne_inline.infer import tensorrt as trt_backend
from vne_inline.infer.cuda_probe import GpuInfo, probe_cuda
from vne_inline.infer.tensorrt import EngineOptions, Profile, TensorRTBackend, engine_key
from vne_inline.modelspec import CONFIG_KEY, ModelConfig

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

CONFIG = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, fusion_width=4, name="toy")
GPU = GpuInfo("NVIDIA Fake 80GB", (9, 0), 12080)
ENGINE_MAGIC = b"FAKE-ENGINE"


# ---------------------------------------------------------------------------------------- fakes
class FakeTensorRT(types.ModuleType):
    """Just enough of the TensorRT 10/11 Python API; records what was created, built and run."""

    def __init__(self, version: str = "10.9.0.34") -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.created: list[str] = []
        self.builds: list[dict] = []
        self.device: dict[int, np.ndarray] = {}  # fake device memory: address -> array
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, severity):
                fake.created.append("Logger")

        class NetworkDefinitionCreationFlag:
            STRONGLY_TYPED = 5

        class MemoryPoolType:
            WORKSPACE = 0

        class TimingCache:
            def __init__(self, data: bytes):
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+timing"

        class OptimizationProfile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, low, opt, high):
                self.shapes[name] = (low, opt, high)

        class BuilderConfig:
            def __init__(self):
                self.settings = {"profiles": []}

            def set_memory_pool_limit(self, pool, size):
                self.settings["workspace"] = size

            def add_optimization_profile(self, profile):
                self.settings["profiles"].append(profile.shapes)

            def create_timing_cache(self, data):
                self.settings["timing_cache_in"] = bytes(data)
                return TimingCache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Network:
            def __init__(self, flags):
                self.flags = flags

        class Builder:
            def __init__(self, logger):
                fake.created.append("Builder")

            def create_network(self, flags):
                return Network(flags)

            def create_builder_config(self):
                return BuilderConfig()

            def create_optimization_profile(self):
                return OptimizationProfile()

            def build_serialized_network(self, network, config):
                fake.builds.append({"flags": network.flags, **config.settings})
                return ENGINE_MAGIC + json.dumps(config.settings["profiles"]).encode()

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                return data.startswith(b"\x08")  # an ONNX ModelProto starts with ir_version (field 1, varint)

        class Context:
            def __init__(self):
                self.shapes, self.addresses = {}, {}

            def set_input_shape(self, name, shape):
                self.shapes[name] = tuple(shape)

            def set_tensor_address(self, name, address):
                self.addresses[name] = address

            def get_tensor_shape(self, name):
                b, _, h, w = self.shapes["t1"]
                return (b, 1, h, w)

            def execute_async_v3(self, stream):
                inputs = {n: fake.device[self.addresses[n]] for n in ("cine", "ir", "t1")}
                fake.device[self.addresses["vne"]][...] = 2 * inputs["t1"] + inputs["cine"].mean(1, keepdims=True)
                return True

        class Engine:
            def get_tensor_dtype(self, name):
                return "float32"

            def create_execution_context(self):
                return Context()

        class Runtime:
            def __init__(self, logger):
                fake.created.append("Runtime")

            def deserialize_cuda_engine(self, data):
                if data.startswith(b"RAISE"):
                    raise RuntimeError("engine plan from another version")
                return Engine() if data.startswith(ENGINE_MAGIC) else None

        self.Logger, self.Builder, self.Runtime, self.OnnxParser = Logger, Builder, Runtime, OnnxParser
        self.NetworkDefinitionCreationFlag, self.MemoryPoolType = NetworkDefinitionCreationFlag, MemoryPoolType
        self.nptype = lambda dtype: np.dtype(dtype).type


class FakeMemory:
    """Device memory in host arrays, shared with the fake TensorRT context through `device`."""

    stream = 1234

    def __init__(self, device: dict[int, np.ndarray]) -> None:
        self.device, self.names = device, {}

    def _store(self, name, array):
        address = 0x1000 * (1 + len(self.device))
        self.device[address] = array
        self.names[name] = address
        return address

    def put(self, name, array):
        return self._store(name, array.copy())

    def empty(self, name, shape, dtype):
        return self._store(name, np.full(shape, np.nan, dtype))

    def get(self, name):
        return self.device[self.names[name]].copy()


def write_identity_onnx(path) -> None:
    """A loadable ONNX model (vne = t1) with the toy configuration in its metadata."""
    def io(name, channels):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", channels, "height", "width"])

    graph = helper.make_graph([helper.make_node("Identity", ["t1"], ["vne"])], "identity",
                              [io("cine", 4), io("ir", 3), io("t1", 1)], [io("vne", 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    model.metadata_props.add(key=CONFIG_KEY, value=CONFIG.to_json())
    onnx.save(model, str(path))


@pytest.fixture()
def fake_trt(monkeypatch):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(select_module, "_cache", {})
    return fake


@pytest.fixture()
def gpu(monkeypatch):
    monkeypatch.setattr(trt_backend, "probe_cuda", lambda: GPU)


@pytest.fixture()
def model(tmp_path):
    path = tmp_path / "model.onnx"
    write_identity_onnx(path)
    return path


def backend(model, fake, tmp_path, build=False, **profile) -> TensorRTBackend:
    options = EngineOptions(cache_dir=tmp_path / "engines", build_if_missing=build, profile=Profile(**profile))
    return TensorRTBackend(model, options, memory=FakeMemory(fake.device))


# ---------------------------------------------------------------------------------------- tests
def test_engine_key_changes_with_each_component():
    base = engine_key("a" * 64, "10.9.0", GPU, Profile())
    variants = [
        engine_key("b" * 64, "10.9.0", GPU, Profile()),
        engine_key("a" * 64, "11.4.0", GPU, Profile()),
        engine_key("a" * 64, "10.9.0", GpuInfo("NVIDIA Other", (9, 0), 12080), Profile()),
        engine_key("a" * 64, "10.9.0", GpuInfo(GPU.name, (8, 9), 12080), Profile()),
        engine_key("a" * 64, "10.9.0", GPU, Profile(max_batch=4)),
        engine_key("a" * 64, "10.9.0", GPU, Profile(opt_size=192)),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    assert engine_key("a" * 64, "10.9.0", GpuInfo(GPU.name, (9, 0), 13000), Profile()) == base  # driver not part


def test_missing_engine_is_an_error_unless_building_is_allowed(model, fake_trt, gpu, tmp_path):
    with pytest.raises(BackendError, match="no TensorRT engine .*build_engine.py") as info:
        backend(model, fake_trt, tmp_path)
    assert "\n" not in str(info.value) and fake_trt.builds == []
    built = backend(model, fake_trt, tmp_path, build=True)
    assert built.name == "tensorrt" and built.config == CONFIG and len(fake_trt.builds) == 1
    build = fake_trt.builds[0]
    assert build["flags"] == 1 << 5  # STRONGLY_TYPED
    assert build["workspace"] == EngineOptions().workspace_mib << 20
    (shapes,) = build["profiles"]
    assert shapes["cine"] == ((1, 4, 64, 64), (1, 4, 256, 256), (8, 4, 512, 512))
    assert shapes["t1"] == ((1, 1, 64, 64), (1, 1, 256, 256), (8, 1, 512, 512))
    files = sorted(p.suffix for p in (tmp_path / "engines").iterdir())
    assert files == [".cache", ".engine", ".json"]


def test_cache_hit_skips_the_build_and_reuses_the_timing_cache(model, fake_trt, gpu, tmp_path):
    backend(model, fake_trt, tmp_path, build=True)
    backend(model, fake_trt, tmp_path, build=True)
    backend(model, fake_trt, tmp_path)
    assert len(fake_trt.builds) == 1
    backend(model, fake_trt, tmp_path, build=True, max_batch=4)  # another profile: another engine
    assert len(fake_trt.builds) == 2
    assert fake_trt.builds[1]["timing_cache_in"] == b"+timing"  # the first build's timing cache


@pytest.mark.parametrize("damage", [b"garbage", b"RAISE"])
def test_unreadable_cached_engine_is_rebuilt(model, fake_trt, gpu, tmp_path, damage, caplog):
    backend(model, fake_trt, tmp_path, build=True)
    (engine_file,) = (tmp_path / "engines").glob("*.engine")
    engine_file.write_bytes(damage)
    with pytest.raises(BackendError, match="no TensorRT engine"):
        backend(model, fake_trt, tmp_path)
    with caplog.at_level(logging.INFO):
        backend(model, fake_trt, tmp_path, build=True)
    assert len(fake_trt.builds) == 2 and engine_file.read_bytes().startswith(ENGINE_MAGIC)
    assert any("cannot be deserialised; rebuilding" in r.getMessage() for r in caplog.records)


def test_run_binds_shapes_and_addresses_and_checks_the_profile(model, fake_trt, gpu, tmp_path):
    trt = backend(model, fake_trt, tmp_path, build=True)
    rng = np.random.default_rng(0)
    batch = {n: rng.random((2, c, 64, 96), dtype=np.float32) for n, c in (("cine", 4), ("ir", 3), ("t1", 1))}
    out = trt.run(batch)
    assert out.shape == (2, 1, 64, 96) and out.dtype == np.float32
    np.testing.assert_allclose(out, 2 * batch["t1"] + batch["cine"].mean(1, keepdims=True), rtol=1e-6)
    small = {n: a[:, :, :32, :32] for n, a in batch.items()}
    with pytest.raises(BackendError, match="outside the engine's profile"):
        trt.run(small)


def test_no_driver_means_a_one_line_error_and_no_tensorrt_object(model, fake_trt, tmp_path, monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(cuda_probe.ctypes, "CDLL", missing)
    with pytest.raises(BackendError, match="no CUDA driver") as info:
        backend(model, fake_trt, tmp_path, build=True)
    assert "\n" not in str(info.value) and fake_trt.created == []


class FakeDriver:
    """libcuda.so.1 through ctypes: results by name, out-parameters written through byref()._obj."""

    def __init__(self, init_result: int = 0, devices: int = 1) -> None:
        self.init_result, self.devices = init_result, devices

    def cuInit(self, flags):
        return self.init_result

    def cuGetErrorName(self, result, name_ref):
        name_ref._obj.value = {100: b"CUDA_ERROR_NO_DEVICE"}.get(result, b"CUDA_ERROR_UNKNOWN")
        return 0

    def cuDeviceGetCount(self, ref):
        ref._obj.value = self.devices
        return 0

    def cuDeviceGet(self, ref, ordinal):
        ref._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, buffer, size, device):
        buffer.value = b"NVIDIA Fake 80GB"
        return 0

    def cuDeviceGetAttribute(self, ref, attribute, device):
        ref._obj.value = {75: 9, 76: 0}[attribute]
        return 0

    def cuDriverGetVersion(self, ref):
        ref._obj.value = 12080
        return 0


def test_driver_probe_reads_the_device_and_reports_driver_errors(monkeypatch):
    monkeypatch.setattr(cuda_probe.ctypes, "CDLL", lambda name: FakeDriver())
    assert probe_cuda() == GPU
    assert GPU.capability == "9.0"
    monkeypatch.setattr(cuda_probe.ctypes, "CDLL", lambda name: FakeDriver(init_result=100))
    with pytest.raises(BackendError, match="cuInit failed: CUDA_ERROR_NO_DEVICE"):
        probe_cuda()
    monkeypatch.setattr(cuda_probe.ctypes, "CDLL", lambda name: FakeDriver(devices=0))
    with pytest.raises(BackendError, match="no CUDA device 0"):
        probe_cuda()


def test_auto_falls_back_to_onnxruntime_without_an_engine(model, fake_trt, gpu, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VNE_INLINE_ENGINE_CACHE", str(tmp_path / "engines"))
    monkeypatch.delenv("VNE_INLINE_TRT_BUILD", raising=False)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with caplog.at_level(logging.INFO, logger="vne_inline.infer.select"):
        chosen = load_backend("auto", model, threads=1)
    assert chosen.name == "onnxruntime" and fake_trt.builds == []
    skipped = [r.getMessage() for r in caplog.records if "tensorrt skipped" in r.getMessage()]
    assert len(skipped) == 1 and "no TensorRT engine for model.onnx on NVIDIA Fake 80GB" in skipped[0]


def test_build_if_missing_follows_the_environment(monkeypatch):
    monkeypatch.setenv("VNE_INLINE_TRT_BUILD", "1")
    assert EngineOptions().build_if_missing
    monkeypatch.setenv("VNE_INLINE_TRT_BUILD", "0")
    assert not EngineOptions().build_if_missing


def test_build_script_fills_the_cache_the_backend_reads(model, fake_trt, gpu, tmp_path, monkeypatch, capsys):
    script = Path(__file__).parents[1] / "trt_build" / "build_engine.py"
    spec = importlib.util.spec_from_file_location("build_engine", script)
    build_engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_engine)
    monkeypatch.setattr(trt_backend, "device_memory", lambda: FakeMemory(fake_trt.device))
    monkeypatch.setattr(sys, "argv", ["build_engine.py", "--onnx", str(model), "--cache-dir", str(tmp_path / "engines")])
    assert build_engine.main() == 0
    assert "engine ready: tensorrt 10.9.0.34, NVIDIA Fake 80GB (sm 9.0)" in capsys.readouterr().out
    backend(model, fake_trt, tmp_path)  # the inline default (no building) finds it
    assert len(fake_trt.builds) == 1


def test_tensorrt_prefers_the_fp16_sibling_and_cpu_backends_keep_fp32(model, fake_trt, gpu, tmp_path, monkeypatch):
    write_identity_onnx(model.with_suffix(".fp16.onnx"))
    monkeypatch.setenv("VNE_INLINE_ENGINE_CACHE", str(tmp_path / "engines"))
    monkeypatch.setenv("VNE_INLINE_TRT_BUILD", "1")
    monkeypatch.setattr(trt_backend, "device_memory", lambda: FakeMemory(fake_trt.device))
    assert load_backend("tensorrt", model).detail.split(", ")[2] == "model.fp16.onnx"
    assert load_backend("onnxruntime", model, threads=1).detail.endswith("model.onnx")
