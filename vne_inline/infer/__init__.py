"""Inference backends behind one interface: numpy in, numpy out.

``load_backend(name="auto", model=None, threads=None)`` -> a backend (TensorRT, OpenVINO, ONNX Runtime
or PyTorch), loaded once per process; ``predict(backend, inputs)`` -> one (H, W) output per slice.
Importing this package loads no runtime; each backend imports its own when it is loaded.
"""

from vne_inline.infer.base import Backend, BackendError, predict
from vne_inline.infer.select import load_backend

__all__ = ["Backend", "BackendError", "load_backend", "predict"]
