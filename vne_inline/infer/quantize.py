"""int8 models: static quantization of the float32 ONNX model, calibrated on real model inputs.

ONNX Runtime's ``quantize_static`` writes a quantize-dequantize (QDQ) model that ONNX Runtime runs
with its int8 convolution kernels and OpenVINO with oneDNN's. Convolutions only (73 % of the time;
InstanceNorm, LeakyReLU, Resize and Concat stay float32); weights int8 per output channel,
activations uint8 per tensor from the min/max over the calibration batches. On CPUs without VNNI
or AMX-INT8 the weights use 7 bits (``reduce_range``), as the u8 x s8 AVX2 multiply-add would
otherwise saturate. Needs the `onnx` package (train extra) to write the model; running it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from vne_inline.infer.onnx_meta import read_metadata
from vne_inline.modelspec import CONFIG_KEY

__all__ = ["quantize_int8"]

_PRECISION_KEY = "vne_precision"


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over a list of input batches."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in batch.items()}

    def rewind(self) -> None:  # the MinMax calibrator reads the data once
        pass


def quantize_int8(onnx: str | Path, batches: Iterable[Mapping[str, np.ndarray]], out: str | Path,
                  reduce_range: bool) -> Path:
    """Write the int8 QDQ model of float32 model `onnx` to `out`, calibrated on `batches` (padded model
    inputs by name, as the backends receive them); the model's metadata is kept, ``vne_precision`` = int8.
    Raises ValueError when there is no calibration batch."""
    import onnx as onnx_lib
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    batches = list(batches)
    if not batches:
        raise ValueError("int8 calibration needs at least one input batch")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    quantize_static(
        str(onnx), str(tmp), _Batches(batches), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
    )
    model = onnx_lib.load(str(tmp))
    meta = dict(read_metadata(onnx), **{_PRECISION_KEY: "int8"})
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    if CONFIG_KEY not in meta:
        raise ValueError(f"{Path(onnx).name}: no '{CONFIG_KEY}' metadata to carry into the int8 model")
    onnx_lib.save(model, str(tmp))
    tmp.replace(out)
    return out
