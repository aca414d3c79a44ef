"""Gadgetron 4.x external Python gadget: ``handle(connection)`` around the inline core, and the worker loop.

Stream configuration (V2 format; see ``gadgetron_config/``)::

    <external>
        <execute name="vne_inline.gadgetron" target="handle" type="python"/>
        <configuration>
            <property name="model" value="/path/model.onnx"/>   <!-- any CoreConfig property -->
        </configuration>
    </external>

Gadgetron starts ``python -m gadgetron PORT vne_inline.gadgetron handle`` for every scan, or, with
``<connect port="N"/>``, connects to ``vne-inline gadgetron-worker`` (:func:`serve`). Either way it sends
the ``<configuration>`` element (CONFIG), the ISMRMRD header (HEADER), the data and CLOSE.

* ISMRMRD images (1022) are sent straight back, then fed to the core; any VNE it makes follows.
* Image arrays (1024) are sent back unchanged, then split into float images as ImageArraySplitGadget
  and ComplexToFloatGadget would (magnitude, phase, real or imaginary part by ``image_type``, else
  magnitude) and fed to the core. gadgetron 1.4.1 under numpy 2 can only write complex64 array data
  (``copy=False`` in its writer), so an array that is not complex64 goes back as its images instead.
* Everything else (acquisitions, waveforms, recon data) is sent straight back; a type the gadgetron
  package cannot write (acquisition buckets) is dropped with a warning.
* At CLOSE the session's remaining VNE images are sent.

Inputs always pass through: a VNE failure (bad configuration, missing model, odd images) is logged in
one line and the stream continues. Logs carry counts, indices and reasons, never patient data. Cores
are kept per process and configuration, so a long-running worker loads its model once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping

import ismrmrd
import numpy as np
from gadgetron.external import Connection
from gadgetron.types import ImageArray

from vne_inline.core.pipeline import CoreConfig, InlineCore, Session
from vne_inline.io.records import ImageRecord

__all__ = ["handle", "serve", "properties", "core_for", "set_defaults", "split_image_array", "LEGACY_KEYS"]

log = logging.getLogger("vne_inline.gadgetron")

#: Properties Gadgetron itself puts in the configuration of a legacy ``PythonGadget`` (ignored here).
LEGACY_KEYS = frozenset({"python_module", "python_class", "python_path"})
#: Seconds the worker waits for connections in progress when asked to stop.
SHUTDOWN_GRACE_S = 10.0

_defaults: dict[str, str] = {}
_cores: dict[tuple[tuple[str, str], ...], InlineCore] = {}
_lock = threading.Lock()


# ---------------------------------------------------------------------------- configuration
def properties(config: ET.Element | None) -> dict[str, str]:
    """The ``<property>`` elements of the external's ``<configuration>``: ``name``/``value`` attributes
    (V2) or ``<name>``/``<value>`` children (legacy), without :data:`LEGACY_KEYS`; {} when absent."""
    out: dict[str, str] = {}
    for prop in config.iter("property") if config is not None else ():
        name = (prop.get("name") or prop.findtext("name") or "").strip()
        if name and name not in LEGACY_KEYS:
            out[name] = (prop.get("value") or prop.findtext("value") or "").strip()
    return out


def set_defaults(props: Mapping[str, str]) -> None:
    """Properties every connection inherits unless its configuration sets them (the worker's options)."""
    _defaults.clear()
    _defaults.update(props)


def core_for(props: Mapping[str, str]) -> InlineCore:
    """The process's core for these properties over the defaults (an empty value keeps the default);
    created once per configuration."""
    merged = {**_defaults, **{k: v for k, v in props.items() if v}}
    key = tuple(sorted(merged.items()))
    with _lock:
        if key not in _cores:
            _cores[key] = InlineCore(CoreConfig.from_properties(merged))
        return _cores[key]


# ---------------------------------------------------------------------------- one connection
def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _open_session(connection: Connection) -> Session | None:
    """A core session for this connection, or None (pass-through only) when the core cannot start."""
    try:
        return core_for(properties(connection.config)).open_session(connection.raw_bytes.header)
    except Exception as exc:  # a bad configuration must not stop the images
        log.error("VNE disabled for this connection, images pass through: %s", _reason(exc))
        return None


def _guarded(produce: Callable[[], list[ImageRecord]], what: str) -> list[ImageRecord]:
    try:
        return produce()
    except Exception as exc:
        log.warning("VNE step failed (%s), inputs passed through: %s", what, _reason(exc))
        return []


def _feed(session: Session | None, record: ImageRecord) -> list[ImageRecord]:
    """The VNE images the core makes for `record` (the record itself is not repeated)."""
    if session is None:
        return []
    what = f"series {record.series_index}, slice {record.slice}"
    return [r for r in _guarded(lambda: session.feed(record), what) if r is not record]


_CONVERTERS = {
    ismrmrd.IMTYPE_MAGNITUDE: np.abs,
    ismrmrd.IMTYPE_PHASE: np.angle,
    ismrmrd.IMTYPE_REAL: np.real,
    ismrmrd.IMTYPE_IMAG: np.imag,
}


def _to_float(data: np.ndarray, head: ismrmrd.ImageHeader) -> np.ndarray:
    """Complex data as ComplexToFloatGadget converts it: by ``image_type``; any other type becomes magnitude."""
    if head.image_type not in _CONVERTERS:
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    return _CONVERTERS[head.image_type](data).astype(np.float32)


def split_image_array(array: ImageArray) -> list[ImageRecord]:
    """The images of an image array (data (RO, E1, E2, CHA, N, S, LOC), headers (N, S, LOC), one meta
    container per image at n + s*N + loc*N*S), in ImageArraySplitGadget's order."""
    data = np.asarray(array.data)
    headers = np.asarray(array.headers, dtype=object)
    n_n, n_s, n_loc = headers.shape
    meta = list(array.meta or ())
    out = []
    for loc in range(n_loc):
        for s in range(n_s):
            for n in range(n_n):
                head = ismrmrd.ImageHeader.from_buffer_copy(headers[n, s, loc])
                pixels = _to_float(np.ascontiguousarray(data[..., n, s, loc].transpose(3, 2, 1, 0)), head)
                head.channels = pixels.shape[0]
                head.matrix_size[0], head.matrix_size[1], head.matrix_size[2] = pixels.shape[:0:-1]
                head.data_type = ismrmrd.DATATYPE_FLOAT
                index = n + s * n_n + loc * n_n * n_s
                attributes = ismrmrd.Meta.deserialize(meta[index]) if index < len(meta) else {}
                out.append(ImageRecord(data=pixels, head=head, meta=dict(attributes)))
    return out


def _send_records(connection: Connection, records: Iterable[ImageRecord]) -> int:
    count = 0
    for record in records:
        connection.send(record.to_ismrmrd())
        count += 1
    return count


def _handle_array(connection: Connection, session: Session | None, array: ImageArray) -> int:
    """Send the array back, then feed its images; returns the number of VNE images sent."""
    writable = np.asarray(array.data).dtype == np.complex64
    if writable:
        connection.send(array)
    try:
        records = split_image_array(array)
    except Exception as exc:
        log.warning("image array not split (%s), no VNE from it: %s",
                    "passed through" if writable else "dropped: not writable either", _reason(exc))
        return 0
    if not writable:
        _send_records(connection, records)
    return sum(_send_records(connection, _feed(session, r)) for r in records)


def _pass_back(connection: Connection, item: object) -> None:
    try:
        connection.send(item)
    except TypeError as exc:  # raised before anything is written: no writer for this type
        log.warning("%s dropped: %s", type(item).__name__, exc)


class _EofGuard:
    """A socket whose ``recv`` raises at end of stream: gadgetron 1.4.1's reader would otherwise spin
    forever on empty reads when Gadgetron goes away mid-stream."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, nbytes: int, flags: int = 0) -> bytes:
        data = self._sock.recv(nbytes, flags)
        if nbytes and not data:
            raise ConnectionError("Gadgetron closed the connection mid-stream")
        return data

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def handle(connection: Connection) -> None:
    """Serve one Gadgetron connection (one scan): pass every input back, add the VNE images."""
    if not isinstance(connection.socket.socket, _EofGuard):
        connection.socket.socket = _EofGuard(connection.socket.socket)
    started = time.monotonic()
    session = _open_session(connection)
    n_in = n_vne = 0
    for item in connection:
        n_in += 1
        if isinstance(item, ismrmrd.Image):
            connection.send(item)
            n_vne += _send_records(connection, _feed(session, ImageRecord.from_ismrmrd(item)))
        elif isinstance(item, ImageArray):
            n_vne += _handle_array(connection, session, item)
        else:
            _pass_back(connection, item)
    if session is not None:
        n_vne += _send_records(connection, _guarded(session.close, "close"))
    log.info("connection done: %d messages passed through, %d VNE images sent, %.1f s",
             n_in, n_vne, time.monotonic() - started)


# ---------------------------------------------------------------------------- the worker
def _serve_one(sock: socket.socket) -> None:
    try:
        with Connection(_EofGuard(sock)) as connection:
            handle(connection)
    except Exception as exc:  # one broken connection must not stop the worker
        log.error("connection ended with an error: %s", _reason(exc))
    finally:
        sock.close()


def serve(port: int, host: str = "127.0.0.1", stop: threading.Event | None = None) -> None:
    """Accept Gadgetron ``<connect>`` connections on host:port until `stop` is set, one thread each;
    then wait up to :data:`SHUTDOWN_GRACE_S` for connections in progress."""
    stop = stop or threading.Event()
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    workers: list[threading.Thread] = []
    with socket.create_server((host, port), family=family) as server:
        server.settimeout(0.2)
        log.info("worker listening on %s port %d", host, server.getsockname()[1])
        while not stop.is_set():
            try:
                sock, _ = server.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            worker = threading.Thread(target=_serve_one, args=(sock,), daemon=True)
            worker.start()
            workers = [w for w in workers if w.is_alive()] + [worker]
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    log.info("worker stopped")
