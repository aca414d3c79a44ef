"""`vne-inline synth` and `vne-inline show`: synthetic exams and montages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app
from vne_inline.cli.options import RolePatternsOption, SeriesRolesOption, role_rules


def _field(text: str) -> float | str:
    """--field: 1.5, 3 (tesla) or "mixed"."""
    if text == "mixed":
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (1.5, 3.0):
        raise typer.BadParameter("must be 1.5, 3 or mixed", param_hint="--field")
    return value


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output directory; patients go to OUT/patient_<NNN>/.")],
    patients: Annotated[int, typer.Option("--patients", min=1, help="Number of patients.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Data-set seed: same seed and index give identical files.")] = 0,
    field: Annotated[str, typer.Option("--field", help="Field strength in tesla: 1.5, 3, or mixed (drawn per patient).")] = "1.5",
    t1_scheme: Annotated[str, typer.Option("--t1-scheme", help="T1 mapping: shmolli, molli-533, molli-3335, or mixed (drawn per patient).")] = "shmolli",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 2,
    start: Annotated[int, typer.Option("--start", min=0, help="Index of the first patient.")] = 0,
    format: Annotated[str, typer.Option("--format", help="ismrmrd (cine.h5, t1map.h5, lge.h5), dicom "
                                        "(OUT/patient_NNN/dicom/, Siemens-like, every fourth patient GE-like) "
                                        "or both.")] = "ismrmrd",
) -> None:
    """Generate synthetic HCM exams with ground truth (cine.h5, t1map.h5, lge.h5 and/or dicom/, truth.h5 per patient).

    Physics-based: one analytic 3-D heart per patient sampled on each scan's own slice planes, with
    partial volume, coil shading, noise, patient movement and a minority of artefacts. Synthetic
    data, not for clinical use.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from vne_inline.synth.exam import generate_exams
    from vne_inline.synth.patient import MIXED, T1_SCHEMES

    field_t = _field(field)
    if t1_scheme not in (*T1_SCHEMES, MIXED):
        raise typer.BadParameter(f"must be one of {', '.join(T1_SCHEMES)} or {MIXED}", param_hint="--t1-scheme")
    formats = {"ismrmrd": ("ismrmrd",), "dicom": ("dicom",), "both": ("ismrmrd", "dicom")}.get(format)
    if formats is None:
        raise typer.BadParameter("choose ismrmrd, dicom or both", param_hint="--format")
    console = Console()
    begin = time.perf_counter()
    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    burdens = []
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("", total=patients)
            for s in generate_exams(out, patients, seed, field_t, workers, start, t1_scheme, formats):
                burdens.append(s.lesion_burden)
                flags = [k for k, v in s.artefacts.items() if v]
                progress.update(task, advance=1, description=f"{s.directory.name}: {s.phenotype}, burden {100 * s.lesion_burden:.1f} %"
                                + (f", {', '.join(flags)}" if flags else ""))
    except KeyboardInterrupt:
        console.print(f"interrupted: {len(burdens)} of {patients} patients complete in {out}; none left half-written")
        raise typer.Exit(130) from None
    console.print(f"{patients} synthetic exams in {out} ({time.perf_counter() - begin:.0f} s); "
                  f"lesion burden median {100 * float(sorted(burdens)[len(burdens) // 2]):.1f} %, "
                  f"{sum(b == 0 for b in burdens)} without lesions")


@app.command()
def show(
    path: Annotated[Path, typer.Argument(exists=True, help="A patient directory or one file (cine.h5, t1map.h5, lge.h5, truth.h5).")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    slice_index: Annotated[int | None, typer.Option("--slice", help="T1-map slice (default: the middle one).")] = None,
    series_roles: SeriesRolesOption = None,
    role_patterns: RolePatternsOption = None,
) -> None:
    """Montage of one T1 slice: matched cine (end-diastole), IR images, T1 map, matched LGE and the truth
    overlay; for a single file, every series it holds (the VNE and series no rule recognises included)."""
    from vne_inline.viz.montage import show as make_montage

    try:
        written = make_montage(path, out, slice_index, role_rules(series_roles, role_patterns))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="PATH") from exc
    typer.echo(f"wrote {written}")
