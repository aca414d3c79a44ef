"""The backend interface: numpy in, numpy out, a batch of slices at a time.

Every backend takes the padded batch of :func:`vne_inline.core.normalise.stack_batch` (float32
``cine (B, F, Hp, Wp)``, ``ir (B, K, Hp, Wp)``, ``t1 (B, 1, Hp, Wp)``) and returns the generator's
output ``(B, 1, Hp, Wp)`` float32 in normalised LGE units. :func:`predict` does the rest (grouping,
padding, batching, cropping) the same way for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from vne_inline.core.normalise import INPUT_NAMES, ModelInputs, crop, stack_batch
from vne_inline.modelspec import DEFAULT_ONNX, DEFAULT_WEIGHTS, ModelConfig

__all__ = [
    "Backend", "BackendError", "MAX_BATCH", "OUTPUT_NAME", "check_batch", "default_threads", "model_file", "predict",
]

#: Name of the generator's output (also the ONNX output name).
OUTPUT_NAME = "vne"
#: Most slices per backend call (the TensorRT optimisation profile's maximum batch).
MAX_BATCH = 8


class BackendError(RuntimeError):
    """A backend cannot be loaded or cannot run; the message is one line saying why."""


class Backend(Protocol):
    """What every backend offers: its `name`, the model's `config`, a one-line `detail`
    (runtime version, device, threads, model file) and `run`, which may be called from several threads."""

    name: str
    config: ModelConfig
    detail: str

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Padded inputs by name (B, C, Hp, Wp) float32 -> output (B, 1, Hp, Wp) float32."""
        ...


def default_threads() -> int:
    """CPU threads a backend uses when none are given: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def model_file(model: str | Path | None, suffix: str) -> Path:
    """The model file a backend reads: ``.onnx`` or ``.safetensors`` (`suffix`).

    `model` None means the shipped default (``weights/default.onnx`` / ``default.safetensors``);
    otherwise the file next to `model` with that suffix (``x.onnx`` <-> ``x.safetensors``), so one
    name serves every backend. Raises BackendError when the file does not exist.
    """
    default = {".onnx": DEFAULT_ONNX, ".safetensors": DEFAULT_WEIGHTS}[suffix]
    path = default if model is None else Path(model).with_suffix(suffix)
    if not path.is_file():
        raise BackendError(f"no {suffix} model file at {path}")
    return path


def check_batch(batch: Mapping[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    """The batch as C-contiguous float32 arrays in input order; ValueError when names or shapes are wrong."""
    if set(batch) != set(INPUT_NAMES):
        raise ValueError(f"batch needs exactly the inputs {INPUT_NAMES}, got {sorted(batch)}")
    arrays = {name: np.ascontiguousarray(batch[name], dtype=np.float32) for name in INPUT_NAMES}
    channels = {"cine": config.n_cine_frames, "ir": config.n_ir_images, "t1": 1}
    m = config.size_multiple
    b, _, h, w = arrays["t1"].shape if arrays["t1"].ndim == 4 else (0, 0, 0, 0)
    ok = b >= 1 and h > 0 and w > 0 and h % m == 0 and w % m == 0
    if not (ok and all(a.shape == (b, channels[name], h, w) for name, a in arrays.items())):
        shapes = {name: a.shape for name, a in arrays.items()}
        raise ValueError(
            f"inputs must be cine (B, {channels['cine']}, H, W), ir (B, {channels['ir']}, H, W), t1 (B, 1, H, W) "
            f"with H, W multiples of {m}; got {shapes}"
        )
    return arrays


def predict(backend: Backend, inputs: Sequence[ModelInputs], batch_size: int = MAX_BATCH) -> list[np.ndarray]:
    """The generator's output (H, W) float32 (normalised LGE units) for each slice, in input order.

    Slices of one shape are stacked (zero-padded to ``2**depth`` by ``core.normalise``), run in batches
    of at most `batch_size`, and cropped back to their own H, W.
    """
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(inputs):
        groups.setdefault(tuple(a.shape for a in item.arrays().values()), []).append(index)
    outputs: list[np.ndarray] = [np.empty(0, np.float32)] * len(inputs)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch, pad = stack_batch([inputs[i] for i in chunk], backend.config.size_multiple)
            result = np.asarray(backend.run(batch))
            expected = (len(chunk), 1, *batch["t1"].shape[-2:])
            if result.shape != expected:
                raise BackendError(f"{backend.name} returned shape {result.shape}, expected {expected}")
            for i, image in zip(chunk, crop(result, pad)[:, 0], strict=True):
                outputs[i] = np.ascontiguousarray(image, dtype=np.float32)
    return outputs
