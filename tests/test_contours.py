"""Contour files for real exams: npz and NIfTI per patient and T1 slice (docs/contours.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vne_inline.validate.contours import SliceRois, read_contours


def rois(shape=(6, 8)) -> dict[str, np.ndarray]:
    myo = np.zeros(shape, np.uint8)
    myo[1:5, 1:7] = 1
    remote = np.zeros(shape, bool)
    remote[1, 1:4] = True
    blood = np.zeros(shape, np.int16)
    blood[2:4, 3:5] = 7  # any non-zero value is inside
    return {"myo": myo, "remote": remote, "blood": blood}


def test_npz_per_slice_index(tmp_path: Path) -> None:
    folder = tmp_path / "patient_001"
    folder.mkdir()
    np.savez(folder / "slice_0.npz", **rois())
    np.savez_compressed(folder / "slice_02.npz", **rois())
    (folder / "notes.txt").write_text("ignored")
    got = read_contours(tmp_path, "patient_001")
    assert sorted(got) == [0, 2]
    r = got[2]
    assert r.shape == (6, 8) and r.myo.dtype == bool
    assert r.myo.sum() == 24 and r.remote.sum() == 3 and r.blood.sum() == 4
    assert r.blood[2, 3] and not r.blood[0, 0]  # (y, x) order kept as stored


def test_patient_without_contours_gives_nothing(tmp_path: Path) -> None:
    assert read_contours(tmp_path, "patient_009") == {}


def test_bad_npz_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    masks = rois()
    np.savez(folder / "slice_1.npz", myo=masks["myo"], blood=masks["blood"])
    with pytest.raises(ValueError, match="missing \\['remote'\\]"):
        read_contours(tmp_path, "p")
    np.savez(folder / "slice_1.npz", **{**masks, "remote": np.zeros((6, 8))})
    with pytest.raises(ValueError, match="remote mask is empty"):
        read_contours(tmp_path, "p")
    np.savez(folder / "slice_1.npz", **{**masks, "blood": np.ones((8, 6))})
    with pytest.raises(ValueError, match="differs from myo"):
        read_contours(tmp_path, "p")
    np.savez(folder / "slice_1.npz", **{**masks, "myo": np.ones((2, 6, 8))})
    with pytest.raises(ValueError, match="2-D"):
        read_contours(tmp_path, "p")


def test_lge_contours_are_optional_but_complete(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    masks = rois()
    shifted = {f"lge_{k}": np.roll(v, 1, axis=1) for k, v in masks.items()}
    np.savez(folder / "slice_0.npz", **masks)  # T1 contours only
    np.savez(folder / "slice_1.npz", **masks, **shifted)
    assert sorted(read_contours(tmp_path, "p")) == [0, 1]
    lge = read_contours(tmp_path, "p", "lge")
    assert sorted(lge) == [1]
    assert np.array_equal(lge[1].myo, shifted["lge_myo"]) and not np.array_equal(lge[1].myo, masks["myo"])
    np.savez(folder / "slice_1.npz", **masks, lge_myo=shifted["lge_myo"])
    with pytest.raises(ValueError, match="missing \\['lge_remote', 'lge_blood'\\]"):
        read_contours(tmp_path, "p", "lge")
    with pytest.raises(ValueError, match="image must be one of"):
        read_contours(tmp_path, "p", "cine")


def test_slice_rois_validate_directly() -> None:
    masks = rois()
    r = SliceRois(masks["myo"], masks["remote"], masks["blood"])
    assert r.remote.dtype == bool and r.shape == (6, 8)


def test_nifti_is_transposed_to_y_x(tmp_path: Path) -> None:
    nibabel = pytest.importorskip("nibabel")
    folder = tmp_path / "p"
    folder.mkdir()
    masks = rois()
    for name, mask in masks.items():
        data = mask.T.astype(np.uint8)[:, :, None]  # stored (x, y, 1), as ITK-family tools write slices
        nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(folder / f"slice_3_{name}.nii.gz"))
    got = read_contours(tmp_path, "p")
    assert sorted(got) == [3]
    for name, mask in masks.items():
        assert np.array_equal(getattr(got[3], name), mask.astype(bool))


def test_nifti_needs_every_roi_and_no_npz_twin(tmp_path: Path) -> None:
    nibabel = pytest.importorskip("nibabel")
    folder = tmp_path / "p"
    folder.mkdir()
    masks = rois()
    nibabel.save(nibabel.Nifti1Image(masks["myo"].T, np.eye(4)), str(folder / "slice_0_myo.nii"))
    with pytest.raises(ValueError, match="NIfTI ROIs: missing \\['remote', 'blood'\\]"):
        read_contours(tmp_path, "p")
    for name in ("remote", "blood"):
        nibabel.save(nibabel.Nifti1Image(masks[name].T.astype(np.uint8), np.eye(4)), str(folder / f"slice_0_{name}.nii"))
    np.savez(folder / "slice_0.npz", **masks)
    with pytest.raises(ValueError, match="both as npz and as NIfTI"):
        read_contours(tmp_path, "p")
