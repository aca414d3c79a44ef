"""The command line as a new user meets it: missing extras and bad files get one line naming the fix."""

from __future__ import annotations

import sys

import h5py
import pytest
from test_pipeline import T1_HEADER, t1_records
from typer.testing import CliRunner

from vne_inline.cli import app
from vne_inline.io.mrd_file import write_file


def _cli(args):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


@pytest.mark.parametrize(("command", "hidden"), [("train", "torch"), ("average", "torch"), ("export", "torch"),
                                                  ("prepare", "SimpleITK"), ("train-recipe", "torch"),
                                                  ("model-domain", "torch")])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch, command, hidden):
    monkeypatch.setitem(sys.modules, hidden, None)  # as if not installed: import fails, find_spec is None
    data = tmp_path / "triplets.h5"
    data.write_bytes(b"")
    args = {"train": ["train", "--data", str(data), "--out", str(tmp_path / "run")],
            "average": ["average", str(data), "--out", str(tmp_path / "avg.safetensors")],
            "export": ["export", "--weights", str(data), "--out", str(tmp_path / "m.onnx")],
            "prepare": ["prepare", str(tmp_path), "--out", str(tmp_path / "t.h5")],
            "train-recipe": ["train-recipe", "--out", str(tmp_path / "recipe")],
            "model-domain": ["model-domain", "--exams", str(tmp_path), "--weights", str(data), "--out",
                             str(tmp_path / "w.safetensors")]}[command]
    result = _cli(args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {command}") and f"{hidden} not installed" in line
    assert "pip install 'vne-inline[train]'" in line


def test_a_bad_image_header_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "t1map.h5"
    write_file(path, T1_HEADER, t1_records())
    with h5py.File(path, "r+") as f:
        head = f["dataset/image_3/header"][:]
        head["data_type"] = 77
        f["dataset/image_3/header"][:] = head
    for args in (["replay", str(path), "--out", str(tmp_path / "out.h5")], ["show", str(path), "--out", str(tmp_path / "x.png")]):
        result = _cli(args)
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        assert "t1map.h5: image_3 image 0 has a bad image header (Unknown image data type: 77)" in result.output


def test_version():
    from vne_inline import __version__

    result = _cli(["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"vne-inline {__version__}"


CLASSIFYING = ("replay", "serve", "gadgetron-worker", "show", "prepare", "evaluate")


@pytest.mark.parametrize("command", CLASSIFYING)
def test_every_classifying_command_takes_the_role_rules(command):
    text = _cli([command, "--help"]).output
    assert "--series-roles" in text and "--role-patterns" in text


@pytest.mark.parametrize("command", ("serve", "gadgetron-worker", "evaluate", "prepare"))
def test_long_running_commands_take_a_log_level(command):
    assert "--log-level" in _cli([command, "--help"]).output


@pytest.mark.parametrize("command", ("replay", "serve", "gadgetron-worker"))
def test_the_vne_series_option_is_named_as_the_property(command):
    assert "--vne-series-index" in _cli([command, "--help"]).output


def test_prepare_and_evaluate_both_take_exams(tmp_path):
    for command in ("prepare", "evaluate"):
        assert "--exams" in _cli([command, "--help"]).output
    result = _cli(["prepare", "--exams", str(tmp_path), "--out", str(tmp_path / "t.h5"), "--no-register"])
    assert result.exit_code == 0 and "0 triplets written" in result.output, result.output
