"""`vne-inline prepare`: matched training triplets from exam directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from vne_inline.cli.app import app
from vne_inline.cli.options import (
    LogLevelOption,
    RolePatternsOption,
    SeriesRolesOption,
    require_extra,
    role_rules,
    setup_logging,
)


@app.command()
def prepare(
    exams: Annotated[Path | None, typer.Option("--exams", exists=True, file_okay=False, help="Folder of exam "
                                               "folders (one per patient, ISMRMRD files per scan), or one exam folder.")] = None,
    exams_arg: Annotated[Path | None, typer.Argument(exists=True, file_okay=False, hidden=True,
                                                     help="The same as --exams (older spelling).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output triplets file (HDF5).")] = Path("triplets.h5"),
    min_cosine: Annotated[float, typer.Option(help="Slice normals must have cosine similarity above this.")] = 0.9,
    max_distance_mm: Annotated[float, typer.Option(help="Slice positions must differ by less than this (mm).")] = 4.0,
    register: Annotated[bool, typer.Option(help="Register each LGE slice to its T1 map (in-plane translation).")] = True,
    max_shift_mm: Annotated[float, typer.Option(min=1.0, help="Largest LGE registration shift searched (mm).")] = 6.0,
    grading: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="Folder of the reader's LGE "
                                                 "grades, GRADING/<exam>/lge_nondiagnostic.txt (docs/contours.md); "
                                                 "default: synthetic exams' artefact records.")] = None,
    keep_nondiagnostic: Annotated[bool, typer.Option(help="Keep slices whose LGE is graded non-diagnostic "
                                                     "(default: reject them).")] = False,
    series_roles: SeriesRolesOption = None,
    role_patterns: RolePatternsOption = None,
    log_level: LogLevelOption = "WARNING",
) -> None:
    """Match every T1-map slice with a cine and an LGE slice (the paper's criteria), resample them onto
    the T1 grid, register the LGE to the T1 map and store the triplets; slices whose LGE is graded
    non-diagnostic are rejected; rejected slices are listed with their reason."""
    import numpy as np

    exams_dir = exams or exams_arg
    if exams_dir is None or (exams and exams_arg and exams != exams_arg):
        raise typer.BadParameter("give the exams folder once, as --exams DIR", param_hint="--exams")
    setup_logging(log_level)
    rules = role_rules(series_roles, role_patterns)
    if register:
        require_extra("train", "prepare (LGE registration; --no-register runs without it)", "SimpleITK")
    from vne_inline.adapters.exam_files import is_exam_dir
    from vne_inline.core.match import MatchCriteria
    from vne_inline.train.prepare import Registration, grader
    from vne_inline.train.prepare import prepare as run_prepare

    dirs = sorted(d for d in exams_dir.iterdir() if is_exam_dir(d)) or [exams_dir]
    console = Console()
    with Progress(console=console) as progress:
        task = progress.add_task("matching slices", total=len(dirs))
        report = run_prepare(dirs, out, MatchCriteria(min_cosine, max_distance_mm),
                             on_exam=lambda _: progress.advance(task),
                             registration=Registration(register, max_shift_mm),
                             grades=grader(grading, keep_nondiagnostic), rules=rules)
    console.print(f"{report.written} triplets written to {out}")
    if report.shifts_mm:
        shifts = np.asarray(report.shifts_mm)
        console.print(f"LGE registered to the T1 map: shift median {np.median(shifts):.1f} mm, "
                      f"max {shifts.max():.1f} mm, {int((shifts > 2).sum())} slices moved > 2 mm")
    for rows, title in ((report.rejected, "rejected"), (report.unregistered, "written without LGE registration")):
        if rows:
            table = Table("exam", "slice", "reason", title=f"{len(rows)} {title}")
            for r in rows:
                table.add_row(r.patient, "-" if r.slice is None else str(r.slice), r.reason)
            console.print(table)
