"""Options shared by several commands (same names, same help everywhere) and the helpers behind them."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Annotated

import typer

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

ModelOption = Annotated[Path | None, typer.Option(help="Model (.onnx; .safetensors for pytorch); "
                                                  "default: the shipped weights.")]
BackendOption = Annotated[str, typer.Option(help="tensorrt | openvino | onnxruntime | pytorch | auto.")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, help="CPU threads for inference (default: all).")]
VneSeriesOption = Annotated[int | None, typer.Option("--vne-series-index", "--vne-series", min=0, max=65535,
                                                     help="image_series_index of the VNE images (default 99; "
                                                     "the property vne_series_index).")]
SeriesRolesOption = Annotated[str | None, typer.Option(help="Roles by image_series_index, e.g. "
                                                       "'5=cine,7=ir,8=t1map,9=lge' (the property series_roles).")]
RolePatternsOption = Annotated[str | None, typer.Option(help="Extra SequenceDescription rules tried first, "
                                                        "'regex=role;...' (the property role_patterns).")]
LogLevelOption = Annotated[str, typer.Option(help="Log level: DEBUG | INFO | WARNING | ERROR.")]


def role_properties(series_roles: str | None, role_patterns: str | None) -> dict[str, str]:
    """The role-rule options as core properties (absent ones left out)."""
    return {k: v for k, v in (("series_roles", series_roles), ("role_patterns", role_patterns)) if v}


def role_rules(series_roles: str | None, role_patterns: str | None):
    """The role-rule options as :class:`RoleRules` (a bad rule is a usage error naming the option)."""
    from vne_inline.core.roles import RoleRules

    try:
        return RoleRules.from_strings(series_roles, role_patterns)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--series-roles / --role-patterns") from exc


def setup_logging(level: str, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Log to stderr at `level` (one of LOG_LEVELS, any case)."""
    if level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{level!r}: choose from {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logging.basicConfig(level=level.upper(), format=fmt)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as one ``error:`` line on stderr; the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def require_extra(extra: str, command: str, *modules: str) -> None:
    """Exit with one line naming the extra to install when one of `modules` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise fail(f"{command} needs the {extra} extra ({', '.join(missing)} not installed): "
                   f"pip install 'vne-inline[{extra}]' (in a source checkout: "
                   f"pip install -c constraints.txt -e '.[{extra}]')")
