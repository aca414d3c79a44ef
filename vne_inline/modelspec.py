"""The generator's configuration, stored with its weights (no torch needed to read it).

Weights are a safetensors file whose metadata holds this configuration as JSON under
``vne_config``; the ONNX export carries the same JSON as a metadata property.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["ModelConfig", "CONFIG_KEY", "read_config", "DEFAULT_WEIGHTS", "DEFAULT_ONNX"]

CONFIG_KEY = "vne_config"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.safetensors"
DEFAULT_ONNX = WEIGHTS_DIR / "default.onnx"


@dataclass(frozen=True)
class ModelConfig:
    """Generator shape: F cine frames, K IR images, U-Net base width and depth (H, W padded to 2**depth)."""

    n_cine_frames: int = 16
    n_ir_images: int = 7
    base_width: int = 16
    depth: int = 4
    fusion_width: int = 32
    trained_on: str = "synthetic"
    name: str = "vne-default"
    domain: str = ""  # JSON of the training domain (core.domain.TrainingDomain); "" when not described

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown model configuration keys: {sorted(unknown)}")
        return cls(**raw)


def read_config(weights: str | Path) -> ModelConfig:
    """The configuration stored in a safetensors weights file (reads only the header)."""
    from safetensors import safe_open

    path = Path(weights)
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path.name}: not a readable safetensors weights file ({exc})") from exc
    if CONFIG_KEY not in meta:
        raise ValueError(f"{path.name}: no '{CONFIG_KEY}' metadata; not a vne-inline weights file")
    return ModelConfig.from_json(meta[CONFIG_KEY])
