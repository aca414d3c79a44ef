"""`vne-inline gadgetron-worker`: the long-running process behind Gadgetron's ``<connect port="N"/>``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app
from vne_inline.cli.options import (
    LogLevelOption,
    RolePatternsOption,
    SeriesRolesOption,
    ThreadsOption,
    VneSeriesOption,
    fail,
    setup_logging,
)


@app.command("gadgetron-worker")
def gadgetron_worker(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port Gadgetron connects to (<connect port>; "
                                      "0: any free one, logged).")],
    host: Annotated[str, typer.Option(help="Address to listen on (<connect address>, default localhost); "
                                      "listen wider only on a closed scanner network.")] = "127.0.0.1",
    model: Annotated[Path | None, typer.Option(help="Model file (.onnx, or .safetensors for pytorch); "
                                               "default: the shipped weights.")] = None,
    backend: Annotated[str | None, typer.Option(help="tensorrt | openvino | onnxruntime | pytorch | auto.")] = None,
    threads: ThreadsOption = None,
    vne_series: VneSeriesOption = None,
    series_roles: SeriesRolesOption = None,
    role_patterns: RolePatternsOption = None,
    store: Annotated[Path | None, typer.Option(help="Per-study slice store, shared by the scans of a study; "
                                               "default $VNE_INLINE_STORE or ~/.cache/vne-inline/store.")] = None,
    expiry_h: Annotated[float | None, typer.Option(help="Hours a stored slice is kept (default 24).")] = None,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Serve Gadgetron <connect> connections with the model loaded once, at start. The options are every
    connection's defaults; its own <property> elements override them. A store that cannot be written or a
    model that cannot be loaded stops the start with one line saying why. SIGTERM or Ctrl-C stops
    accepting and lets connections in progress finish (up to 10 s)."""
    from vne_inline import gadgetron
    from vne_inline.core.store import default_store_dir
    from vne_inline.health import store_problem

    setup_logging(log_level, "%(asctime)s %(levelname)s [vne-inline worker %(process)d] %(name)s: %(message)s")
    options = {"model": model, "backend": backend, "threads": threads, "vne_series_index": vne_series,
               "series_roles": series_roles, "role_patterns": role_patterns, "store_dir": store,
               "expiry_h": expiry_h}
    gadgetron.set_defaults({k: str(v) for k, v in options.items() if v is not None})
    if (problem := store_problem(store or default_store_dir())) is not None:
        raise fail(f"cannot start the worker: {problem}")
    try:
        core = gadgetron.core_for({})
    except (ValueError, OSError) as exc:  # a bad option
        raise fail(f"cannot start the worker: {exc}") from exc
    try:
        core.backend()
    except Exception as exc:  # a worker that cannot make VNE must not look like one that can
        raise fail(f"cannot start the worker: {exc}") from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    gadgetron.serve(port, host, stop)
