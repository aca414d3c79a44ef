"""PyTorch on the CPU: the reference backend, straight from the safetensors weights (`train` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vne_inline.core.normalise import INPUT_NAMES
from vne_inline.infer.base import BackendError, check_batch, default_threads

__all__ = ["PyTorchBackend"]


class PyTorchBackend:
    """The generator from a safetensors weights file, float32 on the CPU.

    `threads` sets ``torch.set_num_threads`` for the whole process (torch has no per-model setting).
    """

    name = "pytorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import torch

            from vne_inline.model.generator import load_weights
        except ImportError as exc:
            raise BackendError(f"torch is not installed ({exc}); pip install 'vne-inline[train]'") from exc
        path = Path(path)
        threads = threads or default_threads()
        try:
            self._model = load_weights(path)
        except ValueError as exc:
            raise BackendError(str(exc).splitlines()[0]) from exc
        torch.set_num_threads(threads)
        self._torch = torch
        self.config = self._model.config
        self.detail = f"torch {torch.__version__}, CPU, {threads} threads, {path.name}"

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Padded inputs (B, C, Hp, Wp) -> output (B, 1, Hp, Wp) float32."""
        arrays = check_batch(batch, self.config)
        with self._torch.inference_mode():
            return self._model(*(self._torch.from_numpy(arrays[name]) for name in INPUT_NAMES)).numpy()
