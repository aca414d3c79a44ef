"""`vne-inline check`: can this installation make VNE, end to end, with this store and model?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app
from vne_inline.cli.options import BackendOption, ModelOption, ThreadsOption


@app.command()
def check(
    store: Annotated[Path | None, typer.Option(help="Per-study slice store the scanner-side process will use; "
                                               "default $VNE_INLINE_STORE or ~/.cache/vne-inline/store.")] = None,
    model: ModelOption = None,
    backend: BackendOption = "auto",
    threads: ThreadsOption = None,
) -> None:
    """Health check: write and remove a probe file in the store, load the model, and send a built-in
    synthetic slice (cine, then ShMOLLI IR images and T1 map) through the inline core as two connections;
    exit 0 only if a VNE image came out on the T1 map's grid. Nothing is left in the store."""
    from vne_inline.health import run_check

    props = {"store_dir": "" if store is None else str(store), "model": "" if model is None else str(model),
             "backend": backend, "threads": "" if threads is None else str(threads)}
    result = run_check(props)
    for line in result.lines:
        typer.echo(line)
    typer.echo("check passed: this installation makes VNE" if result.ok else "check FAILED: no VNE can be made")
    if not result.ok:
        raise typer.Exit(1)
