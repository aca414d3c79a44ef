"""The VNE generator: three parallel U-Nets (cine, IR images, T1 map) fused into one image.

Each stream is a U-Net of ``depth`` levels: a full-resolution stem (two 3x3 conv blocks of
``base_width`` channels), then per level a stride-2 3x3 conv block that doubles the channels and a
3x3 conv block; the decoder goes back up level by level (1x1 conv at the coarse scale to halve the
channels, nearest x2 upsampling, additive skip connection, 3x3 conv block). A conv block is
Conv -> InstanceNorm (affine) -> LeakyReLU(0.2). The three streams' ``base_width``-channel output maps
are concatenated and fused by a 3x3 conv block of ``fusion_width`` channels and a 1x1 conv into one
channel (normalised LGE units, signed, no output activation; see ``core.normalise``).

ONNX-friendly: Conv, Resize (nearest), InstanceNormalization, LeakyRelu, Add, Concat only. H and W
must be multiples of ``2**depth`` (pad with ``core.normalise.pad_to_multiple``).

Weights are safetensors files with the :class:`ModelConfig` JSON in the metadata under
``modelspec.CONFIG_KEY`` (:func:`save_weights`, :func:`load_weights`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vne_inline.modelspec import CONFIG_KEY, ModelConfig, read_config

__all__ = [
    "VNEGenerator",
    "UNet",
    "atomic_save_file",
    "average_weights",
    "count_gflop",
    "count_parameters",
    "load_weights",
    "save_weights",
]


class ConvBlock(nn.Sequential):
    """3x3 Conv (stride 1 or 2, padding 1) -> InstanceNorm (affine) -> LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.LeakyReLU(0.2),
        )


class UpBlock(nn.Module):
    """1x1 conv halving the channels at the coarse scale, nearest x2 upsampling, + skip, ConvBlock."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.block = ConvBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.upsample(self.reduce(x)) + skip)


class UNet(nn.Module):
    """Encoder-decoder with `depth` levels, `width * 2**level` channels; (B, C_in, H, W) -> (B, width, H, W)."""

    def __init__(self, in_channels: int, width: int, depth: int) -> None:
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.stem = nn.Sequential(ConvBlock(in_channels, width), ConvBlock(width, width))
        self.down = nn.ModuleList(
            nn.Sequential(ConvBlock(c_in, c_out, stride=2), ConvBlock(c_out, c_out))
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.up = nn.ModuleList(
            UpBlock(c_in, c_out) for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        x = skips.pop()
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(x, skip)
        return x


class VNEGenerator(nn.Module):
    """Three U-Net streams (cine F, IR K, T1 1 channels) fused into one VNE channel; see module docstring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.base_width
        self.cine = UNet(config.n_cine_frames, width, config.depth)
        self.ir = UNet(config.n_ir_images, width, config.depth)
        self.t1 = UNet(1, width, config.depth)
        self.fusion = nn.Sequential(
            ConvBlock(3 * width, config.fusion_width), nn.Conv2d(config.fusion_width, 1, 1)
        )

    def forward(self, cine: torch.Tensor, ir: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """cine (B, F, H, W), ir (B, K, H, W), t1 (B, 1, H, W), normalised -> (B, 1, H, W)."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_inputs(cine, ir, t1)
        return self.fusion(torch.cat([self.cine(cine), self.ir(ir), self.t1(t1)], dim=1))

    def _check_inputs(self, cine: torch.Tensor, ir: torch.Tensor, t1: torch.Tensor) -> None:
        c = self.config
        expected = {"cine": c.n_cine_frames, "ir": c.n_ir_images, "t1": 1}
        tensors = {"cine": cine, "ir": ir, "t1": t1}
        for name, x in tensors.items():
            if x.ndim != 4 or x.shape[1] != expected[name]:
                raise ValueError(f"{name} must be (B, {expected[name]}, H, W), got {tuple(x.shape)}")
        if len({(x.shape[0], *x.shape[2:]) for x in tensors.values()}) > 1:
            raise ValueError(
                f"inputs must share B, H, W: { {k: tuple(v.shape) for k, v in tensors.items()} }"
            )
        h, w = t1.shape[-2:]
        m = c.size_multiple
        assert h % m == 0 and w % m == 0, (
            f"H, W = {h}, {w} must be multiples of 2**depth = {m}; pad with core.normalise.pad_to_multiple"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_gflop(config: ModelConfig, h: int = 256, w: int = 256) -> float:
    """Forward GFLOP (multiply-add = 2 FLOP, as `FlopCounterMode` counts) for one h x w slice."""
    with torch.device("meta"):
        model = VNEGenerator(config)
        inputs = (
            torch.zeros(1, config.n_cine_frames, h, w),
            torch.zeros(1, config.n_ir_images, h, w),
            torch.zeros(1, 1, h, w),
        )
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops() / 1e9


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors `save_file` to a temporary name, then an atomic rename onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_weights(model: VNEGenerator, path: str | Path, fp16: bool = False) -> None:
    """Write the generator's weights (float32, or float16 with `fp16`) and its config to a safetensors file."""
    dtype = torch.float16 if fp16 else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    atomic_save_file(tensors, Path(path), {CONFIG_KEY: model.config.to_json()})


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> VNEGenerator:
    """The generator stored by :func:`save_weights` (float32, eval mode); ValueError for a damaged or mismatched file."""
    path = Path(path)
    config = read_config(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path.name}: cannot read the weights ({exc})") from exc
    model = VNEGenerator(config)
    try:
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name}: weights do not match configuration {config.name!r}: {exc}") from exc
    return model.to(device).eval()


def average_weights(paths: list[str | Path]) -> VNEGenerator:
    """The generator whose every weight is the mean of the same weight in the files `paths` (checkpoint
    averaging, e.g. over the last epochs of a GAN run); ValueError unless all share one configuration."""
    if not paths:
        raise ValueError("average_weights needs at least one weights file")
    models = [load_weights(p) for p in paths]
    configs = {m.config for m in models}
    if len(configs) > 1:
        raise ValueError(f"weights of different configurations cannot be averaged: {sorted(c.name for c in configs)}")
    states = [m.state_dict() for m in models]
    models[0].load_state_dict({k: torch.stack([s[k] for s in states]).mean(dim=0) for k in states[0]})
    return models[0]

