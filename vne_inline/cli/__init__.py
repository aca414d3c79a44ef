"""The `vne-inline` command line (typer + rich). Each topic registers its commands from its own module;
heavy imports (torch, onnxruntime) happen inside the commands so that `--help` stays fast."""

from vne_inline.cli import (  # noqa: F401  (each module registers its commands on `app`)
    check_cmds,
    data_cmds,
    evaluate_cmds,
    gadgetron_cmds,
    infer_cmds,
    inline_cmds,
    node_cmds,
    precision_cmds,
    prepare_cmds,
    server_cmds,
    t1map_cmds,
    train_cmds,
)
from vne_inline.cli.app import app

__all__ = ["app"]
