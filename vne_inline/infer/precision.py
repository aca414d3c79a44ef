"""Which numeric precision a model runs in: the validation record beside the model and the choice of `auto`.

``vne-inline validate-precision`` (:mod:`vne_inline.validate.precision`) runs synthetic patients through
float32 and each reduced-precision candidate (OpenVINO bfloat16, int8 with ONNX Runtime or OpenVINO),
accepts a candidate when every slice's lesion burden stays within 0.5 percentage points of float32 at
every threshold, times every candidate, and writes the result beside the model::

    x.onnx              the float32 model (the reference)
    x.int8.onnx         its int8 quantize-dequantize model, calibrated on synthetic slices
    x.precision.json    the validation record, keyed by the SHA-256 of x.onnx (and of x.int8.onnx)

A record whose hashes do not match the files is ignored (it was made for other weights), so new
weights fall back to float32 until the command is run again. :func:`choose` picks, among the accepted
candidates this CPU can run (bfloat16 needs AMX-BF16 or AVX512-BF16), the fastest as timed in the
record when the record was made on a CPU with the same model name and matrix features; on another
CPU it prefers bfloat16 on a bf16 unit, then int8 on a VNNI or AMX-INT8 unit, else float32.
float32 is always available (``precision="fp32"``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from vne_inline.infer.cpu_features import MatrixFeatures, matrix_features

__all__ = [
    "INT8_SUFFIX", "PRECISIONS", "RECORD_SUFFIX", "TOLERANCE_POINTS", "Choice", "choose", "file_sha256",
    "int8_path", "read_record", "record_path", "write_record",
]

#: The precisions a CPU backend can be asked for ("auto" picks one of them).
PRECISIONS = ("fp32", "bf16", "int8")
#: ``x.onnx`` -> its int8 model ``x.int8.onnx``.
INT8_SUFFIX = ".int8.onnx"
#: ``x.onnx`` -> its validation record ``x.precision.json``.
RECORD_SUFFIX = ".precision.json"
#: Largest accepted burden difference per slice and threshold, in percentage points of the myocardium.
TOLERANCE_POINTS = 0.5
_FORMAT = 1


def int8_path(onnx: str | Path) -> Path:
    """The int8 model beside float32 model `onnx`."""
    return Path(onnx).with_suffix(INT8_SUFFIX)


def record_path(onnx: str | Path) -> Path:
    """The validation record beside float32 model `onnx`."""
    return Path(onnx).with_suffix(RECORD_SUFFIX)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_record(onnx: str | Path, record: dict) -> Path:
    """Write `record` (see :mod:`vne_inline.validate.precision`) beside `onnx`, stamped with the hashes
    of the model and of its int8 sibling (when present); returns the path."""
    onnx = Path(onnx)
    stamped = {"format": _FORMAT, "model": onnx.name, "model_sha256": file_sha256(onnx), **record}
    int8 = int8_path(onnx)
    stamped["int8_sha256"] = file_sha256(int8) if int8.is_file() else None
    path = record_path(onnx)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamped, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_record(onnx: str | Path) -> tuple[dict | None, str]:
    """(the record, "") when a record beside `onnx` matches its hash; else (None, why not)."""
    onnx, path = Path(onnx), record_path(onnx)
    if not path.is_file():
        return None, f"no precision validation for {onnx.name} (run `vne-inline validate-precision`)"
    try:
        record = json.loads(path.read_text())
        valid = record.get("format") == _FORMAT and isinstance(record.get("candidates"), list)
    except (OSError, ValueError) as exc:
        return None, f"{path.name} is unreadable ({exc})"
    if not valid:
        return None, f"{path.name} has an unknown format"
    if record.get("model_sha256") != file_sha256(onnx):
        return None, (f"{path.name} was made for other weights than {onnx.name} (hash differs); "
                      "run `vne-inline validate-precision` again")
    return record, ""


@dataclass(frozen=True)
class Choice:
    """A backend and precision to run, and the one-line reason (for the log)."""

    backend: str
    precision: str
    reason: str


def _runnable(candidate: dict, record: dict, onnx: Path, features: MatrixFeatures) -> str:
    """"" when this machine can run an accepted `candidate`; else why not."""
    if candidate["precision"] == "bf16" and not features.bf16_native:
        return "this CPU has no bf16 unit"
    if candidate["precision"] == "int8":
        int8 = int8_path(onnx)
        if not int8.is_file() or record.get("int8_sha256") != file_sha256(int8):
            return f"{int8.name} is missing or differs from the validated one"
    return ""


def _same_machine(record: dict, features: MatrixFeatures) -> bool:
    machine = record.get("machine", {})
    return machine.get("cpu") == features.model and machine.get("features") == features.names


def _preference(candidate: dict, features: MatrixFeatures) -> int:
    """Static order for a CPU the record was not timed on: bf16 on a bf16 unit, int8 on VNNI/AMX, fp32."""
    if candidate["precision"] == "bf16":
        return 0
    if candidate["precision"] == "int8" and features.int8_dot:
        return 1
    return 2 if candidate["precision"] == "fp32" else 3


def choose(onnx: str | Path, backend: str | None = None,
           features: MatrixFeatures | None = None) -> tuple[Choice | None, str]:
    """(the precision `auto` runs float32 model `onnx` in, restricted to `backend` when given, "");
    or (None, why) when no valid record beside it accepts a candidate this CPU can run: then float32
    in the usual backend order."""
    return _choose(Path(onnx), backend, features or matrix_features())


def _choose(onnx: Path, backend: str | None, features: MatrixFeatures) -> tuple[Choice | None, str]:
    record, why = read_record(onnx)
    if record is None:
        return None, why
    rows = [c for c in record["candidates"] if c.get("accepted") and (backend is None or c["backend"] == backend)]
    runnable = [c for c in rows if not _runnable(c, record, onnx, features)]
    if not runnable:
        return None, f"{record_path(onnx).name}: no accepted precision this CPU can run" + (f" with {backend}" if backend else "")
    timed = _same_machine(record, features) and all(c.get("ms_per_slice") for c in runnable)
    if timed:
        best = min(runnable, key=lambda c: c["ms_per_slice"])
        fp32 = [c["ms_per_slice"] for c in runnable if c["precision"] == "fp32"]
        versus = f" vs {min(fp32):.1f} ms for the fastest fp32" if fp32 and best["precision"] != "fp32" else ""
        how = f"fastest accepted: {best['ms_per_slice']:.1f} ms per 256 x 256 slice{versus}, timed on this CPU"
    else:
        best = min(runnable, key=lambda c: _preference(c, features))
        how = f"preferred on {features.describe()} (the record was timed on another CPU)"
    if best["precision"] == "fp32":
        accepted = ""
    else:
        accepted = (f"; validated on {record['validation']['patients']} synthetic patients: burden within "
                    f"{best['max_burden_diff_points']:.2f} points of fp32 on every slice")
    return Choice(best["backend"], best["precision"], how + accepted), ""
