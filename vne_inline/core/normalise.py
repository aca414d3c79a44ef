"""Input normalisation and pad/crop: the one definition shared by training and every inference backend.

Numpy only. The generator sees three float32 inputs on the T1 map's grid (H, W), see
:func:`prepare_inputs`:

``t1`` (1, H, W)
    T1 in ms divided by :data:`T1_SCALE_MS` (1000 ms -> 1.0); non-finite pixels -> 0; clipped to
    [0, :data:`T1_MAX`] (0-4000 ms).
``cine`` (F, H, W)
    Magnitude: non-finite -> 0, negatives -> 0, then divided by ONE robust scale for the whole series
    (the :data:`PERCENTILE` th percentile of all pixels of all P phases; :func:`robust_scale`), so the
    contrast between frames is kept; clipped to [0, :data:`SERIES_MAX`]. Then resampled in time from
    P phases to F frames by periodic linear interpolation (:func:`resample_cycle`).
``ir`` (K, H, W)
    Same magnitude scaling with one scale over all K0 acquired IR images of the slice; sorted by TI
    (stable) and brought to K images by nearest-rank selection (:func:`select_ir`).

Training target: the signed PSIR LGE divided by the median of its LV blood pool when a blood ROI is
known, else by its robust scale (:func:`normalise_lge`; blood 1, nulled myocardium about 0, sign
kept). The percentile often falls on epicardial fat or the chest wall, brighter than blood by a
factor that varies from slice to slice; the blood pool gives every target the same scale.

Inference output: the network's output times :data:`VNE_SCALE` (blood about 1000), negatives
clipped to 0, float32 (:func:`to_vne`).

Pad/crop: H and W are zero-padded (zero = no signal, as outside the field of view) symmetrically
(the extra row/column goes to the bottom/right) up to a multiple of ``2**depth``, and cropped back
exactly (:func:`pad_to_multiple`, :func:`crop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from vne_inline.modelspec import ModelConfig

__all__ = [
    "INPUT_NAMES",
    "PERCENTILE",
    "SERIES_MAX",
    "T1_MAX",
    "T1_SCALE_MS",
    "VNE_SCALE",
    "LGE_LIMIT",
    "MIN_IR_IMAGES",
    "ModelInputs",
    "PadInfo",
    "crop",
    "normalise_lge",
    "normalise_series",
    "normalise_t1",
    "pad_to_multiple",
    "cine_input",
    "prepare_inputs",
    "resample_cycle",
    "robust_scale",
    "select_ir",
    "stack_batch",
    "to_vne",
]

_Array = TypeVar("_Array")  # numpy array or torch tensor

#: Names (and order) of the generator's inputs, also used as ONNX input names.
INPUT_NAMES = ("cine", "ir", "t1")
#: T1 (ms) is divided by this fixed constant.
T1_SCALE_MS = 1000.0
#: Normalised T1 is clipped to [0, T1_MAX] (0-4000 ms).
T1_MAX = 4.0
#: Percentile of the finite pixels that defines a series' (and the LGE's) intensity scale.
PERCENTILE = 99.0
#: Normalised cine / IR intensities are clipped to [0, SERIES_MAX].
SERIES_MAX = 4.0
#: Normalised LGE targets are clipped to [-LGE_LIMIT, LGE_LIMIT].
LGE_LIMIT = 4.0
#: The emitted VNE image is the network output times this (normalised blood ~1 -> ~1000).
VNE_SCALE = 1000.0
#: Fewest IR images accepted (a recovery curve needs three points).
MIN_IR_IMAGES = 3


# ---------------------------------------------------------------------------------------- checks
def _as_real(x: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """`x` as float32 with `ndim` dimensions and at least one finite value (else ValueError)."""
    arr = np.asarray(x)
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued (take the magnitude first)")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).any():
        raise ValueError(f"{name} has no finite value (all NaN/inf)")
    return arr


def _finite_or_zero(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, np.float32(0)).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------- scaling
def robust_scale(x: np.ndarray, mask: np.ndarray | None = None, name: str = "image") -> float:
    """The :data:`PERCENTILE` th percentile of the finite pixels of `x` (within `mask` if given).

    Falls back to the largest finite value when the percentile is not positive (a very small bright
    region). Raises ValueError when no finite positive value exists.
    """
    values = np.asarray(x, dtype=np.float32)
    if mask is not None:
        values = values[np.broadcast_to(np.asarray(mask, dtype=bool), values.shape)]
    values = values[np.isfinite(values)]
    if values.size == 0 or not (values > 0).any():
        raise ValueError(f"{name} has no finite positive signal to scale by")
    scale = float(np.percentile(values, PERCENTILE))
    return scale if scale > 0 else float(values.max())


def normalise_t1(t1_ms: np.ndarray) -> np.ndarray:
    """T1 map (ms) -> t1_ms / T1_SCALE_MS, non-finite -> 0, clipped to [0, T1_MAX]; float32."""
    t1 = _finite_or_zero(np.asarray(t1_ms, dtype=np.float32))
    return np.clip(t1 / np.float32(T1_SCALE_MS), 0, T1_MAX).astype(np.float32)


def normalise_series(series: np.ndarray, name: str = "series") -> np.ndarray:
    """Magnitude series (N, H, W) -> one robust scale for all N images; float32 in [0, SERIES_MAX].

    Non-finite and negative pixels become 0 before the scale is taken over every pixel of every image.
    """
    x = np.maximum(_finite_or_zero(np.asarray(series, dtype=np.float32)), 0)
    return np.clip(x / np.float32(robust_scale(x, name=name)), 0, SERIES_MAX).astype(np.float32)


def normalise_lge(
    lge: np.ndarray, valid: np.ndarray | None = None, blood: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Signed PSIR LGE (H, W) -> (lge / scale clipped to +-LGE_LIMIT, scale); training target.

    `scale` is the median of the finite LGE pixels inside the LV blood-pool ROI `blood` (and inside
    `valid`) when that is positive, so blood is 1; otherwise :func:`robust_scale` over the finite
    pixels (inside `valid` when given). Nulled myocardium is about 0; the sign is kept. Non-finite
    pixels -> 0.
    """
    raw = np.asarray(lge, dtype=np.float32)
    x = _finite_or_zero(raw)
    scale = 0.0
    if blood is not None:
        inside = np.asarray(blood, dtype=bool) & np.isfinite(raw)
        if valid is not None:
            inside &= np.asarray(valid, dtype=bool)
        scale = float(np.median(raw[inside])) if inside.any() else 0.0
    if not scale > 0:
        scale = robust_scale(x, mask=valid, name="LGE")
    return np.clip(x / np.float32(scale), -LGE_LIMIT, LGE_LIMIT).astype(np.float32), scale


def to_vne(output: np.ndarray, scale: float = VNE_SCALE) -> np.ndarray:
    """Network output (normalised LGE units) -> emitted VNE image: output * scale, negatives and non-finite -> 0.

    With the default scale blood is about 1000; with the scale returned by :func:`normalise_lge` it
    inverts that normalisation for the non-negative pixels.
    """
    x = _finite_or_zero(np.asarray(output, dtype=np.float32))
    return np.maximum(x * np.float32(scale), 0).astype(np.float32)


# ---------------------------------------------------------------------------------------- time / TI
def resample_cycle(series: np.ndarray, n_frames: int) -> np.ndarray:
    """Periodic linear interpolation of P phases (P, H, W) spanning one cardiac cycle to `n_frames`.

    Phase p sits at cycle fraction p / P and frame f at f / n_frames, so frame 0 is phase 0 and the
    last frames interpolate between phase P-1 and phase 0 (the cycle wraps).
    """
    n_phases = series.shape[0]
    position = np.arange(n_frames) * (n_phases / n_frames)
    lower = np.floor(position).astype(int)
    weight = (position - lower).astype(np.float32)[:, None, None]
    return ((1 - weight) * series[lower % n_phases] + weight * series[(lower + 1) % n_phases]).astype(
        np.float32
    )


def select_ir(ir: np.ndarray, ti_ms: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort IR images (K0, H, W) by TI (stable) and bring them to `n_images` by nearest-rank selection.

    Output image k is sorted image ``floor(k * (K0 - 1) / (n_images - 1) + 0.5)``: the first (shortest
    TI) and last (longest TI) images are always kept, the rest evenly spread over the TI ranks; with
    K0 == n_images every image is kept, with K0 < n_images images repeat. TI order is preserved.
    Returns (images, their TIs in ms).
    """
    order = np.argsort(ti_ms, kind="stable")
    span = max(n_images - 1, 1)  # integer round-half-up of k * (K0 - 1) / (n_images - 1)
    ranks = (2 * np.arange(n_images) * (len(order) - 1) + span) // (2 * span)
    chosen = order[ranks]
    return ir[chosen], np.asarray(ti_ms, dtype=np.float32)[chosen]


# ---------------------------------------------------------------------------------------- pad / crop
@dataclass(frozen=True)
class PadInfo:
    """Zero padding added to (..., H, W): rows `top`/`bottom`, columns `left`/`right`; original `shape` (H, W)."""

    top: int
    bottom: int
    left: int
    right: int
    shape: tuple[int, int]


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, PadInfo]:
    """Zero-pad the last two axes of `x` symmetrically up to multiples of `multiple` (extra at bottom/right)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"need an array (..., H, W), got shape {x.shape}")
    h, w = x.shape[-2:]
    dh, dw = -h % multiple, -w % multiple
    info = PadInfo(top=dh // 2, bottom=dh - dh // 2, left=dw // 2, right=dw - dw // 2, shape=(h, w))
    widths = [(0, 0)] * (x.ndim - 2) + [(info.top, info.bottom), (info.left, info.right)]
    return np.pad(x, widths, mode="constant"), info


def crop(x: _Array, info: PadInfo) -> _Array:
    """Undo :func:`pad_to_multiple` on (..., Hp, Wp); works on anything sliceable (numpy, torch)."""
    h, w = info.shape
    expected = (h + info.top + info.bottom, w + info.left + info.right)
    if tuple(x.shape[-2:]) != expected:
        raise ValueError(f"cannot crop shape {tuple(x.shape)}: padded images are {expected}")
    return x[..., info.top : info.top + h, info.left : info.left + w]


# ---------------------------------------------------------------------------------------- model inputs
@dataclass(frozen=True)
class ModelInputs:
    """One slice's normalised generator inputs, float32: cine (F, H, W), ir (K, H, W), t1 (1, H, W)."""

    cine: np.ndarray
    ir: np.ndarray
    t1: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape (H, W)."""
        return self.t1.shape[-2:]

    def arrays(self) -> dict[str, np.ndarray]:
        """The inputs by name, in :data:`INPUT_NAMES` order."""
        return {name: getattr(self, name) for name in INPUT_NAMES}


def cine_input(cine: np.ndarray | None, shape: tuple[int, int], config: ModelConfig) -> np.ndarray:
    """The generator's cine input (F, H, W) float32 from a cine (P, H, W) on the T1 map's grid (scanner
    units): one robust scale for all phases, then F frames over the cycle; all zero for None (a VNE
    without cine, as the generator saw it in training's stream dropout). ValueError for complex,
    wrongly shaped or non-finite input, another grid than `shape`, or fewer than 2 phases."""
    if cine is None:
        return np.zeros((config.n_cine_frames, *shape), np.float32)
    cine = _as_real(cine, "cine (P, H, W)", 3)
    if cine.shape[-2:] != tuple(shape):
        raise ValueError(f"inputs must share H, W (the T1 map's grid), got cine {cine.shape[-2:]} and t1 {tuple(shape)}")
    if cine.shape[0] < 2:
        raise ValueError(f"cine needs at least 2 phases, got {cine.shape[0]}")
    return resample_cycle(normalise_series(cine, "cine"), config.n_cine_frames)


def prepare_inputs(
    cine: np.ndarray | None, ir: np.ndarray, ti_ms: np.ndarray, t1_ms: np.ndarray, config: ModelConfig,
    ready_cine: np.ndarray | None = None,
) -> ModelInputs:
    """Normalise one slice for the generator (module docstring): cine (P, H, W), ir (K0, H, W) with
    ti_ms (K0,), t1_ms (H, W), all on the T1 map's grid, scanner units / ms. `cine` None gives an
    all-zero cine input (a VNE without cine, as the generator saw it in training's stream dropout);
    `ready_cine`, the :func:`cine_input` of this slice's cine made earlier, is used instead of `cine`.

    NaN/inf pixels inside otherwise valid inputs are replaced by 0. Raises ValueError for complex or
    wrongly shaped inputs, inputs with no finite value, mismatched H/W, fewer than 2 cine phases,
    fewer than 3 IR images, TIs that are not finite or do not match the IR images.
    """
    ir = _as_real(ir, "ir (K0, H, W)", 3)
    t1 = _as_real(t1_ms, "t1_ms (H, W)", 2)
    ti = np.asarray(ti_ms, dtype=np.float64)
    if ir.shape[-2:] != t1.shape:
        raise ValueError(f"inputs must share H, W (the T1 map's grid), got ir {ir.shape[-2:]} and t1 {t1.shape}")
    if ir.shape[0] < MIN_IR_IMAGES:
        raise ValueError(f"need at least {MIN_IR_IMAGES} IR images, got {ir.shape[0]}")
    if ti.shape != (ir.shape[0],):
        raise ValueError(f"ti_ms must have shape ({ir.shape[0]},) to match the IR images, got {ti.shape}")
    if not np.isfinite(ti).all():
        raise ValueError(f"ti_ms must be finite, got {ti.tolist()}")
    if ready_cine is None:
        cine_n = cine_input(cine, t1.shape, config)
    elif ready_cine.shape != (config.n_cine_frames, *t1.shape):
        raise ValueError(f"prepared cine input {ready_cine.shape} does not fit {config.n_cine_frames} frames of {t1.shape}")
    else:
        cine_n = ready_cine
    ir_n, _ = select_ir(normalise_series(ir, "IR images"), ti, config.n_ir_images)
    return ModelInputs(cine=cine_n, ir=ir_n, t1=normalise_t1(t1)[None])


def stack_batch(items: Sequence[ModelInputs], multiple: int) -> tuple[dict[str, np.ndarray], PadInfo]:
    """Stack slices into padded (B, C, Hp, Wp) float32 arrays by input name; one PadInfo for all.

    All slices must share H, W and channel counts (ValueError otherwise).
    """
    if len(items) == 0:
        raise ValueError("stack_batch needs at least one slice")
    layouts = {tuple((name, a.shape) for name, a in item.arrays().items()) for item in items}
    if len(layouts) > 1:
        raise ValueError(f"slices in one batch must share shapes, got {sorted(layouts)}")
    padded = {
        name: pad_to_multiple(np.stack([getattr(item, name) for item in items]).astype(np.float32), multiple)
        for name in INPUT_NAMES
    }
    return {name: array for name, (array, _) in padded.items()}, padded[INPUT_NAMES[0]][1]
