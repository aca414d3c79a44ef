"""Start-up checks and `vne-inline check`: a broken deployment says what is wrong in one line; a working one
makes a VNE end to end on the built-in synthetic slice and leaves nothing in the store."""

from __future__ import annotations

from pathlib import Path

from test_pipeline import FakeBackend
from typer.testing import CliRunner

from vne_inline.cli import app
from vne_inline.health import run_check, store_problem
from vne_inline.modelspec import ModelConfig


def _cli(args):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def _unwritable(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "store"


def test_store_problem_names_the_store(tmp_path):
    assert store_problem(tmp_path / "new" / "store") is None and (tmp_path / "new" / "store").is_dir()
    assert list((tmp_path / "new" / "store").iterdir()) == []  # the probe file is gone
    problem = store_problem(_unwritable(tmp_path))
    assert problem is not None and problem.startswith(f"slice store {_unwritable(tmp_path)} is not writable")


def test_serve_with_an_unwritable_store_refuses_to_start(tmp_path):
    result = _cli(["serve", "--port", "0", "--store", str(_unwritable(tmp_path))])
    assert result.exit_code == 1
    assert f"error: cannot start the server: slice store {_unwritable(tmp_path)} is not writable" in result.output


def test_check_makes_a_vne_end_to_end_and_leaves_the_store_empty(tmp_path):
    result = run_check({"store_dir": str(tmp_path / "store")}, backend=FakeBackend(config=ModelConfig(name="fake")))
    assert result.ok, result.lines
    assert result.vne is not None and result.vne.pixels.shape == (112, 128)
    assert "VNE made on the T1 map's grid" in result.lines[-1]
    assert list((tmp_path / "store").iterdir()) == []


def test_check_command_fails_clearly(tmp_path):
    missing = _cli(["check", "--store", str(tmp_path / "store"), "--model", str(tmp_path / "none.onnx"),
                    "--backend", "onnxruntime"])
    assert missing.exit_code == 1 and "check FAILED" in missing.output
    assert "no VNE made: backend unavailable" in missing.output and "none.onnx" in missing.output
    store = _cli(["check", "--store", str(_unwritable(tmp_path))])
    assert store.exit_code == 1 and "is not writable" in store.output and "Traceback" not in store.output


def test_check_command_passes_with_the_shipped_model(tmp_path):
    result = _cli(["check", "--store", str(tmp_path / "store"), "--backend", "onnxruntime", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "check passed" in result.output and "on onnxruntime" in result.output
    assert "input-domain check pass" in result.output  # the built-in slice is within the shipped domain
