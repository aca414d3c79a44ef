"""Ground truth per T1-map slice, on the T1 grid: `truth.h5` written and read back as `SliceTruth`.

Per slice: LV myocardium mask (LV myocardial fraction >= 0.5; papillary muscles and trabeculae
excluded), lesion masks by grade (lesion fraction >= 0.5, grade of the larger share), remote ROI
(mid-wall myocardium: >= 90 % of the pixel, >= 2.5 mm inside the
myocardial border and >= 5 mm from any lesion, so that a few mm of misregistration between scans keeps it
inside the wall), LV blood-pool ROI (pure LV blood >= 3 mm
from anything else, so away from wall, papillary muscles and trabeculae), the true native T1 (ms,
partial-volume weighted over the non-air tissue, noiseless; 0 in air) and the artefact-free noiseless
LGE (the PSIR signal at the TI nulling remote myocardium, with coil shading, in lge.h5 units) of the
anatomy as it lay during the T1 scan. Plus the slice geometry and, as JSON attributes, the patient's
parameters and derived facts (phenotype, true lesion burden, artefact flags, movement).

Per LGE slice (groups ``lge_NN``, :class:`SliceMasks`): the same five masks on the LGE slice's own grid,
of the anatomy as it lay during the LGE scan: the contours a reader draws on the LGE image, which the
patient's movement between the scans shifts against the T1 slice's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import distance_transform_edt

from vne_inline.geometry import SliceGeometry
from vne_inline.synth.contrast import weighted_sum
from vne_inline.synth.labels import LABEL_TISSUE, Label
from vne_inline.synth.sampling import PixelMix

__all__ = ["SliceTruth", "SliceMasks", "read_lge_truth", "truth_masks", "true_t1_ms", "write_truth", "read_truth", "REMOTE_MARGIN_MM", "REMOTE_CORE_MM", "BLOOD_MARGIN_MM"]

REMOTE_MARGIN_MM = 5.0  # remote ROI distance from lesions
REMOTE_CORE_MM = 2.5  # remote ROI depth inside the myocardial border
BLOOD_MARGIN_MM = 3.0  # blood ROI distance from anything but LV blood
_MASKS = ("myocardium", "lesion_hyperintense", "lesion_intermediate", "remote", "blood")
_GEOMETRY = ("position", "read_dir", "phase_dir", "slice_dir", "fov")


@dataclass
class SliceMasks:
    """The five truth masks of slice `slice` (arrays (ny, nx) on `geometry`); as such, an LGE slice's."""

    slice: int
    geometry: SliceGeometry
    myocardium: np.ndarray
    lesion_hyperintense: np.ndarray
    lesion_intermediate: np.ndarray
    remote: np.ndarray
    blood: np.ndarray

    @property
    def lesion(self) -> np.ndarray:
        """Lesion pixels of either grade."""
        return self.lesion_hyperintense | self.lesion_intermediate


@dataclass
class SliceTruth(SliceMasks):
    """Ground truth of T1-map slice `slice`: the masks plus true T1, artefact-free LGE and attributes."""

    t1_true_ms: np.ndarray
    lge_true: np.ndarray
    attrs: dict = field(default_factory=dict)


def _depth(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Distance (mm) of each pixel of `mask` from the nearest pixel outside it (0 outside)."""
    return distance_transform_edt(mask, sampling=(spacing[1], spacing[0]))


def _far_from(mask: np.ndarray, margin_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """Pixels at least `margin_mm` from every pixel of `mask` (all pixels if the mask is empty)."""
    if not mask.any():
        return np.ones_like(mask)
    return _depth(~mask, spacing) >= margin_mm


def truth_masks(mix: PixelMix, geometry: SliceGeometry) -> dict[str, np.ndarray]:
    """The five masks of one slice from its partial-volume mixture."""
    shape = geometry.shape
    myo_frac = mix.labels[Label.LV_MYO].reshape(shape)
    hyper_frac, inter_frac = (f.reshape(shape) for f in mix.lesion)
    total = hyper_frac + inter_frac
    myocardium = myo_frac >= 0.5
    is_lesion = total >= 0.5
    hyper = is_lesion & (hyper_frac >= inter_frac)
    spacing = geometry.pixel_spacing
    remote = (myo_frac >= 0.9) & (_depth(myocardium, spacing) >= REMOTE_CORE_MM) & _far_from(total > 0.05, REMOTE_MARGIN_MM, spacing)
    pure_blood = mix.labels[Label.LV_BLOOD].reshape(shape) >= 0.99
    blood = _depth(pure_blood, spacing) >= BLOOD_MARGIN_MM
    return {"myocardium": myocardium, "lesion_hyperintense": hyper, "lesion_intermediate": is_lesion & ~hyper,
            "remote": remote, "blood": blood}


def true_t1_ms(mix: PixelMix, component_t1: dict[str, float], lesion_t1: tuple[float, float]) -> np.ndarray:
    """Partial-volume weighted native T1 (ms) over non-air tissue; 0 where air fills half the pixel."""
    per_label = np.array([0.0 if LABEL_TISSUE[lb] == "air" else component_t1[LABEL_TISSUE[lb]] for lb in Label], np.float32)
    delta = np.array([lesion_t1[0] - component_t1["myocardium"], lesion_t1[1] - component_t1["myocardium"]], np.float32)
    tissue = 1.0 - mix.labels[Label.AIR]
    t1 = (weighted_sum(per_label, mix.labels) + weighted_sum(delta, mix.lesion)) / np.maximum(tissue, 1e-6)
    return np.where(tissue >= 0.5, t1, 0.0).astype(np.float32)


def _write_masks(h5: h5py.File, name: str, t: SliceMasks) -> h5py.Group:
    """Group `name` with the slice index, geometry and the five masks of `t`."""
    g = h5.create_group(name)
    g.attrs["slice"] = t.slice
    for key in _GEOMETRY:
        g.attrs[key] = np.asarray(getattr(t.geometry, key), dtype=np.float64)
    g.attrs["matrix"] = np.asarray(t.geometry.matrix, dtype=np.int64)
    for key in _MASKS:
        g.create_dataset(key, data=getattr(t, key).astype(np.uint8), compression="gzip")
    return g


def _read_masks(g: h5py.Group) -> dict:
    """Slice index, geometry and masks of a group written by :func:`_write_masks`."""
    geometry = SliceGeometry(**{k: np.array(g.attrs[k]) for k in _GEOMETRY}, matrix=tuple(int(v) for v in g.attrs["matrix"]))
    return {"slice": int(g.attrs["slice"]), "geometry": geometry, **{k: np.asarray(g[k][()], dtype=bool) for k in _MASKS}}


def write_truth(path: str | Path, truths: list[SliceTruth], attrs: dict, lge: list[SliceMasks] = ()) -> None:
    """Write `truth.h5`: one group per T1 slice and per LGE slice, plus JSON attributes (`attrs` at the root)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.attrs["format"] = "vne-inline synthetic truth 1"
        h5.attrs["attrs"] = json.dumps(attrs)
        for t in lge:
            _write_masks(h5, f"lge_{t.slice:02d}", t)
        for t in truths:
            g = _write_masks(h5, f"slice_{t.slice:02d}", t)
            g.attrs["attrs"] = json.dumps(t.attrs)
            g.create_dataset("t1_true_ms", data=t.t1_true_ms.astype(np.float32), compression="gzip")
            g.create_dataset("lge_true", data=t.lge_true.astype(np.float32), compression="gzip")


def _open(path: Path) -> h5py.File:
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path.name}: not a readable truth file ({exc})") from exc
    if "attrs" not in h5.attrs:
        h5.close()
        raise ValueError(f"{path.name}: not a vne-inline truth file")
    return h5


def read_truth(path: str | Path) -> list[SliceTruth]:
    """The T1 slices of a `truth.h5`, in slice order; `attrs` merges the file's and the slice's JSON."""
    with _open(Path(path)) as h5:
        common = json.loads(h5.attrs["attrs"])
        return [
            SliceTruth(
                **_read_masks(g := h5[name]),
                t1_true_ms=np.asarray(g["t1_true_ms"][()]),
                lge_true=np.asarray(g["lge_true"][()]),
                attrs=common | json.loads(g.attrs["attrs"]),
            )
            for name in sorted(k for k in h5 if k.startswith("slice_"))
        ]


def read_lge_truth(path: str | Path) -> list[SliceMasks]:
    """The LGE slices of a `truth.h5`, in slice order (empty for files written before they were added)."""
    with _open(Path(path)) as h5:
        return [SliceMasks(**_read_masks(h5[name])) for name in sorted(k for k in h5 if k.startswith("lge_"))]
