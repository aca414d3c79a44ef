"""MRD v1 streaming client: send an ISMRMRD image file to a server, collect what comes back.

The client sends CONFIG_FILE (the config name), the file's header, optional JSON parameters (TEXT),
every image of every group in file order, and CLOSE, while a receiver thread reads the reply (images
and TEXT lines) until the server's CLOSE. Sending and receiving at once matters: the server answers
each image as it arrives, and a client that only read at the end would fill the socket buffers and
stall both sides.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vne_inline.adapters.mrd_protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    MessageId,
    MessageReader,
    MessageWriter,
    ProtocolError,
)
from vne_inline.io.mrd_file import read_file, write_file
from vne_inline.io.records import ImageRecord

__all__ = ["Reply", "DEFAULT_CONFIG", "exchange", "send_file"]

_SLICE_LINE = re.compile(r"(DBG|WRN): T1 slice \d+: ")

#: Config name sent by default (any name is accepted by `vne-inline serve`).
DEFAULT_CONFIG = "vne"


@dataclass
class Reply:
    """What the server sent back: images in order, TEXT lines, and whether it ended with CLOSE."""

    records: list[ImageRecord] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed: bool = False
    error: str | None = None

    @property
    def vne(self) -> list[ImageRecord]:
        """The VNE images among the records (``DataRole`` or ``GADGETRON_DataRole`` VNE)."""
        return [r for r in self.records if "VNE" in (r.meta_str("DataRole"), r.meta_str("GADGETRON_DataRole"))]

    @property
    def slice_lines(self) -> list[str]:
        """The server's per-T1-slice lines (``DBG: T1 slice 0: VNE made ...``, ``WRN: T1 slice 1: no VNE: ...``)."""
        return [t for t in self.texts if _SLICE_LINE.match(t)]


def _receive(reader: MessageReader, reply: Reply, on_text: Callable[[str], None] | None) -> None:
    try:
        while (msg := reader.read()) is not None:
            if msg.id == MessageId.CLOSE:
                reply.closed = True
                return
            if msg.id == MessageId.IMAGE:
                reply.records.append(ImageRecord.from_ismrmrd(msg.value))
            elif msg.id == MessageId.TEXT:
                reply.texts.append(msg.value)
                if on_text is not None:
                    on_text(msg.value)
    except (ProtocolError, OSError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"


def exchange(
    header_xml: str | None,
    records: Iterable[ImageRecord],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    config: str = DEFAULT_CONFIG,
    parameters: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    on_text: Callable[[str], None] | None = None,
) -> Reply:
    """One connection: send the config, header, parameters (FIRE JSON) and images, then CLOSE; return the reply.

    `timeout_s` bounds every socket operation and the wait for the server's CLOSE. Raises OSError when
    the server cannot be reached or stops reading; a reply cut short has `closed` False and `error` set.
    """
    reply = Reply()
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        reader = MessageReader(sock.recv, DEFAULT_MAX_MESSAGE_BYTES)
        receiver = threading.Thread(target=_receive, args=(reader, reply, on_text), name="mrd-client-receive",
                                    daemon=True)
        receiver.start()
        writer = MessageWriter(sock.sendall)
        try:
            writer.config_file(config)
            writer.header(header_xml or "")
            if parameters:
                writer.text(json.dumps({"version": "1.0", "parameters": dict(parameters)}))
            for record in records:
                writer.image(record.to_ismrmrd())
            writer.close()
        except OSError as exc:  # the server closed early (its ERR line, if any, is in the reply)
            sent_error = f"sending stopped: {type(exc).__name__}: {exc}"
        else:
            sent_error = None
        receiver.join(timeout_s)
        if receiver.is_alive():
            reply.error = f"no CLOSE from the server within {timeout_s:g} s"
        reply.error = reply.error or sent_error
    return reply


def send_file(
    path: str | Path,
    out: str | Path | None = None,
    **kwargs,
) -> Reply:
    """Stream an ISMRMRD image file (header + every image group, in order) through :func:`exchange`;
    write the returned images to `out` as ``image_<series>`` groups (with the input's header). Raises
    ValueError when the file is unusable (unreadable, raw data, no images), OSError when the server is not."""
    mrd = read_file(path)
    if not mrd.records():
        raise ValueError(f"{Path(path).name}: no images (ISMRMRD image groups such as image_1 are needed)")
    reply = exchange(mrd.header_xml, mrd.records(), **kwargs)
    if out is not None:
        write_file(out, mrd.header_xml, reply.records)
    return reply
