"""Regions of interest per T1-map slice: LV myocardium, remote myocardium and LV blood pool.

Real exams have no ground truth, so the ROIs come from contour files (format in ``docs/contours.md``)::

    CONTOURS/<patient directory name>/slice_<k>.npz        arrays "myo", "remote", "blood"
    CONTOURS/<patient directory name>/slice_<k>_<roi>.nii[.gz]   one file per ROI (needs nibabel)

``k`` is the T1 map's ISMRMRD ``slice`` index. Arrays are 2-D on the T1 map's grid in its (y, x)
array order (NIfTI files are stored (x, y) and are transposed on reading). Non-zero = inside.
Synthetic exams give the same ROIs from ``truth.h5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ROI_NAMES", "SliceRois", "read_contours"]

#: The arrays every slice needs, in the order they are documented.
ROI_NAMES = ("myo", "remote", "blood")
_NPZ = re.compile(r"^slice_(\d+)\.npz$")
_NIFTI = re.compile(r"^slice_(\d+)_(myo|remote|blood)\.nii(\.gz)?$")


@dataclass(frozen=True)
class SliceRois:
    """Boolean (y, x) masks on one T1 slice's grid: LV myocardium, remote myocardium, LV blood pool."""

    myo: np.ndarray
    remote: np.ndarray
    blood: np.ndarray

    def __post_init__(self) -> None:
        for name in ROI_NAMES:
            mask = np.asarray(getattr(self, name)).astype(bool)
            if mask.ndim != 2:
                raise ValueError(f"{name} mask must be 2-D (y, x), got shape {mask.shape}")
            if mask.shape != np.shape(self.myo):
                raise ValueError(f"{name} mask shape {mask.shape} differs from myo {np.shape(self.myo)}")
            if not mask.any():
                raise ValueError(f"{name} mask is empty")
            object.__setattr__(self, name, mask)

    @property
    def shape(self) -> tuple[int, int]:
        return self.myo.shape


def _read_npz(path: Path) -> SliceRois:
    with np.load(path, allow_pickle=False) as f:
        missing = [name for name in ROI_NAMES if name not in f.files]
        if missing:
            raise ValueError(f"{path.name}: missing arrays {missing} (need {list(ROI_NAMES)})")
        return SliceRois(*(np.asarray(f[name]) for name in ROI_NAMES))


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError as exc:
        raise ValueError(f"{path.name}: reading NIfTI contours needs nibabel (pip install nibabel)") from exc
    data = np.squeeze(np.asanyarray(nibabel.load(str(path)).dataobj))
    if data.ndim != 2:
        raise ValueError(f"{path.name}: a NIfTI contour must hold one 2-D slice, got shape {data.shape}")
    return data.T  # NIfTI axis 0 is x (columns): -> (y, x)


def read_contours(directory: str | Path, patient: str) -> dict[int, SliceRois]:
    """The ROIs of one patient by T1 slice index; {} when the patient has no contour directory.

    Raises ValueError for a slice given both as npz and NIfTI, a NIfTI slice lacking an ROI, a
    missing array, an empty ROI or masks of different shapes.
    """
    folder = Path(directory) / patient
    if not folder.is_dir():
        return {}
    out: dict[int, SliceRois] = {}
    nifti: dict[int, dict[str, np.ndarray]] = {}
    for path in sorted(folder.iterdir()):
        if m := _NPZ.match(path.name):
            out[int(m.group(1))] = _read_npz(path)
        elif m := _NIFTI.match(path.name):
            nifti.setdefault(int(m.group(1)), {})[m.group(2)] = _read_nifti(path)
    for k, rois in sorted(nifti.items()):
        if k in out:
            raise ValueError(f"{patient}: slice {k} is given both as npz and as NIfTI")
        missing = [name for name in ROI_NAMES if name not in rois]
        if missing:
            raise ValueError(f"{patient}: slice {k} lacks NIfTI ROIs {missing}")
        out[k] = SliceRois(*(rois[name] for name in ROI_NAMES))
    return out
