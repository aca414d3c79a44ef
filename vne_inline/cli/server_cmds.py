"""`vne-inline serve` (MRD v1 streaming server) and `vne-inline send` (its client)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app
from vne_inline.cli.options import (
    LogLevelOption,
    RolePatternsOption,
    SeriesRolesOption,
    VneSeriesOption,
    fail,
    role_properties,
    setup_logging,
)

DEFAULT_PORT = 9002  # vne_inline.adapters.mrd_protocol.DEFAULT_PORT, repeated so that --help stays import-light


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (FIRE / python-ismrmrd-server use 9002; 0: any free one).")]
    = DEFAULT_PORT,
    model: Annotated[Path | None, typer.Option(help="Model file (.onnx, or .safetensors for pytorch); "
                                               "default: the shipped weights.")] = None,
    backend: Annotated[str, typer.Option(help="tensorrt | openvino | onnxruntime | pytorch | auto.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads of the backend (default: all "
                                                "available).")] = None,
    store: Annotated[Path | None, typer.Option(help="Per-study slice store, shared with the Gadgetron gadget; "
                                               "default $VNE_INLINE_STORE or ~/.cache/vne-inline/store.")] = None,
    max_message_mb: Annotated[float, typer.Option(min=0.01, help="Largest accepted message (MiB).")] = 256.0,
    max_clients: Annotated[int, typer.Option(min=1, help="Connections served at once; more wait in the "
                                             "listen backlog.")] = 8,
    idle_timeout: Annotated[float, typer.Option(min=1.0, help="Close a connection silent for this long (s).")]
    = 300.0,
    shutdown_timeout: Annotated[float, typer.Option(min=0.0, help="On SIGTERM/SIGINT, let open sessions finish "
                                                    "for this long (s).")] = 30.0,
    vne_series: VneSeriesOption = None,
    series_roles: SeriesRolesOption = None,
    role_patterns: RolePatternsOption = None,
    log_level: LogLevelOption = "INFO",
    prop: Annotated[list[str] | None, typer.Option("--property", help="Core property KEY=VALUE for every "
                                                   "session (repeatable), as in the Gadgetron configuration, e.g. "
                                                   "role_patterns='FL2D_T1=t1map' or max_store_mb=4096.")] = None,
) -> None:
    """Run the MRD v1 streaming server (FIRE / OpenRecon / python-ismrmrd-server clients): every image comes
    back, plus a VNE image per T1-map slice once its cine is in (same or earlier connection)."""
    from vne_inline.adapters.mrd_server import MrdServer, ServerLimits
    from vne_inline.core.store import default_store_dir
    from vne_inline.health import store_problem
    from vne_inline.infer import BackendError

    setup_logging(log_level)
    if (problem := store_problem(store or default_store_dir())) is not None:
        raise fail(f"cannot start the server: {problem}")
    props = {"backend": backend, "model": "" if model is None else str(model),
             "threads": "" if threads is None else str(threads), "store_dir": "" if store is None else str(store),
             "vne_series_index": "" if vne_series is None else str(vne_series),
             **role_properties(series_roles, role_patterns)}
    for item in prop or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--property")
        props[key.strip()] = value.strip()
    limits = ServerLimits(max_message_bytes=int(max_message_mb * 2**20), max_clients=max_clients,
                          idle_timeout_s=idle_timeout, shutdown_timeout_s=shutdown_timeout)
    try:
        server = MrdServer(props, host=host, port=port, limits=limits)
    except (BackendError, ValueError, OSError) as exc:
        raise fail(f"cannot start the server: {exc}") from exc
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    typer.echo(f"listening on {server.address[0]}:{server.address[1]} (SIGTERM or Ctrl-C to stop)", err=True)
    server.serve_forever()


@app.command()
def send(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ISMRMRD image file (HDF5) to stream.")],
    out: Annotated[Path, typer.Option(help="Where to save the returned images (image_<series> groups).")],
    host: Annotated[str, typer.Option(help="Server address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Server port.")] = DEFAULT_PORT,
    config: Annotated[str, typer.Option(help="Config name sent as CONFIG_FILE.")] = "vne",
    param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE sent as JSON parameters (repeatable), "
                                                    "e.g. vne_series_index=120.")] = None,
    timeout: Annotated[float, typer.Option(min=1.0, help="Socket and reply timeout (s).")] = 120.0,
) -> None:
    """Stream an ISMRMRD image file to an MRD server, print its TEXT lines and save the images it returns.
    Exit status: 0 done, 1 connection or server error, 2 unusable input, 3 T1-map slices sent but no VNE back."""
    from vne_inline.adapters.exam_files import classified_records
    from vne_inline.adapters.mrd_client import send_file
    from vne_inline.adapters.scans import read_scans
    from vne_inline.core.roles import Role

    params = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--param")
        params[key.strip()] = value.strip()
    if out.resolve() == file.resolve():
        raise fail(f"--out {out} is the input file; choose another output name", 2)
    try:
        reply = send_file(file, out, host=host, port=port, config=config, parameters=params, timeout_s=timeout,
                          on_text=typer.echo)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    except OSError as exc:
        raise fail(f"send failed: {exc}") from exc
    typer.echo(f"{len(reply.records)} images received ({len(reply.vne)} VNE), saved to {out}")
    if reply.error or not reply.closed:
        raise fail(f"reply incomplete: {reply.error or 'no CLOSE'}")
    if any(t.startswith("ERR:") for t in reply.texts):
        raise typer.Exit(1)
    sent_t1 = reply.slice_lines or any(role is Role.T1MAP for scan in read_scans(file)
                                       for role, _ in classified_records(scan))
    if sent_t1 and not reply.vne:
        reasons = [line.split(": ", 1)[1] for line in reply.slice_lines if line.startswith("WRN:")]
        raise fail("no VNE made from the T1-map slices sent" + (f": {'; '.join(reasons)}" if reasons else
                                                                 " and the server gave no reason"), 3)
