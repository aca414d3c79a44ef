"""TensorRT on an NVIDIA GPU (the optional `gpu` extra): engine cache, engine build, execution.

An engine is a compiled plan tied to the ONNX model, the TensorRT version, the GPU model and compute
capability and the optimisation profile (batch and image-size range); it is cached on disk under a
key made of all five (:func:`engine_key`). Building takes minutes, so a backend never builds inside a
scan unless told to (:attr:`EngineOptions.build_if_missing`, env ``VNE_INLINE_TRT_BUILD=1``): a
missing engine is a :class:`BackendError`, and ``load_backend("auto")`` moves on to the next backend.
Build engines ahead with ``trt_build/build_engine.py``.

The CUDA driver is probed (:func:`probe_cuda`) before any TensorRT object is created. Networks are
built strongly typed (TensorRT 11 knows no other kind; 10.x opts in): export with ``--fp16`` for an
FP16 engine. Execution: ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3`` on a CUDA stream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vne_inline.core.normalise import INPUT_NAMES
from vne_inline.infer.base import MAX_BATCH, OUTPUT_NAME, BackendError, check_batch
from vne_inline.infer.cuda_probe import GpuInfo, probe_cuda
from vne_inline.infer.gpu_memory import DeviceMemory, device_memory
from vne_inline.infer.onnx_meta import read_onnx_config
from vne_inline.modelspec import ModelConfig

__all__ = [
    "EngineOptions", "Profile", "TensorRTBackend", "build_engine", "default_cache_dir", "engine_key", "load_engine",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """The optimisation profile: batch and image size (H and W, pixels) ranges the engine accepts."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = MAX_BATCH
    min_size: int = 64
    opt_size: int = 256
    max_size: int = 512

    def shapes(self, channels: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes (B, C, H, W) for an input of `channels` channels."""
        sizes = ((self.min_batch, self.min_size), (self.opt_batch, self.opt_size), (self.max_batch, self.max_size))
        low, opt, high = ((b, channels, s, s) for b, s in sizes)
        return low, opt, high

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """True when a (B, C, H, W) input lies inside the profile."""
        b, _, h, w = shape
        return self.min_batch <= b <= self.max_batch and all(self.min_size <= s <= self.max_size for s in (h, w))

    def describe(self) -> str:
        return (f"batch {self.min_batch}-{self.opt_batch}-{self.max_batch}, "
                f"size {self.min_size}-{self.opt_size}-{self.max_size}")


def default_cache_dir() -> Path:
    """``$VNE_INLINE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/vne-inline/tensorrt`` (``~/.cache/...``)."""
    if os.environ.get("VNE_INLINE_ENGINE_CACHE"):
        return Path(os.environ["VNE_INLINE_ENGINE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vne-inline" / "tensorrt"


@dataclass(frozen=True)
class EngineOptions:
    """Where engines live, whether a missing one may be built now, the profile and the build workspace (MiB)."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    build_if_missing: bool = field(default_factory=lambda: os.environ.get("VNE_INLINE_TRT_BUILD") == "1")
    profile: Profile = Profile()
    workspace_mib: int = 4096


def engine_key(onnx_sha256: str, trt_version: str, gpu: GpuInfo, profile: Profile) -> str:
    """Cache key of an engine: a hash of the ONNX file's SHA-256, TensorRT version, GPU name, compute capability, profile."""
    parts = [onnx_sha256, trt_version, gpu.name, gpu.capability, json.dumps(asdict(profile))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_engine(trt, onnx: bytes, config: ModelConfig, profile: Profile, workspace_mib: int,
                 timing_cache: Path) -> bytes:
    """Serialized engine from ONNX bytes (strongly typed network, one profile), reusing and updating
    the `timing_cache` file; BackendError when TensorRT cannot parse or build it."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse the ONNX model: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    shapes = builder.create_optimization_profile()
    channels = {"cine": config.n_cine_frames, "ir": config.n_ir_images, "t1": 1}
    for name in INPUT_NAMES:
        shapes.set_shape(name, *profile.shapes(channels[name]))
    builder_config.add_optimization_profile(shapes)
    cache = builder_config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    builder_config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise BackendError("TensorRT could not build an engine (see the TensorRT log above)")
    _write_atomic(timing_cache, bytes(builder_config.get_timing_cache().serialize()))
    return bytes(serialized)


def _timing_cache_path(cache_dir: Path, trt_version: str, gpu: GpuInfo) -> Path:
    """Timing caches hold kernel timings of one GPU model under one TensorRT version."""
    tag = hashlib.sha256(f"{trt_version}\n{gpu.name}\n{gpu.capability}".encode()).hexdigest()[:16]
    return cache_dir / f"timing-{tag}.cache"


def _deserialize(runtime, data: bytes):
    try:
        return runtime.deserialize_cuda_engine(data)
    except Exception:  # a damaged or foreign engine: TensorRT returns None or raises, depending on version
        return None


def load_engine(trt, runtime, onnx_path: Path, gpu: GpuInfo, options: EngineOptions):
    """(engine, engine file): the cached engine for this ONNX file, TensorRT version, GPU and profile;
    built (and cached) when missing or unreadable and `options.build_if_missing`, else BackendError."""
    onnx = onnx_path.read_bytes()
    digest = hashlib.sha256(onnx).hexdigest()
    key = engine_key(digest, trt.__version__, gpu, options.profile)
    path = options.cache_dir / f"vne-{key}.engine"
    if path.is_file():
        engine = _deserialize(runtime, path.read_bytes())
        if engine is not None:
            return engine, path
        log.warning("cached TensorRT engine %s cannot be deserialised; %s", path.name,
                    "rebuilding it" if options.build_if_missing else "ignoring it")
    if not options.build_if_missing:
        raise BackendError(
            f"no TensorRT engine for {onnx_path.name} on {gpu.name} in {options.cache_dir} "
            "(build one with trt_build/build_engine.py, or set VNE_INLINE_TRT_BUILD=1)"
        )
    log.info("building a TensorRT engine for %s on %s (%s); this takes minutes",
             onnx_path.name, gpu.name, options.profile.describe())
    serialized = build_engine(trt, onnx, read_onnx_config(onnx_path), options.profile, options.workspace_mib,
                              _timing_cache_path(options.cache_dir, trt.__version__, gpu))
    _write_atomic(path, serialized)
    _write_atomic(path.with_suffix(".json"), json.dumps({
        "onnx": onnx_path.name, "onnx_sha256": digest, "tensorrt": trt.__version__,
        "gpu": gpu.name, "compute_capability": gpu.capability, "profile": asdict(options.profile),
    }, indent=2).encode())
    engine = _deserialize(runtime, serialized)
    if engine is None:
        raise BackendError(f"TensorRT cannot deserialise the engine it just built ({path.name})")
    return engine, path


class TensorRTBackend:
    """An ONNX model as a cached TensorRT engine on CUDA device 0."""

    name = "tensorrt"

    def __init__(self, path: str | Path, options: EngineOptions | None = None,
                 memory: DeviceMemory | None = None) -> None:
        path = Path(path)
        gpu = probe_cuda()  # before any TensorRT object: without a GPU a TensorRT runtime can abort the process
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError(f"tensorrt is not installed ({exc}); pip install 'vne-inline[gpu]'") from exc
        self._options = options or EngineOptions()
        try:
            self.config = read_onnx_config(path)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine, engine_file = load_engine(trt, self._runtime, path, gpu, self._options)
        self._context = self._engine.create_execution_context()
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in (*INPUT_NAMES, OUTPUT_NAME)}
        self._memory = memory or device_memory()
        self._lock = threading.Lock()  # one execution context and one set of buffers: one call at a time
        self.detail = (f"tensorrt {trt.__version__}, {gpu.name} (sm {gpu.capability}), "
                       f"{path.name}, engine {engine_file.name}")

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Padded inputs (B, C, Hp, Wp) -> output (B, 1, Hp, Wp) float32; BackendError outside the profile."""
        arrays = check_batch(batch, self.config)
        shape = arrays["t1"].shape
        if not self._options.profile.accepts(shape):
            raise BackendError(f"batch {shape} is outside the engine's profile ({self._options.profile.describe()})")
        with self._lock:
            for name in INPUT_NAMES:
                array = np.ascontiguousarray(arrays[name], dtype=self._dtypes[name])
                self._context.set_input_shape(name, array.shape)
                self._context.set_tensor_address(name, self._memory.put(name, array))
            out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
            out_address = self._memory.empty(OUTPUT_NAME, out_shape, self._dtypes[OUTPUT_NAME])
            self._context.set_tensor_address(OUTPUT_NAME, out_address)
            if not self._context.execute_async_v3(self._memory.stream):
                raise BackendError("TensorRT execution failed (see the TensorRT log)")
            return self._memory.get(OUTPUT_NAME).astype(np.float32, copy=False)
