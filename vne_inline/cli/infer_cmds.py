"""`vne-inline export` (ONNX) and `vne-inline bench` (inference speed per backend)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vne_inline.cli.app import app
from vne_inline.cli.options import require_extra


@app.command()
def export(
    weights: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Generator weights (.safetensors).")],
    out: Annotated[Path, typer.Option(help="Output ONNX file (single file, no external data).")],
    fp16: Annotated[bool, typer.Option(help="FP16 graph for TensorRT's strongly typed mode (float32 inputs and "
                                       "output, InstanceNorm in float32); name it x.fp16.onnx next to x.onnx.")] = False,
) -> None:
    """Export the generator to ONNX: inputs cine, ir, t1; output vne; dynamic batch, height and width."""
    require_extra("train", "export", "torch", "onnx", "onnxscript")
    from vne_inline.infer.export import export_onnx

    path = export_onnx(weights, out, fp16=fp16)
    Console().print(f"{'fp16' if fp16 else 'fp32'} ONNX model written to {path} ({path.stat().st_size / 2**20:.1f} MiB)")


@app.command()
def bench(
    backends: Annotated[str, typer.Option(help="Comma-separated rows: a backend (tensorrt, openvino, onnxruntime, "
                                          "pytorch, pytorch-cuda) for all its precisions, or backend:precision "
                                          "(openvino:bf16, onnxruntime:int8); default: all.")] = "",
    model: Annotated[Path | None, typer.Option(help="Model (.onnx; its .safetensors sibling for pytorch). "
                                               "Default: the shipped model.")] = None,
    size: Annotated[int, typer.Option(min=16, help="Slice size (pixels, square).")] = 256,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per batch size (median reported).")] = 20,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: all available).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Also write the table and machine facts to this "
                                                  "Markdown file.")] = None,
) -> None:
    """Per backend and precision (fp32, bf16, int8): median ms per slice (batch 1 and 8), GFLOP/s and its
    share of the same library's matrix peak at that precision (measured in the same run), cold start
    and peak memory; names the CPU's matrix features."""
    from vne_inline.infer.bench import notes, parse_rows, run_bench, to_markdown, to_peak_table, to_table

    report = run_bench(parse_rows(backends), model, size, runs, threads)
    console = Console()
    console.print(to_table(report))
    console.print(to_peak_table(report))
    for line in notes(report):
        console.print(line, highlight=False, soft_wrap=True)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        command = "vne-inline " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        markdown.write_text(to_markdown(report, command))
        console.print(f"written to {markdown}")
