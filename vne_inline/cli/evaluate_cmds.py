"""`vne-inline evaluate`: VNE vs LGE lesion burden on exam folders, written as a report with figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app
from vne_inline.cli.options import (
    LogLevelOption,
    RolePatternsOption,
    SeriesRolesOption,
    require_extra,
    role_rules,
    setup_logging,
)
from vne_inline.quantify import BORDER_MARGIN_MM


@app.command("evaluate")
def evaluate_command(
    exams: Annotated[Path, typer.Option("--exams", help="folder of patient folders (cine, T1 mapping, LGE files)",
                                        exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="report folder: report.md, figures, CSV tables")],
    model: Annotated[Path | None, typer.Option(help=".onnx or .safetensors model (default: the shipped weights)")] = None,
    backend: Annotated[str, typer.Option(help="auto, tensorrt, openvino, onnxruntime or pytorch")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads of the backend (default: all)")] = None,
    contours: Annotated[Path | None, typer.Option(help="ROIs per patient and T1 slice (docs/contours.md); "
                                                  "default: each exam's truth.h5", exists=True, file_okay=False)] = None,
    examples: Annotated[int, typer.Option(min=0, help="patients shown as image montages")] = 3,
    margin_mm: Annotated[float, typer.Option(min=0.0, help="partial-volume rim (mm) left out of the myocardium ROIs")] = BORDER_MARGIN_MM,
    series_roles: SeriesRolesOption = None,
    role_patterns: RolePatternsOption = None,
    log_level: LogLevelOption = "WARNING",
    without_cine: Annotated[bool, typer.Option("--without-cine", help="the VNE-without-cine reading: cine files are not "
                                               "sent, VNE from the IR images and T1 map only")] = False,
) -> None:
    """Run VNE through the inline core on every exam, match LGE onto the T1 grid, quantify lesion burden
    (FWHM/FWQM/FWEM; VNE also at 35/20/10 %) and write the agreement statistics and figures."""
    from vne_inline.core.pipeline import CoreConfig
    from vne_inline.infer import BackendError, load_backend
    from vne_inline.validate.evaluate import evaluate_exams
    from vne_inline.validate.report import write_report

    setup_logging(log_level)
    require_extra("validate", "evaluate (ICC)", "pingouin")
    config = CoreConfig(rules=role_rules(series_roles, role_patterns))
    try:
        engine = load_backend(backend, model, threads)
    except BackendError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    evaluation = evaluate_exams(exams, engine, contours, config, progress=typer.echo, margin_mm=margin_mm,
                                without_cine=without_cine)
    if not evaluation.patients:
        typer.echo("error: no patient could be evaluated", err=True)
        raise typer.Exit(1)
    primary = evaluation.diagnostic()
    if not primary.patients:
        typer.echo("error: no patient has a diagnostic LGE slice", err=True)
        raise typer.Exit(1)
    report = write_report(evaluation, out, examples)
    typer.echo(f"{len(evaluation.patients)} patients evaluated, {len(primary.patients)} in the primary analysis "
               f"({evaluation.n_nondiagnostic} slice(s) with non-diagnostic LGE left out); report: {report}")
