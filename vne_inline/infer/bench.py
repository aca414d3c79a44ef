"""Inference speed per backend and precision (`vne-inline bench`).

Per row (a backend at a precision: OpenVINO fp32 / bf16 / int8, ONNX Runtime fp32 / int8, PyTorch fp32,
TensorRT): model GFLOP per slice, median ms per slice at batch 1 and 3 (a T1 scan), achieved GFLOP/s at batch 1 and
its share of the matrix-multiply peak of the same library at the same precision, measured in the same
run with the same thread count (:mod:`vne_inline.infer.peaks`), cold start (import + load + first slice
in a fresh process) and that process's peak resident memory. The CPU's matrix features are named
(:mod:`vne_inline.infer.cpu_features`). With a CUDA GPU and torch, the rows ``pytorch-cuda``
(float16 and bfloat16 weights, CUDA graphs) stand in for TensorRT where no engine exists; without one
they say "not measured".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from vne_inline.infer.base import BackendError, default_threads, model_file
from vne_inline.infer.cpu_features import matrix_features
from vne_inline.infer.onnx_meta import read_metadata, read_onnx_config
from vne_inline.infer.peaks import LIBRARIES, PRECISIONS, Peak, measure_peaks
from vne_inline.infer.select import load_backend
from vne_inline.modelspec import ModelConfig, read_config

__all__ = ["BATCHES", "CUDA_STANDIN", "ROWS", "BackendResult", "BenchReport", "notes", "parse_rows", "run_bench",
           "to_markdown", "to_peak_table", "to_table"]

#: Batch sizes timed for every backend: one slice, and the three slices of a T1-mapping scan.
BATCHES = (1, 3)
#: Name of the PyTorch CUDA rows (float16 and bfloat16 weights, CUDA graphs; TensorRT stand-in).
CUDA_STANDIN = "pytorch-cuda"
#: (backend, precision) rows benchmarked by default, in table order.
ROWS: tuple[tuple[str, str], ...] = (
    ("tensorrt", "engine"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"),
    ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("pytorch", "fp32"), (CUDA_STANDIN, "fp16"), (CUDA_STANDIN, "bf16"),
)
_GPU_ROWS = ("tensorrt", CUDA_STANDIN)


@dataclass
class BackendResult:
    """One backend's numbers (ms per slice by batch size); `error` set when it could not be loaded."""

    name: str
    precision: str = "fp32"
    detail: str = ""
    ms_per_slice: dict[int, float] = field(default_factory=dict)
    gflop_per_s: float = float("nan")
    peak_fraction: float = float("nan")
    cold_start_s: float = float("nan")
    peak_rss_mib: float = float("nan")
    error: str = ""


@dataclass
class BenchReport:
    """A whole bench run: settings, the model's GFLOP per slice, the matrix peaks by (library,
    precision), machine facts, one result per row."""

    size: int
    threads: int
    runs: int
    gflop: float
    peaks: dict[tuple[str, str], Peak]
    machine: dict[str, str]
    results: list[BackendResult]


# ---------------------------------------------------------------------------------------- measurements
def gflop_per_slice(config: ModelConfig, model: str | Path | None, size: int) -> float:
    """Forward GFLOP for one size x size slice: ``count_gflop`` with torch, else the value the export stored."""
    try:
        from vne_inline.model.generator import count_gflop
    except ImportError:
        stored = read_metadata(model_file(model, ".onnx")).get("vne_gflop_256")
        return float(stored) * (size / 256) ** 2 if stored else float("nan")
    return count_gflop(config, size, size)


def _random_batch(config: ModelConfig, batch: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    channels = {"cine": config.n_cine_frames, "ir": config.n_ir_images, "t1": 1}
    return {name: rng.random((batch, c, size, size), dtype=np.float32) for name, c in channels.items()}


def time_backend(backend, size: int, batch: int, runs: int) -> float:
    """Median ms per slice of `backend.run` on random (batch, C, size, size) inputs, after 2 warm-up runs."""
    inputs = _random_batch(backend.config, batch, size)
    times = []
    for i in range(runs + 2):
        start = time.perf_counter()
        backend.run(inputs)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000 / batch


_COLD_START = """
import time
start = time.perf_counter()
import json, sys
import numpy as np
from vne_inline.core.normalise import ModelInputs
from vne_inline.infer import load_backend, predict
name, model, threads, size, precision = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
backend = load_backend(name, model, threads, precision)
c = backend.config
rng = np.random.default_rng(0)
item = ModelInputs(*(rng.random((n, size, size), dtype=np.float32) for n in (c.n_cine_frames, c.n_ir_images, 1)))
predict(backend, [item])
seconds = time.perf_counter() - start
try:  # this process's own peak; ru_maxrss would carry over the parent's peak through fork + exec
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 2**10
except OSError:
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
print(json.dumps({"seconds": seconds, "rss_mib": rss}))
"""


def cold_start(name: str, model: str | Path | None, threads: int, size: int, precision: str = "fp32") -> tuple[float, float]:
    """(seconds, peak RSS MiB) of import + load + one size x size slice in a fresh Python process
    (interpreter start-up excluded)."""
    args = [sys.executable, "-c", _COLD_START, name, str(model or ""), str(threads), str(size), precision]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["no output"]
        raise BackendError(f"cold-start process failed: {lines[-1]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["rss_mib"]


def _cuda_standin(model: str | Path | None, size: int, runs: int, precision: str) -> BackendResult:
    """PyTorch float16 or bfloat16 (`precision`) on the GPU with CUDA graphs; ms per slice from CUDA events."""
    import torch

    from vne_inline.model.generator import load_weights

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    net = load_weights(model_file(model, ".safetensors"), "cuda").to(dtype)
    result = BackendResult(CUDA_STANDIN, precision, f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {precision}, CUDA graphs")
    for batch in BATCHES:
        static = [torch.from_numpy(a).to("cuda", dtype) for a in _random_batch(net.config, batch, size).values()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for _ in range(3):
                    net(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                net(*static)
        times = []
        for _ in range(runs):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        result.ms_per_slice[batch] = float(np.median(times)) / batch
    result.detail += f", {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU memory at most"
    return result


def _bench_one(name: str, precision: str, model: str | Path | None, size: int, runs: int, threads: int) -> BackendResult:
    if name == CUDA_STANDIN:
        if not _cuda_available():
            raise BackendError("not measured: no CUDA GPU visible to torch")
        return _cuda_standin(model, size, runs, precision)
    backend = load_backend(name, model, threads, "fp32" if precision == "engine" else precision)
    result = BackendResult(name, precision, backend.detail)
    for batch in BATCHES:
        result.ms_per_slice[batch] = time_backend(backend, size, batch, runs)
    result.cold_start_s, result.peak_rss_mib = cold_start(name, model, threads, size, result.precision)
    return result


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def parse_rows(text: str) -> list[tuple[str, str]]:
    """Rows from "openvino,onnxruntime:int8,pytorch" (a backend alone: all its rows); [] -> :data:`ROWS`."""
    rows: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, precision = item.partition(":")
        known = [r for r in ROWS if r[0] == name and (not precision or r[1] == precision)]
        rows += known or [(name, precision or "fp32")]
    return rows or list(ROWS)


# ---------------------------------------------------------------------------------------- machine facts
def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def machine_facts(threads: int) -> dict[str, str]:
    """CPU model and matrix features, CPUs, threads used, load average, OS, Python and runtime versions."""
    features = matrix_features()
    facts = {
        "CPU": features.describe(),
        "CPUs available": str(default_threads()),
        "threads used": str(threads),
        "load average (1 min) at start": _load(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
    }
    for package in ("numpy", "onnxruntime", "openvino", "torch", "tensorrt"):
        try:
            facts[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[package] = "not installed"
    return facts


# ---------------------------------------------------------------------------------------- the run
def run_bench(rows: list[tuple[str, str]] | None = None, model: str | Path | None = None, size: int = 256,
              runs: int = 20, threads: int | None = None) -> BenchReport:
    """Benchmark `rows` of (backend, precision) (default :data:`ROWS`) and the matrix peaks of their
    libraries in the same run.

    `size` is rounded up to the model's size multiple. A row that cannot be run (backend missing,
    precision not supported by this CPU, no int8 model, no GPU) gets its one-line reason instead of numbers.
    """
    threads = threads or default_threads()
    rows = rows or list(ROWS)
    facts = machine_facts(threads)
    config = _config(model)
    size = -(-size // config.size_multiple) * config.size_multiple
    gflop = gflop_per_slice(config, model, size)
    peaks = measure_peaks(threads, tuple(lib for lib in LIBRARIES if any(r[0] == lib for r in rows)))
    results = []
    for name, precision in rows:
        try:
            result = _bench_one(name, precision, model, size, runs, threads)
        except Exception as exc:  # report any failure as the row's reason, keep benchmarking the rest
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            results.append(BackendResult(name, precision, error=reason))
            continue
        result.gflop_per_s = gflop / (result.ms_per_slice[1] / 1000)
        peak = peaks.get((name, precision))
        if name not in _GPU_ROWS and peak is not None and peak.gflops == peak.gflops:
            result.peak_fraction = result.gflop_per_s / peak.gflops
        results.append(result)
    facts["load average (1 min) at end"] = _load()  # other work on the machine skews every number
    return BenchReport(size, threads, runs, gflop, peaks, facts, results)


def _config(model: str | Path | None) -> ModelConfig:
    """The model's configuration from its ONNX file, else from its safetensors weights."""
    try:
        return read_onnx_config(model_file(model, ".onnx"))
    except BackendError:
        return read_config(model_file(model, ".safetensors"))


# ---------------------------------------------------------------------------------------- output
_HEADERS = ("backend", "precision", "GFLOP/slice", *(f"ms/slice b={b}" for b in BATCHES), "GFLOP/s b=1",
            "own peak GFLOP/s", "share of peak", "cold start s", "peak RSS MiB")
_PEAK_HEADERS = ("library", *PRECISIONS)


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def _rows(report: BenchReport) -> list[tuple[str, ...]]:
    rows = []
    for r in report.results:
        if r.error:
            rows.append((r.name, r.precision, "unavailable", *["-"] * (len(_HEADERS) - 3)))
            continue
        peak = report.peaks.get((r.name, r.precision))
        share = "-" if r.peak_fraction != r.peak_fraction else f"{100 * r.peak_fraction:.0f} %"
        rows.append((r.name, r.precision, _fmt(report.gflop, 2), *(_fmt(r.ms_per_slice[b]) for b in BATCHES),
                     _fmt(r.gflop_per_s, 0), _fmt(peak.gflops if peak else float("nan"), 0), share,
                     _fmt(r.cold_start_s, 2), _fmt(r.peak_rss_mib, 0)))
    return rows


def _peak_rows(report: BenchReport) -> list[tuple[str, ...]]:
    libraries = sorted({lib for lib, _ in report.peaks}, key=LIBRARIES.index)
    return [(lib, *(_fmt(report.peaks[(lib, p)].gflops, 0) for p in PRECISIONS)) for lib in libraries]


def _caption(report: BenchReport) -> str:
    return (f"{report.size} x {report.size} slices, {report.threads} threads, median of {report.runs} runs; "
            "share of peak: achieved GFLOP/s / the matrix-multiply peak of the same library and precision")


def notes(report: BenchReport) -> list[str]:
    """One line per row (its runtime details, or why it is unavailable), then one per matrix peak."""
    lines = [f"{r.name} {r.precision}: {'unavailable: ' + r.error if r.error else r.detail}" for r in report.results]
    return lines + [f"peak {p.library} {p.precision}: {p.note}" + (f" (n = {p.n})" if p.n else "")
                    for p in report.peaks.values()]


def to_table(report: BenchReport):
    """The report as a rich Table (print :func:`notes` with it)."""
    from rich.table import Table

    table = Table(*_HEADERS, title="vne-inline bench", caption=_caption(report))
    for row in _rows(report):
        table.add_row(*row)
    return table


def to_peak_table(report: BenchReport):
    """The matrix peaks (GFLOP/s) by library and precision as a rich Table."""
    from rich.table import Table

    table = Table(*_PEAK_HEADERS, title="matrix-multiply peaks, GFLOP/s", caption=report.machine["CPU"])
    for row in _peak_rows(report):
        table.add_row(*row)
    return table


def to_markdown(report: BenchReport, command: str = "") -> str:
    """The report as Markdown: the table, one line per backend, and the machine facts."""
    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + " --- |" * len(_HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines += ["", _caption(report) + ".", "", "Matrix-multiply peaks (GFLOP/s, 2 n^3 per n x n product, best of 5, "
              f"{report.threads} threads):", ""]
    lines += ["| " + " | ".join(_PEAK_HEADERS) + " |", "|" + " --- |" * len(_PEAK_HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _peak_rows(report)]
    lines += [""]
    lines += [f"- {line}" for line in notes(report)]
    lines += ["", "Machine:", ""] + [f"- {key}: {value}" for key, value in report.machine.items()]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
