"""Training samples from a ``triplets.h5`` file (format ``vne-triplets/1``, written by ``vne-inline prepare``).

Each slice is normalised WHOLE with ``core.normalise`` (percentile scales from the full slice; the
LGE target by its blood-pool median when the slice has a ``blood`` mask), then,
for training, cut to a square crop around the heart: centre = the slice's ``heart_centre_px`` attribute
(cy, cx) when present, else the image centre, jittered uniformly by up to ``jitter_px`` pixels in
each direction; crops reaching past the image are zero-padded (and marked invalid). Augmentation:
random up-down / left-right flips, a random multiple of 90 degrees rotation, and intensity factors
uniform in [1 - s, 1 + s] (s = ``intensity_jitter``) applied separately to the cine and the IR
images (T1 is quantitative and the target is left alone). Stream dropout: with probability
``cine_dropout`` a training sample's cine input is all zeros, the input the inline core gives the
generator when no cine slice matches a T1 slice (a VNE from the IR images and the T1 map alone).

Each item also carries a ``focus`` map for the myocardial L1 term (``model.losses``): 1 within
:data:`FOCUS_MARGIN_MM` of the slice's ``myo`` mask (the LV myocardium and its borders, which the
misregistration between scans moves by a few mm), 0 elsewhere and on slices without masks, and the
``myo`` mask itself (0/1; all 0 without masks) for the enhancement weighting of that term.

Randomness comes from ``numpy.random.default_rng((seed, epoch, index))``: a sample depends only on
the seed, the epoch (:meth:`TripletDataset.set_epoch`) and its index, whatever the worker or process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch.utils.data import Dataset

from vne_inline.core.normalise import ModelInputs, normalise_lge, prepare_inputs
from vne_inline.modelspec import ModelConfig

__all__ = [
    "FOCUS_MARGIN_MM",
    "FORMAT",
    "MASK_NAMES",
    "FullSlice",
    "SliceRecord",
    "TripletDataset",
    "read_index",
    "read_slice",
    "split_patients",
]

FORMAT = "vne-triplets/1"
#: Validation masks used for lesion burden (myocardium, remote ROI, blood-pool ROI).
MASK_NAMES = ("myo", "remote", "blood")
#: The focus map reaches this far (mm) beyond the LV myocardium mask.
FOCUS_MARGIN_MM = 4.0


@dataclass(frozen=True)
class SliceRecord:
    """One slice group of a triplets file: group `name`, its `patient` and slice index."""

    name: str
    patient: str
    slice_index: int


@dataclass(frozen=True)
class FullSlice:
    """A whole normalised slice: inputs, target (normalised LGE, H x W), `valid`, burden masks (bool)
    and the focus map (float32, H x W)."""

    name: str
    patient: str
    inputs: ModelInputs
    target: np.ndarray
    valid: np.ndarray
    masks: dict[str, np.ndarray]
    focus: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    heart_centre: tuple[float, float]

    @property
    def pixel_area_mm2(self) -> float:
        return self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1]

    @property
    def has_masks(self) -> bool:
        """True when myo, remote and blood masks are all present and non-empty."""
        return all(name in self.masks and self.masks[name].any() for name in MASK_NAMES)


def _open(path: str | Path) -> h5py.File:
    f = h5py.File(path, "r")
    found = f.attrs.get("format")
    if found != FORMAT:
        f.close()
        raise ValueError(f"{Path(path).name}: not a {FORMAT} file (format attribute {found!r})")
    return f


def _text(value: str | bytes) -> str:
    """An HDF5 string attribute (h5py gives str, or bytes for fixed-length strings)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def read_index(path: str | Path) -> list[SliceRecord]:
    """The slices of a triplets file, in file order."""
    with _open(path) as f:
        if "slices" not in f:
            raise ValueError(f"{Path(path).name}: no /slices group")
        return [
            SliceRecord(name, _text(group.attrs["patient"]), int(group.attrs["slice"]))
            for name, group in f["slices"].items()
        ]


def focus_map(myo: np.ndarray | None, shape: tuple[int, int], spacing_mm: tuple[float, float]) -> np.ndarray:
    """1 within :data:`FOCUS_MARGIN_MM` of the `myo` mask (x, y pixel spacing in mm), else 0; all 0 without one."""
    if myo is None or not myo.any():
        return np.zeros(shape, np.float32)
    distance = distance_transform_edt(~myo, sampling=(spacing_mm[1], spacing_mm[0]))
    return (distance <= FOCUS_MARGIN_MM).astype(np.float32)


def read_slice(group: h5py.Group, config: ModelConfig) -> FullSlice:
    """Read and normalise one slice group (whole slice, no crop)."""
    inputs = prepare_inputs(group["cine"][()], group["ir"][()], group["ti_ms"][()], group["t1"][()], config)
    valid = group["valid"][()].astype(bool)
    masks = {name: group[name][()].astype(bool) for name in MASK_NAMES if name in group}
    target, _ = normalise_lge(group["lge"][()], valid=valid if valid.any() else None, blood=masks.get("blood"))
    h, w = inputs.shape
    centre = group.attrs.get("heart_centre_px", ((h - 1) / 2, (w - 1) / 2))
    spacing = tuple(float(v) for v in group.attrs.get("pixel_spacing_mm", (1.0, 1.0)))
    return FullSlice(
        name=group.name.rsplit("/", 1)[-1],
        patient=_text(group.attrs["patient"]),
        inputs=inputs,
        target=target,
        valid=valid,
        masks=masks,
        focus=focus_map(masks.get("myo"), (h, w), spacing),
        pixel_spacing_mm=spacing,
        heart_centre=(float(centre[0]), float(centre[1])),
    )


def split_patients(
    patients: Iterable[str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Seeded split BY PATIENT into (train, validation), both sorted.

    round(n * val_fraction) patients (at least 1 when val_fraction > 0 and n >= 2, never all) go to
    validation.
    """
    unique = sorted(set(patients))
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(unique) * val_fraction)
    if val_fraction > 0 and len(unique) >= 2:
        n_val = min(max(n_val, 1), len(unique) - 1)
    shuffled = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def _crop_window(centre: float, size: int, crop: int) -> int:
    """Start index of a `crop`-long window around `centre` kept inside [0, size) where possible."""
    start = int(round(centre - crop / 2))
    return min(max(start, 0), max(size - crop, 0)) if size >= crop else (size - crop) // 2


def _take(x: np.ndarray, y0: int, x0: int, crop: int) -> np.ndarray:
    """x[..., y0:y0+crop, x0:x0+crop] with zeros where the window leaves the image."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], crop, crop), dtype=x.dtype)
    ys, xs = slice(max(y0, 0), min(y0 + crop, h)), slice(max(x0, 0), min(x0 + crop, w))
    out[..., ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = x[..., ys, xs]
    return out


class TripletDataset(Dataset):
    """Heart-centred training crops (or whole slices with ``crop_size=None``) of the named slices.

    Items are dicts of float32 tensors: cine (F, c, c), ir (K, c, c), t1 (1, c, c), target (1, c, c),
    valid (1, c, c) (1 where the LGE covers the pixel), focus (1, c, c) (:func:`focus_map`), myo (1, c, c)
    (the LV myocardium mask, 0/1).
    """

    def __init__(
        self,
        path: str | Path,
        names: Sequence[str],
        config: ModelConfig,
        crop_size: int | None = 128,
        jitter_px: int = 16,
        augment: bool = True,
        intensity_jitter: float = 0.1,
        seed: int = 0,
        cine_dropout: float = 0.0,
    ) -> None:
        if not 0.0 <= cine_dropout <= 1.0:
            raise ValueError(f"cine_dropout must be in [0, 1], got {cine_dropout}")
        self.cine_dropout = cine_dropout
        self.path = Path(path)
        self.names = list(names)
        self.config = config
        self.crop_size = crop_size
        self.jitter_px = jitter_px
        self.augment = augment
        self.intensity_jitter = intensity_jitter
        self.seed = seed
        self.epoch = 0
        self._file: h5py.File | None = None
        self._pid = -1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def full_slice(self, index: int) -> FullSlice:
        """The whole normalised slice `index` (no crop, no augmentation)."""
        if self._file is None or self._pid != os.getpid():  # h5py handles must not cross a fork
            self._file, self._pid = _open(self.path), os.getpid()
        return read_slice(self._file["slices"][self.names[index]], self.config)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.full_slice(index)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        arrays = {
            **s.inputs.arrays(),
            "target": s.target[None],
            "valid": s.valid[None].astype(np.float32),
            "focus": s.focus[None],
            "myo": s.masks.get("myo", np.zeros(s.inputs.shape, bool))[None].astype(np.float32),
        }
        if self.crop_size is not None:
            c = self.crop_size
            cy, cx = np.asarray(s.heart_centre) + rng.uniform(-self.jitter_px, self.jitter_px, size=2)
            h, w = s.inputs.shape
            y0, x0 = _crop_window(cy, h, c), _crop_window(cx, w, c)
            arrays = {k: _take(v, y0, x0, c) for k, v in arrays.items()}
        if self.augment:
            arrays = self._augment(arrays, rng)
        if self.cine_dropout and np.random.default_rng((self.seed, self.epoch, index, 1)).random() < self.cine_dropout:
            arrays["cine"] = np.zeros_like(arrays["cine"])
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()}

    def _augment(self, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        flip_y, flip_x = rng.random(2) < 0.5
        turns = int(rng.integers(4)) if self.crop_size is not None else 2 * int(rng.integers(2))
        low, high = 1 - self.intensity_jitter, 1 + self.intensity_jitter
        gains = {"cine": rng.uniform(low, high), "ir": rng.uniform(low, high)}
        out = {}
        for name, x in arrays.items():
            x = x[..., ::-1, :] if flip_y else x
            x = x[..., :, ::-1] if flip_x else x
            out[name] = np.rot90(x, turns, axes=(-2, -1)) * np.float32(gains.get(name, 1.0))
        return out
