"""Ctrl-C: `synth` and `demo` stop at once and leave no half-written patient (each patient is written under
a temporary name and renamed when complete)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vne_inline.synth.exam import FILES

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vne_inline.cli"]


def _interrupt_while_writing(args: list[str], root: Path, timeout_s: float = 240.0) -> tuple[int, float, str]:
    """Start the command with SIGINT at its default, send SIGINT as soon as a patient is being written;
    (exit status, seconds from SIGINT to exit, output)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(CLI + args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + timeout_s
        while not list(root.rglob(".patient_*.partial-*")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no patient was being written"
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
        return proc.returncode, time.monotonic() - sent, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _no_partial_patient(root: Path) -> list[Path]:
    assert not list(root.rglob(".patient_*")), "a temporary patient directory was left"
    patients = sorted(root.rglob("patient_*"))
    for d in patients:
        assert sorted(p.name for p in d.iterdir()) == sorted(FILES), f"{d.name} is incomplete"
    return patients


@pytest.mark.slow
def test_synth_stops_on_ctrl_c_and_leaves_no_partial_patient(tmp_path):
    code, seconds, output = _interrupt_while_writing(["synth", "--out", "exams", "--patients", "4", "--workers", "2"],
                                                     tmp_path)
    assert code == 130, output
    assert seconds < 10, f"took {seconds:.1f} s to stop"  # before: every remaining patient was generated first
    assert "interrupted:" in output and "Traceback" not in output
    assert len(_no_partial_patient(tmp_path)) < 4


@pytest.mark.slow
def test_demo_stops_on_ctrl_c_and_leaves_no_partial_patient(tmp_path):
    code, seconds, output = _interrupt_while_writing(["demo", "--out", "demo", "--backend", "onnxruntime"], tmp_path)
    assert code == 130, output
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    assert "interrupted:" in output and "Traceback" not in output
    _no_partial_patient(tmp_path)
