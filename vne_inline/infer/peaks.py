"""Matrix-multiply peaks per runtime library and precision, with the kernels the backends use.

A backend's achieved FLOP/s means something only against the peak of its own library and precision
on the same machine in the same run: OpenVINO (oneDNN) float32, bfloat16 and int8 (u8 x s8)
MatMul; ONNX Runtime (MLAS) float32 MatMul and int8 MatMulInteger; PyTorch float32 and bfloat16
``torch.mm``. Each library is measured in a fresh process limited to the backends' thread count.
A product of size n x n x n counts 2 n^3 operations (multiply and add), for int8 too.

A precision the CPU cannot run natively is reported with the reason instead of a number when the
library says so (OpenVINO keeps float32 when its bf16 hint is not supported); otherwise the number
measured is what that library really achieves (PyTorch emulates bfloat16 on CPUs without a bf16 unit).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LIBRARIES", "PRECISIONS", "Peak", "measure", "measure_peaks"]

#: Library of each backend's kernels.
LIBRARIES = ("openvino", "onnxruntime", "pytorch")
#: Precisions a peak is measured for.
PRECISIONS = ("fp32", "bf16", "int8")
_MAX_N = 2048
_TARGET_S = 0.25  # time of one product: large enough to reach the peak, small enough for slow paths


@dataclass(frozen=True)
class Peak:
    """The best GFLOP/s of one library at one precision (NaN with `note` saying why when not measured)."""

    library: str
    precision: str
    gflops: float
    n: int = 0
    note: str = ""


def _rate(make: Callable[[int], Callable[[], object]], repeats: int = 5) -> tuple[float, int]:
    """(best GFLOP/s, n): n x n products timed at an n chosen so one product takes about 0.25 s."""
    n = 256
    while True:
        run = make(n)
        run()
        seconds = min(_seconds(run) for _ in range(2))
        if n >= _MAX_N or seconds * 8 > _TARGET_S:
            break
        n = min(_MAX_N, 2 * n)
    best = min([seconds, *(_seconds(run) for _ in range(repeats - 2))])
    return 2 * n**3 / best / 1e9, n


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


# ---------------------------------------------------------------------------------------- OpenVINO
def _openvino(threads: int) -> list[Peak]:
    import openvino as ov
    import openvino.opset13 as ops
    import openvino.properties as props
    import openvino.properties.hint as hints

    core = ov.Core()
    notes: dict[str, str] = {}

    def model(n: int, int8: bool):
        a, b = _operands(n)
        x = ops.parameter([n, n], np.float32, name="a")
        left, right = x, ops.constant(b)
        if int8:  # FakeQuantize on both operands: OpenVINO runs the product as u8 x s8 in oneDNN
            c = {v: ops.constant(np.float32(v)) for v in (-4.0, 0.0, 4.0)}
            left = ops.fake_quantize(x, c[0.0], c[4.0], c[0.0], c[4.0], 256)
            right = ops.fake_quantize(right, c[-4.0], c[4.0], c[-4.0], c[4.0], 255)
        return ov.Model([ops.matmul(left, right, False, False)], [x]), np.abs(a)

    def make(precision: str) -> Callable[[int], Callable[[], object]]:
        def build(n: int):
            graph, data = model(n, precision == "int8")
            compiled = core.compile_model(graph, "CPU", {
                hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
                hints.performance_mode: hints.PerformanceMode.LATENCY,
                props.inference_num_threads: threads, props.num_streams: 1,
            })
            ran = {str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in compiled.get_runtime_model().get_ops()
                   if str(op.get_rt_info()["layerType"].astype(str)) in ("FullyConnected", "MatMul")}
            notes[precision] = ",".join(sorted(ran))
            request = compiled.create_infer_request()
            return lambda: request.infer({0: data})
        return build

    peaks = []
    for precision in PRECISIONS:
        gflops, n = _rate(make(precision))
        ran = notes[precision]
        wanted = {"fp32": "f32", "bf16": "bf16", "int8": "u8"}[precision]
        if wanted not in ran.split(","):
            peaks.append(Peak("openvino", precision, math.nan, n, f"not supported: OpenVINO ran the product in {ran}"))
        else:
            peaks.append(Peak("openvino", precision, gflops, n, f"MatMul in {ran}"))
    return peaks


# ---------------------------------------------------------------------------------------- ONNX Runtime
def _onnxruntime(threads: int) -> list[Peak]:
    import onnxruntime as ort

    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        note = "not measured: building the test graph needs the onnx package (train extra)"
        return [Peak("onnxruntime", p, math.nan, 0, note) for p in PRECISIONS]

    def session(n: int, int8: bool):
        a, b = _operands(n)
        if int8:
            a_t, b_t = np.clip(np.abs(a) * 32, 0, 255).astype(np.uint8), np.clip(b * 32, -127, 127).astype(np.int8)
            node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
            in_type, out_type = TensorProto.UINT8, TensorProto.INT32
        else:
            a_t, b_t = a, b
            node = helper.make_node("MatMul", ["a", "b"], ["y"])
            in_type = out_type = TensorProto.FLOAT
        graph = helper.make_graph([node], "peak", [helper.make_tensor_value_info("a", in_type, [n, n])],
                                  [helper.make_tensor_value_info("y", out_type, [n, n])],
                                  initializer=[numpy_helper.from_array(b_t, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"a": a_t})

    peaks = []
    for precision in PRECISIONS:
        if precision == "bf16":
            peaks.append(Peak("onnxruntime", "bf16", math.nan, 0, "not supported: no bfloat16 kernels in the CPU provider"))
            continue
        gflops, n = _rate(lambda n, p=precision: session(n, p == "int8"))
        peaks.append(Peak("onnxruntime", precision, gflops, n, "MatMulInteger u8 x s8" if precision == "int8" else "MatMul"))
    return peaks


# ---------------------------------------------------------------------------------------- PyTorch
def _pytorch(threads: int) -> list[Peak]:
    import torch

    torch.set_num_threads(threads)

    def make(dtype):
        def build(n: int):
            a, b = (torch.from_numpy(x).to(dtype) for x in _operands(n))
            return lambda: torch.mm(a, b)
        return build

    peaks = []
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        gflops, n = _rate(make(dtype))
        peaks.append(Peak("pytorch", precision, gflops, n, f"torch.mm {dtype}".replace("torch.", "")))
    peaks.append(Peak("pytorch", "int8", math.nan, 0, "not measured: the PyTorch backend runs float32 only"))
    return peaks


_MEASURE = {"openvino": _openvino, "onnxruntime": _onnxruntime, "pytorch": _pytorch}


def measure(library: str, threads: int) -> list[Peak]:
    """Peaks of `library` in this process (see :func:`measure_peaks` for a clean process)."""
    return _MEASURE[library](threads)


def measure_peaks(threads: int, libraries: tuple[str, ...] = LIBRARIES) -> dict[tuple[str, str], Peak]:
    """Peaks by (library, precision), each library in a fresh process with `threads` threads.

    A library that is not installed or fails gets NaN peaks with the one-line reason.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    out: dict[tuple[str, str], Peak] = {}
    for library in libraries:
        code = ("import json, sys; from dataclasses import asdict; from vne_inline.infer.peaks import measure; "
                f"print(json.dumps([asdict(p) for p in measure({library!r}, {threads})]))")
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if run.returncode == 0:
            peaks = [Peak(**p) for p in json.loads(run.stdout.strip().splitlines()[-1])]
        else:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            peaks = [Peak(library, p, math.nan, 0, f"not measured: {last}") for p in PRECISIONS]
        out.update({(p.library, p.precision): p for p in peaks})
    return out
