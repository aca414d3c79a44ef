"""`bench` runs end to end on a tiny model and returns well-formed numbers (no timing assertions)."""

from __future__ import annotations

import math

import pytest

from vne_inline.infer import select as select_module
from vne_inline.infer.bench import BATCHES, ROWS, notes, parse_rows, run_bench, to_markdown, to_table
from vne_inline.modelspec import ModelConfig

torch = pytest.importorskip("torch")

CONFIG = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, fusion_width=4, name="toy")


def test_bench_reports_numbers_and_unavailable_backends(tmp_path, monkeypatch):
    from vne_inline.model.generator import VNEGenerator, count_gflop, save_weights

    monkeypatch.setattr(select_module, "_cache", {})
    save_weights(VNEGenerator(CONFIG), tmp_path / "toy.safetensors")
    report = run_bench(parse_rows("pytorch,nonsense"), model=tmp_path / "toy.safetensors", size=30, runs=2, threads=1)
    assert report.size == 32  # rounded up to a multiple of 2**depth
    assert report.gflop == pytest.approx(count_gflop(CONFIG, 32, 32))
    assert report.peaks[("pytorch", "fp32")].gflops > 0 and report.threads == 1
    ok, missing = report.results
    assert ok.name == "pytorch" and ok.precision == "fp32" and not ok.error and "1 threads" in ok.detail
    assert set(ok.ms_per_slice) == set(BATCHES) and all(v > 0 for v in ok.ms_per_slice.values())
    for value in (ok.gflop_per_s, ok.peak_fraction, ok.cold_start_s, ok.peak_rss_mib):
        assert math.isfinite(value) and value > 0
    assert missing.name == "nonsense" and "unknown backend" in missing.error

    assert ok.peak_fraction == pytest.approx(ok.gflop_per_s / report.peaks[("pytorch", "fp32")].gflops)
    text = to_markdown(report, "vne-inline bench --runs 2")
    assert text.startswith("| backend | precision | GFLOP/slice | ms/slice b=1 | ms/slice b=3 |")
    assert "| nonsense | fp32 | unavailable |" in text and "- CPU: " in text and "- torch: " in text
    assert "| library | fp32 | bf16 | int8 |" in text and "| pytorch |" in text
    assert "Command: `vne-inline bench --runs 2`" in text
    assert len(notes(report)) == 2 + 3 and to_table(report).row_count == 2


def test_rows_name_backends_and_precisions():
    assert parse_rows("") == list(ROWS)
    assert parse_rows("openvino") == [("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
    assert parse_rows("onnxruntime:int8, pytorch") == [("onnxruntime", "int8"), ("pytorch", "fp32")]
