"""`vne-inline dicom-node`: the DICOM C-STORE receiver that forwards VNE series to a PACS."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from vne_inline.cli.app import app


@app.command("dicom-node")
def dicom_node(
    port: Annotated[int, typer.Option(help="TCP port to listen on (0: any free one).")] = 11112,
    ae_title: Annotated[str, typer.Option(help="This node's AE title.")] = "VNE_INLINE",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    forward: Annotated[str | None, typer.Option(help="Where the VNE series go: HOST:PORT:AET (a PACS or the "
                                                "scanner); without it the VNE stay queued in SPOOL/outbox.")] = None,
    store: Annotated[Path | None, typer.Option(help="Per-study slice store, shared with the Gadgetron gadget and "
                                               "the MRD server; default $VNE_INLINE_STORE or "
                                               "~/.cache/vne-inline/store.")] = None,
    spool: Annotated[Path | None, typer.Option(help="Received series and the outgoing VNE queue; default "
                                               "~/.cache/vne-inline/dicom-node.")] = None,
    model: Annotated[Path | None, typer.Option(help="Model file; default: the shipped weights.")] = None,
    backend: Annotated[str, typer.Option(help="tensorrt | openvino | onnxruntime | pytorch | auto.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads of the backend.")] = None,
    max_pdu: Annotated[int, typer.Option(min=0, help="Maximum PDU size received (bytes; 0: unlimited).")] = 65536,
    series_idle: Annotated[float, typer.Option(min=0.5, help="A series with no new image for this long is "
                                               "processed even if its association stays open (s).")] = 15.0,
    t1_maps: Annotated[str, typer.Option(help="scanner: use the scanner's T1 maps, fitting one only for IR images "
                                         "whose map series has not come within --map-wait; fit: always fit the maps "
                                         "from the IR images; off: never fit.")] = "scanner",
    map_wait: Annotated[float, typer.Option(min=0.0, help="How long IR images wait for their T1-map series before "
                                            "a map is fitted (s; t1-maps scanner).")] = 30.0,
    network_timeout: Annotated[float, typer.Option(min=1.0, help="Close an idle association after this long (s).")]
    = 120.0,
    shutdown_timeout: Annotated[float, typer.Option(min=0.0, help="On SIGTERM, let open associations finish for "
                                                    "this long (s).")] = 30.0,
) -> None:
    """Run a DICOM node: receive cine and T1-mapping series by C-STORE (any order, any association), make a
    VNE per T1-map slice and C-STORE the VNE series to --forward. Default weights: synthetic-trained, not
    for clinical use."""
    from vne_inline.adapters.dicom_node import Destination, DicomNode, NodeConfig
    from vne_inline.core.store import default_store_dir
    from vne_inline.infer import BackendError, load_backend

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # no line per instance
    try:
        destination = None if forward is None else Destination.parse(forward)
        config = NodeConfig(spool=spool or default_store_dir().parent / "dicom-node", host=host, port=port,
                            ae_title=ae_title, forward=destination, max_pdu=max_pdu, series_idle_s=series_idle,
                            map_wait_s=map_wait, network_timeout_s=network_timeout, shutdown_timeout_s=shutdown_timeout)
        loaded = load_backend(backend, None if model is None else str(model), threads)
        props = {"store_dir": "" if store is None else str(store), "t1_maps": t1_maps}
        node = DicomNode(config, props, backend=loaded).start()
    except (BackendError, ValueError, OSError) as exc:
        typer.echo(f"cannot start the DICOM node: {exc}", err=True)
        raise typer.Exit(1) from exc
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node.request_stop())
    typer.echo(f"DICOM node {ae_title} on {node.address[0]}:{node.address[1]} (SIGTERM or Ctrl-C to stop)", err=True)
    node.wait()
    node.stop()
