"""The typer application object shared by the command modules."""

import typer

app = typer.Typer(
    name="vne-inline",
    help="Virtual Native Enhancement (VNE) for native cardiac MR: synthetic exams, training, inference, "
    "Gadgetron gadget, MRD server and validation. Default weights: synthetic data, not for clinical use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
