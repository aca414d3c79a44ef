"""ONNX export of the generator: one self-contained file for every runtime backend (needs the `train` extra).

The model has inputs ``cine (B, F, H, W)``, ``ir (B, K, H, W)``, ``t1 (B, 1, H, W)`` and output
``vne (B, 1, H, W)``, all float32, with dynamic ``batch``, ``height`` and ``width`` (H and W multiples of
``2**depth``). Model metadata: ``vne_config`` (the :class:`ModelConfig` JSON), ``vne_precision``
(``fp32`` | ``fp16``) and ``vne_gflop_256`` (GFLOP per 256 x 256 slice, for `bench` without torch).

``fp16=True`` writes a mixed-precision graph for TensorRT's strongly typed mode (the only mode of
TensorRT 11, which no longer lowers precision by itself): weights, convolutions, activations and resizes in float16;
InstanceNormalization in float32 (its mean and variance over a whole image can overflow float16);
float32 inputs and output with Cast nodes at the edges, so every backend feeds both variants alike.
Name it ``x.fp16.onnx`` next to the float32 ``x.onnx``: TensorRT then uses it, the CPU backends (for
which float16 graphs are slow) keep ``x.onnx``.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from vne_inline.core.normalise import INPUT_NAMES
from vne_inline.infer.base import OUTPUT_NAME
from vne_inline.model.generator import VNEGenerator, count_gflop, load_weights
from vne_inline.modelspec import CONFIG_KEY

__all__ = ["OPSET", "export_onnx"]

#: ONNX opset of the export (TensorRT 10/11, ONNX Runtime and OpenVINO all read it).
OPSET = 18
#: Largest H or W the exported dims allow (pixels).
MAX_SIZE = 4096
_NORMS = (nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class _Float32Island(nn.Module):
    """Runs a normalisation layer in float32 inside a float16 graph."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.float()).to(x.dtype)


class _Float16Graph(nn.Module):
    """float32 in, float16 inside (normalisation in float32), float32 out; converts `model` in place."""

    def __init__(self, model: VNEGenerator) -> None:
        super().__init__()
        self.model = model.half()
        for name, module in list(self.model.named_modules()):
            if isinstance(module, _NORMS):
                parent_name, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent_name), child, _Float32Island(module))

    def forward(self, cine: torch.Tensor, ir: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        return self.model(cine.half(), ir.half(), t1.half()).float()


def _dynamic_shapes(multiple: int) -> dict[str, dict[int, object]]:
    dim = torch.export.Dim
    batch = dim("batch", min=1, max=1024)
    height = multiple * dim("height_blocks", min=1, max=MAX_SIZE // multiple)
    width = multiple * dim("width_blocks", min=1, max=MAX_SIZE // multiple)
    return {name: {0: batch, 2: height, 3: width} for name in INPUT_NAMES}


def _tidy(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Readable dim names, no per-node exporter metadata (stack traces with local paths), our metadata."""
    names = {0: "batch", 2: "height", 3: "width"}
    for value in [*proto.graph.input, *proto.graph.output]:
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            if axis in names:
                d.ClearField("dim_value")
                d.dim_param = names[axis]
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "vne-inline"


def export_onnx(model: VNEGenerator | str | Path, out: str | Path, fp16: bool = False) -> Path:
    """Write `model` (a generator, or a safetensors weights file) as a single-file ONNX model to `out`.

    Checked with ``onnx.checker`` (full check) before it replaces `out` atomically. Returns `out`.
    """
    generator = load_weights(model) if isinstance(model, (str, Path)) else copy.deepcopy(model)
    generator = generator.to("cpu", torch.float32).eval()
    config = generator.config
    m = config.size_multiple
    examples = tuple(
        torch.rand(2, channels, 2 * m, 3 * m) for channels in (config.n_cine_frames, config.n_ir_images, 1)
    )
    with warnings.catch_warnings():  # upstream notices about our own dim names and torch internals
        warnings.filterwarnings("ignore", message=r"# The axis name", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        program = torch.onnx.export(
            _Float16Graph(generator).eval() if fp16 else generator,
            examples,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=_dynamic_shapes(m),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    _tidy(proto, {
        CONFIG_KEY: config.to_json(),
        "vne_precision": "fp16" if fp16 else "fp32",
        "vne_gflop_256": f"{count_gflop(config, 256, 256):.6g}",
    })
    onnx.checker.check_model(proto, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    onnx.save_model(proto, str(tmp))
    os.replace(tmp, out)
    return out
