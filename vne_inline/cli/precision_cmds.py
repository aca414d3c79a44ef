"""`vne-inline validate-precision`: reduced precision (bf16, int8) validated on lesion burden."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app

#: Synthetic data sets of the precision validation (never used in training or model selection).
VALIDATION_SEED = 4040
CALIBRATION_SEED = 4041


def _exams(given: Path | None, root: Path, name: str, patients: int, seed: int, workers: int) -> Path:
    """`given`, or `patients` synthetic exams of `seed` generated under `root`."""
    if given is not None:
        return given
    from vne_inline.synth.exam import generate_exams

    out = root / name
    for summary in generate_exams(out, patients, seed, workers=workers):
        typer.echo(f"{name} {summary.directory.name} generated")
    return out


@app.command("validate-precision")
def validate_precision(
    patients: Annotated[int, typer.Option(min=1, help="Synthetic patients validated.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the validation patients.")] = VALIDATION_SEED,
    calibration_patients: Annotated[int, typer.Option(min=1, help="Synthetic patients calibrating int8.")] = 6,
    calibration_seed: Annotated[int, typer.Option(help="Seed of the calibration patients.")] = CALIBRATION_SEED,
    model: Annotated[Path | None, typer.Option(help="Float32 ONNX model (default: the shipped one).")] = None,
    exams: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="Validate on these exam "
                                               "directories instead of generating --patients.")] = None,
    calibration_exams: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="Calibrate on "
                                                           "these exam directories instead.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads of every backend (default: all).")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per candidate (median reported).")] = 20,
    workers: Annotated[int, typer.Option(min=1, help="Processes generating the exams.")] = 2,
    markdown: Annotated[Path | None, typer.Option(help="Also write the tables to this Markdown file.")] = None,
) -> None:
    """Run synthetic patients through float32 and each reduced precision (OpenVINO bf16; int8 with ONNX
    Runtime and OpenVINO, calibrated on other synthetic patients), report per slice the FWHM/FWQM/FWEM
    burden difference, the largest pixel difference and the lesion Dice, accept a precision when every
    slice's burden is within 0.5 points, and store the result beside the model (x.precision.json,
    x.int8.onnx), where `auto` finds it."""
    from rich.console import Console
    from rich.table import Table

    from vne_inline.infer import BackendError
    from vne_inline.infer.base import model_file
    from vne_inline.infer.cpu_features import matrix_features
    from vne_inline.validate import precision as pv

    try:
        model = model_file(model, ".onnx")
    except BackendError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    console = Console()
    features = matrix_features()
    console.print(f"CPU {features.describe()}", highlight=False)
    command = "vne-inline " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    provenance = {"command": command}
    provenance.update({"exams": exams.name} if exams else {"seed": seed, "requested_patients": patients})
    provenance.update({"calibration_exams": calibration_exams.name} if calibration_exams else
                      {"calibration_seed": calibration_seed, "calibration_patients": calibration_patients})
    with tempfile.TemporaryDirectory(prefix="vne-precision-") as tmp:
        try:
            validation = _exams(exams, Path(tmp), "validation", patients, seed, workers)
            calibration = _exams(calibration_exams, Path(tmp), "calibration", calibration_patients,
                                 calibration_seed, workers)
            candidates, record = pv.validate_precision(validation, calibration, model, threads, runs=runs,
                                                       progress=typer.echo, provenance=provenance)
        except (BackendError, ValueError, ImportError) as exc:
            typer.echo(f"error: {str(exc).splitlines()[0]}", err=True)
            raise typer.Exit(1) from exc
    for c in candidates:
        if c.slices and c.precision != "fp32":
            table = Table(*pv.SLICE_HEADERS, title=f"{c.label} vs float32, per slice")
            for row in pv.slice_rows(c):
                table.add_row(*row)
            console.print(table)
    summary = Table(*pv.SUMMARY_HEADERS, title="precision validation")
    for row in pv.summary_rows(candidates):
        summary.add_row(*row)
    console.print(summary)
    console.print(f"record written to {record}", highlight=False)
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(pv.to_markdown(candidates, record, command, f"CPU {features.describe()}."))
        console.print(f"written to {markdown}", highlight=False)
    accepted = [c for c in candidates if c.accepted and c.precision != "fp32"]
    console.print(f"accepted reduced precision: {', '.join(c.label for c in accepted) or 'none'}", highlight=False)
