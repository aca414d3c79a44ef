"""OpenVINO on the CPU (the optional `openvino` extra).

The inference precision is explicit: float32 by default (on CPUs with AVX512-BF16 or AMX OpenVINO
would otherwise run in bfloat16 unasked), bfloat16 only when asked for (``precision="bf16"``, which
:mod:`vne_inline.infer.precision` does for a model whose validation accepted it). An int8 model
(quantize-dequantize ONNX, ``x.int8.onnx``) runs its quantized layers in int8 either way.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vne_inline.infer.base import BackendError, check_batch, default_threads
from vne_inline.infer.onnx_meta import read_onnx_config

__all__ = ["OpenVinoBackend"]


class OpenVinoBackend:
    """An ONNX model compiled by OpenVINO for the CPU: latency mode, one stream, `threads` threads,
    inference precision `precision` ("fp32", "bf16"; "int8" for a quantized model, float32 elsewhere)."""

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32") -> None:
        try:
            import openvino as ov
            import openvino.properties as props
            import openvino.properties.hint as hints
        except ImportError as exc:
            raise BackendError(f"openvino is not installed ({exc}); pip install 'vne-inline[openvino]'") from exc
        path = Path(path)
        threads = threads or default_threads()
        if precision not in ("fp32", "bf16", "int8"):
            raise BackendError(f"openvino: unknown precision {precision!r} (fp32, bf16, int8)")
        try:
            self.config = read_onnx_config(path)
            compiled = ov.Core().compile_model(str(path), "CPU", {
                hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
                hints.performance_mode: hints.PerformanceMode.LATENCY,
                props.inference_num_threads: threads,
                props.num_streams: 1,
            })
            ran = compiled.get_property(hints.inference_precision)
            self._request = compiled.create_infer_request()
            self._lock = threading.Lock()  # one infer request: one call at a time
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line messages
            raise BackendError(f"openvino cannot load {path.name}: {str(exc).strip().splitlines()[0]}") from exc
        if precision == "bf16" and ran != ov.Type.bf16:
            raise BackendError("openvino bf16: this CPU has no bfloat16 unit (AMX-BF16 or AVX512-BF16); "
                               "OpenVINO would run float32")
        self.precision = precision
        self.detail = f"openvino {ov.get_version().split('-')[0]}, CPU {precision}, {threads} threads, {path.name}"

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Padded inputs (B, C, Hp, Wp) -> output (B, 1, Hp, Wp) float32."""
        arrays = check_batch(batch, self.config)
        with self._lock:
            self._request.infer(arrays)
            return self._request.get_output_tensor(0).data.copy()
