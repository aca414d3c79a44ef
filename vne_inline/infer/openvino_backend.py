"""OpenVINO on the CPU (the optional `openvino` extra).

The inference precision is pinned to float32: on CPUs with AVX512-BF16 or AMX OpenVINO would
otherwise run in bfloat16 (8-bit mantissa), which has not been validated for this model.
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
    """An ONNX model compiled by OpenVINO for the CPU: float32, latency mode, one stream, `threads` threads."""

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import openvino as ov
            import openvino.properties as props
            import openvino.properties.hint as hints
        except ImportError as exc:
            raise BackendError(f"openvino is not installed ({exc}); pip install 'vne-inline[openvino]'") from exc
        path = Path(path)
        threads = threads or default_threads()
        try:
            self.config = read_onnx_config(path)
            compiled = ov.Core().compile_model(str(path), "CPU", {
                hints.inference_precision: ov.Type.f32,
                hints.performance_mode: hints.PerformanceMode.LATENCY,
                props.inference_num_threads: threads,
                props.num_streams: 1,
            })
            self._request = compiled.create_infer_request()
            self._lock = threading.Lock()  # one infer request: one call at a time
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line messages
            raise BackendError(f"openvino cannot load {path.name}: {str(exc).strip().splitlines()[0]}") from exc
        self.detail = f"openvino {ov.get_version().split('-')[0]}, CPU f32, {threads} threads, {path.name}"

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Padded inputs (B, C, Hp, Wp) -> output (B, 1, Hp, Wp) float32."""
        arrays = check_batch(batch, self.config)
        with self._lock:
            self._request.infer(arrays)
            return self._request.get_output_tensor(0).data.copy()
