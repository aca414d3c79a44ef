"""Pick and load a backend once per process.

``load_backend("auto")`` tries TensorRT, then the backend and precision that the model's validation
record accepts as fastest on this CPU (:func:`vne_inline.infer.precision.choose`), then OpenVINO ->
ONNX Runtime -> PyTorch in float32, and logs one line per backend it skipped (with the reason) and one
for the one it took, with its precision and why. Loaded backends are cached by (name, model file,
threads, precision), so a model is loaded once per process however often it is asked for.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from vne_inline.infer.base import Backend, BackendError, model_file
from vne_inline.infer.precision import PRECISIONS

__all__ = ["BACKENDS", "FP16_SUFFIX", "load_backend"]

log = logging.getLogger(__name__)

#: Backend names in the order "auto" tries them.
BACKENDS = ("tensorrt", "openvino", "onnxruntime", "pytorch")
#: TensorRT prefers the model's FP16 export next to it (``x.onnx`` -> ``x.fp16.onnx``); the CPU
#: backends keep the float32 file (float16 graphs run far slower on CPUs).
FP16_SUFFIX = ".fp16.onnx"

_cache: dict[tuple[str, str, int | None, str], Backend] = {}
_lock = threading.RLock()


def _construct(name: str, model: str | Path | None, threads: int | None, precision: str = "fp32") -> Backend:
    if precision != "fp32" and name not in ("openvino", "onnxruntime"):
        raise BackendError(f"{name}: precision {precision} is available with openvino and onnxruntime only")
    if name in ("openvino", "onnxruntime") and precision == "int8":
        from vne_inline.infer.precision import int8_path

        int8 = int8_path(model_file(model, ".onnx"))
        if not int8.is_file():
            raise BackendError(f"no int8 model at {int8} (make it with `vne-inline validate-precision`)")
    if name == "tensorrt":
        from vne_inline.infer.tensorrt import TensorRTBackend

        onnx = model_file(model, ".onnx")
        fp16 = onnx.with_suffix(FP16_SUFFIX)
        return TensorRTBackend(fp16 if fp16.is_file() else onnx)
    if name == "openvino":
        from vne_inline.infer.openvino_backend import OpenVinoBackend

        onnx = model_file(model, ".onnx")
        return OpenVinoBackend(int8 if precision == "int8" else onnx, threads, precision)
    if name == "onnxruntime":
        from vne_inline.infer.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(int8 if precision == "int8" else model_file(model, ".onnx"), threads, precision)
    if name == "pytorch":
        from vne_inline.infer.pytorch_backend import PyTorchBackend

        return PyTorchBackend(model_file(model, ".safetensors"), threads)
    raise BackendError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")


def _reason(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if isinstance(exc, BackendError) else f"{type(exc).__name__}: {text}"


def load_backend(name: str = "auto", model: str | Path | None = None, threads: int | None = None,
                 precision: str = "auto") -> Backend:
    """The backend `name` ("auto" or one of :data:`BACKENDS`) for `model` (None: the shipped default;
    a ``.onnx`` or ``.safetensors`` path, its sibling with the other suffix serving the other backends,
    and for TensorRT its ``.fp16.onnx`` sibling when present).

    `threads`: CPU threads (None: every CPU this process may use). `precision`: "auto" (the fastest
    precision the model's validation record accepts, else float32), "fp32", "bf16" or "int8"
    (OpenVINO and ONNX Runtime; int8 runs the ``x.int8.onnx`` sibling). Cached per process. Raises
    BackendError (one line) when the backend, or with "auto" every backend, cannot be loaded.
    """
    if precision not in ("auto", *PRECISIONS):
        raise BackendError(f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)}")
    key = (name, "" if model is None else str(Path(model).resolve()), threads, precision)
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            if name == "auto":
                backend = _auto(model, threads, precision)
            elif precision == "auto":
                backend = _validated(name, model, threads) or load_backend(name, model, threads, "fp32")
            else:
                backend = _construct(name, model, threads, precision)
        except BackendError:
            raise
        except Exception as exc:  # a broken optional install: report it as a load failure
            raise BackendError(f"{name}: {_reason(exc)}") from exc
        _cache[key] = backend
        return backend


def _validated(name: str | None, model: str | Path | None, threads: int | None) -> Backend | None:
    """The accepted precision of the model's validation record for backend `name` (any when None), or
    None (logged with the reason) when there is none this CPU can run or it fails to load."""
    from vne_inline.infer.precision import choose

    try:
        onnx = model_file(model, ".onnx")
    except BackendError:
        return None
    choice, why = choose(onnx, name)
    if choice is None:
        log.info("precision fp32: %s", why)
        return None
    try:
        backend = load_backend(choice.backend, model, threads, choice.precision)
    except BackendError as exc:
        log.info("precision %s with %s skipped: %s", choice.precision, choice.backend, _reason(exc))
        return None
    log.info("precision %s with %s: %s", choice.precision, choice.backend, choice.reason)
    return backend


def _auto(model: str | Path | None, threads: int | None, precision: str) -> Backend:
    reasons = []
    for name in BACKENDS:
        if name != "tensorrt" and precision == "auto":
            validated = _validated(None, model, threads)
            if validated is not None:
                log.info("inference backend: %s (%s)", validated.name, validated.detail)
                return validated
            precision = "fp32"  # the record offers nothing here: float32 in the usual order
        try:
            backend = load_backend(name, model, threads, "fp32" if precision == "auto" else precision)
        except BackendError as exc:
            reasons.append(f"{name}: {_reason(exc)}")
            log.info("inference backend %s skipped: %s", name, _reason(exc))
            continue
        log.info("inference backend: %s (%s)", backend.name, backend.detail)
        return backend
    raise BackendError("no inference backend could be loaded (" + "; ".join(reasons) + ")")
