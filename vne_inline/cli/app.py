"""The typer application object shared by the command modules."""

from typing import Annotated

import typer

from vne_inline import __version__

app = typer.Typer(
    name="vne-inline",
    help="Virtual Native Enhancement (VNE) for native cardiac MR: synthetic exams, training, inference, "
    "Gadgetron gadget, MRD server and validation. Default weights: synthetic data, not for clinical use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vne-inline {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Virtual Native Enhancement (VNE) for native cardiac MR: synthetic exams, training, inference,
    Gadgetron gadget, MRD server and validation. Default weights: synthetic data, not for clinical use."""
