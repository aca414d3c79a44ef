"""`vne-inline t1map`: T1 maps fitted from the IR-weighted images of an ISMRMRD file or a DICOM folder
(offline, for physicists)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app


@app.command("t1map")
def t1map_command(
    source: Annotated[Path, typer.Argument(exists=True, help="ISMRMRD file with the IR-weighted images (TI in the "
                                           "meta), in the order the scanner sent them, or a DICOM folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="Output ISMRMRD file: T1 map (ms), R^2 and invalid-pixel "
                                      "series per slice.")],
    dicom_out: Annotated[Path | None, typer.Option(help="Also write each map as a DICOM MR image (uint16 ms) into "
                                                   "this folder, in the IR series' study (DICOM input).")] = None,
    png: Annotated[Path | None, typer.Option(help="Figure of the maps with a colour bar in ms "
                                             "(default: OUT with .png).")] = None,
    scheme: Annotated[str, typer.Option(help="Sampling: auto (from the order of the TIs), shmolli, molli-533, "
                                        "molli-3335.")] = "auto",
    method: Annotated[str, typer.Option(help="auto (recovery model for ShMOLLI-type sampling, else standard), "
                                        "standard (three-parameter fit of all images), recovery (two passes, the "
                                        "slice's readout rate fixed in the second) or recovery-3p (one "
                                        "three-parameter pass).")] = "auto",
    series: Annotated[int, typer.Option(min=0, max=63535, help="image_series_index of the maps (R^2: +1000, "
                                        "invalid mask: +2000).")] = 98,
    min_r2: Annotated[float, typer.Option("--min-r2", min=0.0, max=1.0, help="Pixels whose fit has a lower R^2 are "
                                          "invalid.")] = 0.0,
) -> None:
    """Fit the T1 map of every slice of SOURCE (three-parameter fit with Look-Locker correction; incomplete
    recovery modelled for ShMOLLI-type sampling) and write the maps, goodness of fit and a PNG."""
    from rich.console import Console
    from rich.table import Table

    from vne_inline.adapters.t1map_offline import fit_ir_source, write_t1_dicom, write_t1_file
    from vne_inline.physics.t1_mapping import METHODS, resolve_scheme
    from vne_inline.viz.t1map_figure import t1map_figure

    if method not in METHODS:
        raise typer.BadParameter(f"choose from {', '.join(METHODS)}", param_hint="--method")
    try:
        resolve_scheme(scheme)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scheme") from exc
    try:
        result = fit_ir_source(source, None if scheme == "auto" else scheme, method, series, min_r2)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    header, slices = result.header_xml, result.slices
    table = Table(title=f"T1 maps of {source.name}")
    for column in ("slice", "fit", "valid pixels", "median T1 ms", "median R^2", "fit ms"):
        table.add_column(column, justify="left" if column == "fit" else "right")
    for s in slices:
        if s.fitted is None:
            table.add_row(str(s.slice), f"[yellow]not fitted: {s.reason}", "", "", "", "")
            continue
        fit = s.fitted.fit
        valid = ~fit.invalid
        table.add_row(str(s.slice), fit.method, f"{valid.mean():.0%}", f"{float(_median(fit.t1_ms, valid)):.0f}",
                      f"{float(_median(fit.r_squared, valid)):.4f}", f"{s.fitted.time_ms:.0f}")
    Console().print(table)
    try:
        counts = write_t1_file(out, header, slices)
    except ValueError as exc:
        typer.echo(f"error: {exc}; nothing written", err=True)
        raise typer.Exit(1) from exc
    figure = t1map_figure(png or out.with_suffix(".png"),
                          [(s.slice, s.fitted.fit) for s in slices if s.fitted is not None], source.name)
    typer.echo(f"wrote {out} ({', '.join(f'{k}: {v}' for k, v in counts.items())}) and {figure}")
    if dicom_out is not None:
        try:
            typer.echo(f"wrote {write_t1_dicom(dicom_out, result)} T1 map(s) as DICOM to {dicom_out}")
        except (ValueError, OSError) as exc:
            typer.echo(f"error: T1 maps not written as DICOM: {exc}", err=True)
            raise typer.Exit(1) from exc
    if any(s.fitted is None for s in slices):
        raise typer.Exit(1)


def _median(values, valid) -> float:
    import numpy as np

    return float(np.median(values[valid])) if valid.any() else float("nan")
