"""Training losses: LSGAN adversarial, pixel L1, pix2pixHD feature matching and MS-SSIM.

ImageNet VGG weights are not available offline, so the "perceptual" part of the generator objective
is discriminator feature matching plus MS-SSIM:

    L_G = w_adv * LSGAN_G + w_l1 * L1 + w_fm * FM + w_ssim * (1 - MS-SSIM) + w_myo * L1_myo

``L1_myo`` is the pixel L1 inside a focus map (the LV myocardium and a few mm around it, where
lesion burden is read; ``train.dataset``): mean |fake - target| weighted by the map, 0 when the
batch has no focus pixel. It keeps the small myocardial contrast (lesion vs remote, a few tenths of
the blood signal) from being drowned by the large bright structures outside the heart. With an
enhancement gain g > 0 (:func:`enhancement_focus`) each LV myocardium pixel of the map is weighted
1 + g * clip(target, 0, 1): an enhanced pixel of the LGE (a lesion at a fraction e of the blood
signal) counts 1 + g * e times a remote one. Under an L1 loss the prediction at a pixel whose
inputs leave lesion and remote equally likely is the weighted median, so the gain moves such
pixels towards the lesion and counters the regression to dark, remote-like myocardium.
    L_D = 0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2))

Images are in normalised LGE units (blood about 1, ``core.normalise``), hence ``data_range = 1``.

MS-SSIM (Wang et al. 2003): Gaussian window 11 x 11, sigma 1.5, "valid" filtering, 2 x 2 average
pooling between scales, K1 = 0.01, K2 = 0.03, per-scale weights 0.0448, 0.2856, 0.3001, 0.2363,
0.1333. Small images use fewer scales, the largest number M <= 5 for which the coarsest scale is still
at least one window wide (:func:`ms_ssim_scales`: M = 5 from 176 pixels, 4 from 88 (so 96 x 96 and
128 x 128 crops use 4), 3 from 44, 2 from 22, 1 from 11), with the first M weights renormalised to
sum 1; M = 1 is plain SSIM. Contrast/SSIM terms are clamped to
>= 1e-6 before the fractional powers (signed images can give negative terms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "LossWeights",
    "MS_SSIM_WEIGHTS",
    "discriminator_loss",
    "enhancement_focus",
    "feature_matching_loss",
    "focused_l1",
    "generator_loss",
    "lsgan_generator_loss",
    "ms_ssim",
    "ms_ssim_scales",
    "ssim",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_FLOOR = 1e-6


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator objective's terms."""

    adversarial: float = 1.0
    l1: float = 100.0
    feature_matching: float = 10.0
    ms_ssim: float = 10.0
    myocardium: float = 100.0
    enhancement: float = 0.0  # gain g of :func:`enhancement_focus` (0: plain focus map)


def lsgan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """LSGAN generator term: mean((D(fake) - 1)^2)."""
    return torch.mean((fake_logits - 1) ** 2)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss: 0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2))."""
    return 0.5 * (torch.mean((real_logits - 1) ** 2) + torch.mean(fake_logits**2))


def feature_matching_loss(
    fake_features: list[torch.Tensor], real_features: list[torch.Tensor]
) -> torch.Tensor:
    """pix2pixHD feature matching: mean over discriminator blocks of L1(fake, real), real detached."""
    terms = [F.l1_loss(f, r.detach()) for f, r in zip(fake_features, real_features, strict=True)]
    return torch.stack(terms).mean()


def ms_ssim_scales(h: int, w: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Scales used for an h x w image: the most (<= max_scales) whose coarsest level is >= the window."""
    side = min(h, w)
    if side < WINDOW_SIZE:
        raise ValueError(
            f"(MS-)SSIM needs images of at least {WINDOW_SIZE} x {WINDOW_SIZE} pixels, got {h} x {w}"
        )
    return min(max_scales, 1 + int(math.floor(math.log2(side / WINDOW_SIZE))))


def _gaussian(device: torch.device) -> torch.Tensor:
    x = torch.arange(WINDOW_SIZE, dtype=torch.float32, device=device) - (WINDOW_SIZE - 1) / 2
    g = torch.exp(-(x**2) / (2 * WINDOW_SIGMA**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' borders, each channel on its own."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and contrast-structure terms, shape (B,)."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    var_x = _blur(x * x, g) - mu_x**2
    var_y = _blur(y * y, g) - mu_y**2
    cov = _blur(x * y, g) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, max_scales: int = len(MS_SSIM_WEIGHTS)
) -> torch.Tensor:
    """MS-SSIM per image, shape (B,), of (B, C, H, W) tensors (module docstring); computed in float32."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"ms_ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    scales = ms_ssim_scales(x.shape[-2], x.shape[-1], max_scales)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    g = _gaussian(x.device)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        terms = []
        for scale in range(scales):
            s, cs = _ssim_and_cs(x, y, g, data_range)
            terms.append(s if scale == scales - 1 else cs)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        values = torch.stack(terms, dim=1).clamp(min=_FLOOR)
        return torch.prod(values ** weights[None], dim=1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Single-scale SSIM per image, shape (B,) (11 x 11 Gaussian window, sigma 1.5)."""
    return ms_ssim(x, y, data_range, max_scales=1)


def focused_l1(fake: torch.Tensor, target: torch.Tensor, focus: torch.Tensor) -> torch.Tensor:
    """Mean |fake - target| weighted by `focus` (same shape, >= 0); 0 when `focus` sums to 0."""
    focus = focus.float()
    return (torch.abs(fake.float() - target.float()) * focus).sum() / focus.sum().clamp(min=1.0)


def enhancement_focus(focus: torch.Tensor, myo: torch.Tensor, target: torch.Tensor, gain: float) -> torch.Tensor:
    """Focus map weighted 1 + `gain` * clip(target, 0, 1) on the LV myocardium (`myo`, 0/1), the
    target in normalised LGE units (blood about 1); `focus` itself when `gain` is 0."""
    if gain == 0:
        return focus
    return focus * (1 + gain * myo * target.detach().float().clamp(0, 1))


def generator_loss(
    fake_logits: torch.Tensor,
    fake_features: list[torch.Tensor],
    real_features: list[torch.Tensor],
    fake: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
    focus: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted generator objective and its unweighted parts (adversarial, l1, feature_matching,
    ms_ssim = 1 - MS-SSIM, and myocardium = :func:`focused_l1` over `focus`, 0 without one), keyed
    like :class:`LossWeights`."""
    parts = {
        "adversarial": lsgan_generator_loss(fake_logits),
        "l1": F.l1_loss(fake.float(), target.float()),
        "feature_matching": feature_matching_loss(fake_features, real_features),
        "ms_ssim": 1 - ms_ssim(fake, target).mean(),
        "myocardium": focused_l1(fake, target, focus) if focus is not None else fake.new_zeros((), dtype=torch.float32),
    }
    total = sum(getattr(weights, name) * value for name, value in parts.items())
    return total, parts
