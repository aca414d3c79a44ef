"""The `vne-inline` command line (typer + rich). Each topic registers its commands from its own module;
heavy imports (torch, onnxruntime) happen inside the commands so that `--help` stays fast."""

from vne_inline.cli.app import app
from vne_inline.cli import data_cmds  # noqa: F401  (registers synth, show)

__all__ = ["app"]
