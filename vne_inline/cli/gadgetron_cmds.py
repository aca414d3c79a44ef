"""`vne-inline gadgetron-worker`: the long-running process behind Gadgetron's ``<connect port="N"/>``."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app


@app.command("gadgetron-worker")
def gadgetron_worker(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port Gadgetron connects to (<connect port>; "
                                      "0: any free one, logged).")],
    host: Annotated[str, typer.Option(help="Address to listen on (<connect address>, default localhost); "
                                      "listen wider only on a closed scanner network.")] = "127.0.0.1",
    model: Annotated[Path | None, typer.Option(help="Model file (.onnx, or .safetensors for pytorch); "
                                               "default: the shipped weights.")] = None,
    backend: Annotated[str | None, typer.Option(help="tensorrt | openvino | onnxruntime | pytorch | auto.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for inference (default: all).")] = None,
    vne_series: Annotated[int | None, typer.Option(min=0, max=65535, help="image_series_index of the VNE "
                                                   "images (default 99).")] = None,
    series_roles: Annotated[str | None, typer.Option(help="Roles by series index, e.g. '5=cine,7=ir,8=t1map'.")]
    = None,
    role_patterns: Annotated[str | None, typer.Option(help="Extra sequence-description rules, "
                                                      "'regex=role;...'.")] = None,
    store: Annotated[Path | None, typer.Option(help="Per-study slice store, shared by the scans of a study; "
                                               "default $VNE_INLINE_STORE or ~/.cache/vne-inline/store.")] = None,
    expiry_h: Annotated[float | None, typer.Option(help="Hours a stored slice is kept (default 24).")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG | INFO | WARNING | ERROR.")] = "INFO",
) -> None:
    """Serve Gadgetron <connect> connections with the model loaded once, at start. The options are every
    connection's defaults; its own <property> elements override them. SIGTERM or Ctrl-C stops accepting
    and lets connections in progress finish (up to 10 s)."""
    from vne_inline import gadgetron

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s [vne-inline worker %(process)d] %(name)s: %(message)s")
    options = {"model": model, "backend": backend, "threads": threads, "vne_series_index": vne_series,
               "series_roles": series_roles, "role_patterns": role_patterns, "store_dir": store,
               "expiry_h": expiry_h}
    gadgetron.set_defaults({k: str(v) for k, v in options.items() if v is not None})
    try:
        core = gadgetron.core_for({})
    except (ValueError, OSError) as exc:  # a bad option or an unusable store directory
        typer.echo(f"cannot start the worker: {exc}", err=True)
        raise typer.Exit(1) from exc
    try:
        core.backend()
    except Exception as exc:  # keep serving: Gadgetron's chain needs the images back, VNE or not
        logging.getLogger("vne_inline.gadgetron").error("model not loaded, VNE disabled: %s", exc)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    gadgetron.serve(port, host, stop)
