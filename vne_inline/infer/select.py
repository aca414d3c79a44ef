"""Pick and load a backend once per process.

``load_backend("auto")`` tries TensorRT -> OpenVINO -> ONNX Runtime -> PyTorch and logs one line per
backend it skipped (with the reason) and one for the one it took. Loaded backends are cached by
(name, model file, threads), so a model is loaded once per process however often it is asked for.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from vne_inline.infer.base import Backend, BackendError, model_file

__all__ = ["BACKENDS", "FP16_SUFFIX", "load_backend"]

log = logging.getLogger(__name__)

#: Backend names in the order "auto" tries them.
BACKENDS = ("tensorrt", "openvino", "onnxruntime", "pytorch")
#: TensorRT prefers the model's FP16 export next to it (``x.onnx`` -> ``x.fp16.onnx``); the CPU
#: backends keep the float32 file (float16 graphs run far slower on CPUs).
FP16_SUFFIX = ".fp16.onnx"

_cache: dict[tuple[str, str, int | None], Backend] = {}
_lock = threading.RLock()


def _construct(name: str, model: str | Path | None, threads: int | None) -> Backend:
    if name == "tensorrt":
        from vne_inline.infer.tensorrt import TensorRTBackend

        onnx = model_file(model, ".onnx")
        fp16 = onnx.with_suffix(FP16_SUFFIX)
        return TensorRTBackend(fp16 if fp16.is_file() else onnx)
    if name == "openvino":
        from vne_inline.infer.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(model_file(model, ".onnx"), threads)
    if name == "onnxruntime":
        from vne_inline.infer.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_file(model, ".onnx"), threads)
    if name == "pytorch":
        from vne_inline.infer.pytorch_backend import PyTorchBackend

        return PyTorchBackend(model_file(model, ".safetensors"), threads)
    raise BackendError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")


def _reason(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if isinstance(exc, BackendError) else f"{type(exc).__name__}: {text}"


def load_backend(name: str = "auto", model: str | Path | None = None, threads: int | None = None) -> Backend:
    """The backend `name` ("auto" or one of :data:`BACKENDS`) for `model` (None: the shipped default;
    a ``.onnx`` or ``.safetensors`` path, its sibling with the other suffix serving the other backends,
    and for TensorRT its ``.fp16.onnx`` sibling when present).

    `threads`: CPU threads (None: every CPU this process may use). Cached per process. Raises
    BackendError (one line) when the backend, or with "auto" every backend, cannot be loaded.
    """
    key = (name, "" if model is None else str(Path(model).resolve()), threads)
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            backend = _auto(model, threads) if name == "auto" else _construct(name, model, threads)
        except BackendError:
            raise
        except Exception as exc:  # a broken optional install: report it as a load failure
            raise BackendError(f"{name}: {_reason(exc)}") from exc
        _cache[key] = backend
        return backend


def _auto(model: str | Path | None, threads: int | None) -> Backend:
    reasons = []
    for name in BACKENDS:
        try:
            backend = load_backend(name, model, threads)
        except BackendError as exc:
            reasons.append(f"{name}: {_reason(exc)}")
            log.info("inference backend %s skipped: %s", name, _reason(exc))
            continue
        log.info("inference backend: %s (%s)", backend.name, backend.detail)
        return backend
    raise BackendError("no inference backend could be loaded (" + "; ".join(reasons) + ")")
