"""LGE image-quality grades: the reader's file and a synthetic exam's artefact record."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from vne_inline.io.lge_grading import (
    NONDIAGNOSTIC_FILE,
    read_nondiagnostic,
    recorded_nondiagnostic,
    synthetic_nondiagnostic,
)


def test_reader_file(tmp_path: Path) -> None:
    folder = tmp_path / "patient_001"
    folder.mkdir()
    assert read_nondiagnostic(tmp_path, "patient_001") == {}  # no file: every LGE slice diagnostic
    (folder / NONDIAGNOSTIC_FILE).write_text(
        "# graded by reader A\n2 respiratory ghosts\n\n  0   # no reason given\n07 wrap-around across the septum\n")
    assert read_nondiagnostic(tmp_path, "patient_001") == {
        2: "respiratory ghosts", 0: "marked non-diagnostic by the reader", 7: "wrap-around across the septum"}
    (folder / NONDIAGNOSTIC_FILE).write_text("2 ghosts\nslice 3\n")
    with pytest.raises(ValueError, match=r"line 2: expected '<slice index> \[reason\]'"):
        read_nondiagnostic(tmp_path, "patient_001")


def test_artefact_record() -> None:
    assert recorded_nondiagnostic({"artefacts": {"lge_ghosts": True, "lge_wrong_ti": True}}) == (
        "respiratory ghosts (synthetic exam's artefact record)")
    assert recorded_nondiagnostic({"artefacts": {"lge_ghosts": False, "lge_wrong_ti": True, "t1_motion": True}}) is None
    assert recorded_nondiagnostic({}) is None


def test_synthetic_exam(tmp_path: Path) -> None:
    from vne_inline.synth.exam import generate_patient

    assert synthetic_nondiagnostic(tmp_path) == {}  # no truth.h5
    directory = generate_patient(tmp_path, seed=0, index=4).directory  # artefact-free
    assert synthetic_nondiagnostic(directory) == {}
    with h5py.File(directory / "truth.h5", "r+") as f:
        attrs = json.loads(f.attrs["attrs"])
        attrs["artefacts"]["lge_ghosts"] = True
        f.attrs["attrs"] = json.dumps(attrs)
    graded = synthetic_nondiagnostic(directory)
    assert sorted(graded) == [0, 1, 2] and set(graded.values()) == {"respiratory ghosts (synthetic exam's artefact record)"}
