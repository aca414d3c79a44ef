"""ONNX Runtime on the CPU: the backend every install has."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vne_inline.infer.base import OUTPUT_NAME, BackendError, check_batch, default_threads
from vne_inline.infer.onnx_meta import read_onnx_config

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend:
    """An ONNX model in an ONNX Runtime CPU session: `threads` intra-op threads (default: the CPUs
    this process may use), one inter-op thread, sequential execution, all graph optimisations.
    `precision` names the model file's precision: "fp32", or "int8" for a quantized model
    (``x.int8.onnx``); the CPU provider has no bfloat16 convolutions."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(f"onnxruntime is not installed ({exc})") from exc
        ort.disable_telemetry_events()  # also when onnxruntime was imported before vne_inline set the variable
        path = Path(path)
        threads = threads or default_threads()
        if precision not in ("fp32", "int8"):
            raise BackendError(f"onnxruntime: precision {precision!r} not available on the CPU (fp32, int8)")
        try:
            self.config = read_onnx_config(path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3  # errors only
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {path.name}: {str(exc).splitlines()[0]}") from exc
        self.precision = precision
        self.detail = f"onnxruntime {ort.__version__}, CPU {precision}, {threads} threads, {path.name}"

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Padded inputs (B, C, Hp, Wp) -> output (B, 1, Hp, Wp) float32."""
        (output,) = self._session.run([OUTPUT_NAME], check_batch(batch, self.config))
        return output
