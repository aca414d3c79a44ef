"""Conditional PatchGAN discriminator (pix2pix, 70 x 70 receptive field with the default 3 layers).

It sees the generator's conditioning inputs concatenated with an image (real LGE or generated VNE):
4x4 convs, stride 2 for the first `n_layers` (channels `width`, 2 `width`, ... capped at 8 `width`),
then one stride-1 conv block and a stride-1 conv to one logit per patch. Instance norm on every block
but the first, LeakyReLU(0.2). It returns the patch logits and every block's feature map (for the
pix2pixHD feature-matching loss).
"""

from __future__ import annotations

import torch
from torch import nn

from vne_inline.modelspec import ModelConfig

__all__ = ["PatchDiscriminator"]


def _block(in_channels: int, out_channels: int, stride: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm2d(out_channels, affine=True))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class PatchDiscriminator(nn.Module):
    """(condition (B, C, H, W), image (B, 1, H, W)) -> (logits (B, 1, h, w), [block feature maps])."""

    def __init__(self, condition_channels: int, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        channels = [condition_channels + 1] + [width * 2 ** min(i, 3) for i in range(n_layers + 1)]
        strides = [2] * n_layers + [1]
        self.blocks = nn.ModuleList(
            _block(c_in, c_out, stride, norm=i > 0)
            for i, (c_in, c_out, stride) in enumerate(zip(channels[:-1], channels[1:], strides, strict=True))
        )
        self.head = nn.Conv2d(channels[-1], 1, 4, stride=1, padding=1)

    @classmethod
    def for_generator(cls, config: ModelConfig, width: int = 64, n_layers: int = 3) -> PatchDiscriminator:
        """A discriminator conditioned on the generator's inputs (F + K + 1 channels)."""
        return cls(config.n_cine_frames + config.n_ir_images + 1, width, n_layers)

    def forward(
        self, condition: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.cat([condition, image], dim=1)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(x), features
