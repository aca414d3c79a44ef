"""Regions of interest per T1-map slice: LV myocardium, remote myocardium and LV blood pool.

Real exams have no ground truth, so the ROIs come from contour files (format in ``docs/contours.md``)::

    CONTOURS/<patient directory name>/slice_<k>.npz        arrays "myo", "remote", "blood"
    CONTOURS/<patient directory name>/slice_<k>_<roi>.nii[.gz]   one file per ROI (needs nibabel)

``k`` is the T1 map's ISMRMRD ``slice`` index. Arrays are 2-D on the T1 map's grid in its (y, x)
array order (NIfTI files are stored (x, y) and are transposed on reading). Non-zero = inside.
Optionally, the ROIs drawn on the LGE (resampled onto the same T1 grid, as ``vne-inline evaluate``
resamples the LGE image) as arrays ``lge_myo``, ``lge_remote``, ``lge_blood`` in the same npz, or
files ``slice_<k>_lge_<roi>.nii[.gz]``; without them the LGE is read with the T1 ROIs.
Optionally, ``CONTOURS/<patient>/lge_nondiagnostic.txt`` lists the T1 slices whose matched LGE the
reader graded non-diagnostic (`vne_inline.io.lge_grading`): they are kept out of the primary
analysis. Synthetic exams give the same ROIs from ``truth.h5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IMAGES", "ROI_NAMES", "SliceRois", "read_contours"]

#: The arrays every slice needs, in the order they are documented.
ROI_NAMES = ("myo", "remote", "blood")
#: Which image the contours were drawn on -> the prefix of their array and file names.
IMAGES = {"t1": "", "lge": "lge_"}
_NPZ = re.compile(r"^slice_(\d+)\.npz$")
_NIFTI = re.compile(r"^slice_(\d+)_((?:lge_)?(?:myo|remote|blood))\.nii(\.gz)?$")


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


def _complete(found: set[str], names: list[str], what: str, optional: bool) -> bool:
    """True when every name is found; False when none is and the set is optional; else ValueError."""
    missing = [n for n in names if n not in found]
    if not missing:
        return True
    if optional and len(missing) == len(names):
        return False
    raise ValueError(f"{what}: missing {missing} (need {names})")


def _read_npz(path: Path, prefix: str) -> SliceRois | None:
    names = [prefix + n for n in ROI_NAMES]
    with np.load(path, allow_pickle=False) as f:
        if not _complete(set(f.files), names, path.name, optional=bool(prefix)):
            return None
        return SliceRois(*(np.asarray(f[name]) for name in names))


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError as exc:
        raise ValueError(f"{path.name}: reading NIfTI contours needs nibabel (pip install nibabel)") from exc
    data = np.squeeze(np.asanyarray(nibabel.load(str(path)).dataobj))
    if data.ndim != 2:
        raise ValueError(f"{path.name}: a NIfTI contour must hold one 2-D slice, got shape {data.shape}")
    return data.T  # NIfTI axis 0 is x (columns): -> (y, x)


def read_contours(directory: str | Path, patient: str, image: str = "t1") -> dict[int, SliceRois]:
    """The ROIs of one patient drawn on `image` ("t1": the T1 map, required for every slice listed;
    "lge": the optional LGE set) by T1 slice index; {} when the patient has no contour directory.

    Raises ValueError for a slice given both as npz and NIfTI, a slice lacking some (for "lge": some
    but not all) of its ROIs, an empty ROI or masks of different shapes.
    """
    if image not in IMAGES:
        raise ValueError(f"image must be one of {sorted(IMAGES)}, got {image!r}")
    prefix = IMAGES[image]
    names = [prefix + n for n in ROI_NAMES]
    folder = Path(directory) / patient
    if not folder.is_dir():
        return {}
    out: dict[int, SliceRois] = {}
    npz: set[int] = set()
    nifti: dict[int, dict[str, np.ndarray]] = {}
    for path in sorted(folder.iterdir()):
        if m := _NPZ.match(path.name):
            npz.add(int(m.group(1)))
            if (rois := _read_npz(path, prefix)) is not None:
                out[int(m.group(1))] = rois
        elif (m := _NIFTI.match(path.name)) and m.group(2) in names:
            nifti.setdefault(int(m.group(1)), {})[m.group(2)] = _read_nifti(path)
    for k, rois in sorted(nifti.items()):
        if k in npz:
            raise ValueError(f"{patient}: slice {k} is given both as npz and as NIfTI")
        _complete(set(rois), names, f"{patient}: slice {k} NIfTI ROIs", optional=False)
        out[k] = SliceRois(*(rois[name] for name in names))
    return out
