"""MRD v1 streaming server (python-ismrmrd-server / FIRE / OpenRecon) around the inline core.

One connection is one scan, exactly as for the Gadgetron gadget, and both share the per-study store,
so a cine sent to either and a T1 mapping sent to either meet. Per connection the client sends:

1. the config: CONFIG_FILE (id 1) or CONFIG_TEXT (id 2); any name is accepted and only logged (this
   server does one thing). A connection that ends here (EOF or CLOSE) is normal: dependency queries
   and connection tests do that.
2. the ISMRMRD header (id 3). A header that is not ISMRMRD XML, or has no StudyInstanceUID /
   FrameOfReferenceUID, is tolerated: the session then has a private store, so cine and T1 mapping on
   different connections cannot be matched (the client is told with a ``WRN:`` line).
3. optionally a TEXT (id 5) with JSON parameters, FIRE style ``{"parameters": {...}}`` or a flat
   object. The per-session core settings :data:`SESSION_PROPERTIES` are applied; the process-wide
   ones (model, backend, threads, store) belong to the operator and are refused; ``config`` and
   ``customconfig`` name the plugin and are ignored; anything else is listed as unused.
4. images (1022), then CLOSE (4).

The server answers every input image (the same bytes, at once), the VNE images as they are made,
TEXT log lines (``DBG:`` facts, ``WRN:`` one per T1 slice without VNE and why, ``ERR:`` a protocol
error) and CLOSE. Raw acquisitions (1008) and waveforms (1026) are read and dropped (VNE works on
reconstructed images; one ``WRN:`` line says so). A connection that ends without CLOSE is abandoned:
its open slices are not completed. A message over the size limit, an unknown message id or an
undecodable message gets an ``ERR:`` line and the connection is closed; other sessions go on.

Connections run in threads, at most ``max_clients`` at once (further clients wait in the listen
backlog). Every session has its own core (its own settings) over ONE loaded backend whose calls are
serialised by a lock (a TensorRT context is not thread-safe; ONNX Runtime is, but runs its own
threads anyway). :meth:`MrdServer.stop` (SIGTERM/SIGINT in ``vne-inline serve``) stops accepting, lets
open sessions finish for ``shutdown_timeout_s`` and then cuts the rest. Logs carry connection
numbers, counts and reasons, never header contents or patient data.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vne_inline import __version__
from vne_inline.adapters.mrd_protocol import (
    CONFIG_FILE_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    MalformedMessage,
    Message,
    MessageId,
    MessageReader,
    MessageWriter,
    ProtocolError,
)
from vne_inline.core.normalise import ModelInputs
from vne_inline.core.pipeline import PROPERTIES, CoreConfig, InlineCore, Session
from vne_inline.io.header import parse_header
from vne_inline.io.records import ImageRecord

__all__ = ["MrdServer", "ServerLimits", "SESSION_PROPERTIES", "session_properties"]

log = logging.getLogger("vne_inline.adapters.mrd_server")

#: Core properties a client may set for its own session (JSON parameters).
SESSION_PROPERTIES = frozenset(
    {"vne_series_index", "series_roles", "role_patterns", "min_cine_phases", "min_cosine", "max_distance_mm"}
)
#: FIRE / python-ismrmrd-server keys that choose the server-side config, not a VNE setting.
_CONFIG_KEYS = frozenset({"config", "customconfig"})
#: After the reply, what the client still sends is read (and dropped) for at most this long / this much,
#: so that closing does not reset the connection before the client has read the reply.
_DRAIN_S = 1.0
_DRAIN_BYTES = 16 * 2**20
#: How often the accept loop looks at the stop flag (s).
_POLL_S = 0.2


@dataclass(frozen=True)
class ServerLimits:
    """Bounds: message size (bytes), concurrent connections, silence on a connection (s), shutdown grace (s)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_clients: int = 8
    idle_timeout_s: float = 300.0
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_message_bytes < CONFIG_FILE_BYTES:
            raise ValueError(f"max_message_bytes must be >= {CONFIG_FILE_BYTES}, got {self.max_message_bytes}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {self.max_clients}")
        if not (self.idle_timeout_s > 0 and self.shutdown_timeout_s >= 0):
            raise ValueError("idle_timeout_s must be > 0 and shutdown_timeout_s >= 0")


def session_properties(text: str) -> tuple[dict[str, str], list[str]]:
    """The per-session core properties in a JSON parameter text, and the ``WRN:``/``DBG:`` lines about it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return {}, ["WRN: parameters are not JSON; ignored"]
    params = raw.get("parameters", raw) if isinstance(raw, dict) else None
    if not isinstance(params, dict):
        return {}, ["WRN: parameters must be a JSON object; ignored"]
    props = {k: "" if v is None else str(v) for k, v in params.items() if k in SESSION_PROPERTIES}
    notes = [f"WRN: parameter {k} is set by the server operator only; ignored"
             for k in sorted(set(params) & (set(PROPERTIES) - SESSION_PROPERTIES))]
    unused = sorted(set(params) - set(PROPERTIES) - _CONFIG_KEYS)
    if unused:
        notes.append(f"DBG: parameters not used by VNE: {', '.join(unused)[:200]}")
    return props, notes


class _SharedBackend:
    """One loaded backend for every session's core; `run` calls are serialised."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self.name = backend.name
        self.config = backend.config
        self.detail = getattr(backend, "detail", "")

    def run(self, batch):
        with self._lock:
            return self._backend.run(batch)


def _load_backend(config: CoreConfig):
    """The configured backend, loaded and run once on a blank slice (so the first scan does not pay the
    runtime's warm-up, and a model that cannot run stops the start); BackendError otherwise."""
    from vne_inline.infer import BackendError, load_backend, predict

    backend = load_backend(config.backend, None if config.model is None else str(config.model), config.threads,
                           config.precision)
    started = time.perf_counter()
    c, size = backend.config, max(64, backend.config.size_multiple)
    blank = ModelInputs(*(np.zeros((n, size, size), np.float32) for n in (c.n_cine_frames, c.n_ir_images, 1)))
    try:
        predict(backend, [blank])
    except Exception as exc:
        raise BackendError(f"{backend.name} cannot run the model: {type(exc).__name__}: {exc}") from exc
    log.info("backend %s (%s) warmed up in %.1f s", backend.name, backend.detail, time.perf_counter() - started)
    return backend


def _header_note(header_xml: str) -> str | None:
    """A ``WRN:`` line when the header cannot key the study (the parser's text is not repeated: it may quote data)."""
    try:
        study = parse_header(header_xml)
    except ValueError:
        return "WRN: header is not ISMRMRD XML: cine and T1 mapping on different connections cannot be matched"
    if study.study_key is None:
        return ("WRN: header has no StudyInstanceUID or FrameOfReferenceUID: cine and T1 mapping on different "
                "connections cannot be matched")
    return None


class MrdServer:
    """A threaded MRD v1 server. `properties` are the operator's core properties
    (:meth:`CoreConfig.from_properties`); `backend` None loads the configured model once, here."""

    def __init__(
        self,
        properties: Mapping[str, str] | None = None,
        backend=None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        self.properties = dict(properties or {})
        config = CoreConfig.from_properties(self.properties)  # ValueError for a bad operator setting
        self.backend = _SharedBackend(backend if backend is not None else _load_backend(config))
        self.limits = limits
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(limits.max_clients)
        self._open: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._listener = socket.create_server((host, port), backlog=max(16, limits.max_clients))
        self._listener.settimeout(_POLL_S)
        #: The (host, port) actually listened on (useful with port 0).
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._runner: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def serve_forever(self) -> None:
        """Accept connections until :meth:`stop`; then let open sessions finish (bounded) and return."""
        log.info("MRD server on %s:%d, backend %s, model %s, at most %d clients", *self.address,
                 self.backend.name, self.backend.config.name, self.limits.max_clients)
        try:
            while not self._stopping.is_set():
                if not self._slots.acquire(timeout=_POLL_S):
                    continue
                try:
                    sock, peer = self._listener.accept()
                except TimeoutError:  # poll the stop flag
                    self._slots.release()
                    continue
                except OSError as exc:  # e.g. out of file descriptors: wait, do not spin
                    self._slots.release()
                    log.warning("accept failed: %s", exc.strerror or exc)
                    self._stopping.wait(_POLL_S)
                    continue
                self._start_connection(sock, peer)
        finally:
            self._listener.close()
            self._drain_sessions()

    def start(self) -> MrdServer:
        """Serve in a background thread (tests, embedding); returns self."""
        self._runner = threading.Thread(target=self.serve_forever, name="mrd-server", daemon=True)
        self._runner.start()
        return self

    def stop(self) -> None:
        """Stop accepting; :meth:`serve_forever` returns once open sessions are done (or cut). Signal-safe."""
        self._stopping.set()

    def close(self) -> None:
        """:meth:`stop` and wait for the background thread of :meth:`start`."""
        self.stop()
        if self._runner is not None:
            self._runner.join(self.limits.shutdown_timeout_s + 10.0)
        else:
            self._listener.close()

    def __enter__(self) -> MrdServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_connection(self, sock: socket.socket, peer) -> None:
        number = next(self._numbers)
        with self._lock:
            self._open[number] = sock
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(target=self._run_connection, args=(number, sock, peer),
                                      name=f"mrd-connection-{number}", daemon=True)
            self._threads.append(thread)
        thread.start()

    def _run_connection(self, number: int, sock: socket.socket, peer) -> None:
        try:
            _Connection(self, number, sock).run()
        except Exception:  # a bug in one session must not take the server down
            log.exception("connection #%d failed", number)
        finally:
            _close_quietly(sock)
            with self._lock:
                self._open.pop(number, None)
            self._slots.release()
            log.debug("connection #%d from %s:%d closed", number, *peer[:2])

    def _drain_sessions(self) -> None:
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + self.limits.shutdown_timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            cut = list(self._open.items())
        for number, sock in cut:
            log.warning("shutdown: connection #%d still open after %.0f s, cut", number, self.limits.shutdown_timeout_s)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5.0)
        log.info("MRD server stopped")

    def session_core(self, props: Mapping[str, str]) -> InlineCore:
        """A core with the operator's properties overlaid by a session's own, over the shared backend."""
        return InlineCore(CoreConfig.from_properties({**self.properties, **props}), backend=self.backend)


def _close_quietly(sock: socket.socket) -> None:
    """Half-close, read what the client still sends (bounded), then close: the reply is not lost to a reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(_DRAIN_S)
        deadline, drained = time.monotonic() + _DRAIN_S, 0
        while time.monotonic() < deadline and drained < _DRAIN_BYTES:
            chunk = sock.recv(2**16)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass
    finally:
        sock.close()


class _Connection:
    """One client connection: the message loop around one core session."""

    def __init__(self, server: MrdServer, number: int, sock: socket.socket) -> None:
        self.server = server
        self.number = number
        sock.settimeout(server.limits.idle_timeout_s)
        self.reader = MessageReader(sock.recv, server.limits.max_message_bytes)
        self.writer = MessageWriter(sock.sendall)
        self.n_images = self.n_vne = self.n_reported = 0
        self.dropped: dict[MessageId, int] = {}

    def run(self) -> None:
        try:
            self._serve()
        except ProtocolError as exc:
            log.warning("connection #%d: protocol error, closed: %s", self.number, exc)
            try:
                self.writer.text(f"ERR: {exc}")
                self.writer.close()
            except OSError:
                pass
        except OSError as exc:  # reset, broken pipe, idle timeout
            log.warning("connection #%d lost: %s", self.number, exc.strerror or type(exc).__name__)

    def _serve(self) -> None:
        started = time.monotonic()
        msg = self.reader.read()
        if msg is None or msg.id == MessageId.CLOSE:
            log.debug("connection #%d ended before a config", self.number)
            return self._close_if(msg)
        if msg.id not in (MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT):
            raise MalformedMessage(f"expected CONFIG_FILE or CONFIG_TEXT first, got {msg.id.name}")
        config_name = msg.value.strip().splitlines()[0][:80] if msg.value.strip() else ""
        msg = self.reader.read()
        if msg is None or msg.id == MessageId.CLOSE:
            log.info("connection #%d: config %r only, no data (normal for a query)", self.number, config_name)
            return self._close_if(msg)
        if msg.id != MessageId.HEADER:
            raise MalformedMessage(f"expected HEADER after the config, got {msg.id.name}")
        header_xml = msg.value
        msg = self.reader.read()
        params = None
        if msg is not None and msg.id == MessageId.TEXT:
            params, msg = msg.value, self.reader.read()
        session = self._open_session(header_xml, params)
        while msg is not None and msg.id != MessageId.CLOSE:
            self._dispatch(session, msg)
            msg = self.reader.read()
        if msg is None:
            log.warning("connection #%d ended without CLOSE after %d images: session abandoned",
                        self.number, self.n_images)
            return
        if session is not None:
            self._send_records(session.close())
            self._send_reports(session)
        self.writer.text(f"DBG: VNE done: {self.n_images} images in, {self.n_vne} VNE images out, "
                         f"{time.monotonic() - started:.1f} s")
        self.writer.close()
        log.info("connection #%d: config %r, %d images in, %d VNE out, %.1f s", self.number, config_name,
                 self.n_images, self.n_vne, time.monotonic() - started)

    def _close_if(self, msg: Message | None) -> None:
        """Answer a client's CLOSE with ours (nothing to answer after a bare EOF)."""
        if msg is not None:
            self.writer.close()

    def _open_session(self, header_xml: str, params: str | None) -> Session | None:
        """The core session (None: VNE off, images still pass through), announced by DBG/WRN lines."""
        props, notes = session_properties(params) if params is not None else ({}, [])
        try:
            try:
                core = self.server.session_core(props)
                if props:
                    notes.append("DBG: parameters applied: " + ", ".join(f"{k}={v}" for k, v in sorted(props.items())))
            except ValueError as exc:
                notes.append(f"WRN: parameters not applied ({exc})")
                core = self.server.session_core({})
            session = core.open_session(header_xml)
        except Exception as exc:  # e.g. the store is not writable: never stop the images
            log.error("connection #%d: VNE disabled, images pass through: %s: %s", self.number, type(exc).__name__, exc)
            self.writer.text(f"ERR: VNE disabled for this connection, images pass through: {type(exc).__name__}: {exc}")
            return None
        model = self.server.backend.config
        lines = [f"DBG: vne-inline {__version__}: model {model.name} on {self.server.backend.name}, "
                 f"VNE series {core.config.vne_series_index}"]
        if model.trained_on == "synthetic":
            lines.append("WRN: VNE weights trained on synthetic data: not for clinical use")
        note = _header_note(header_xml)
        for line in lines + notes + ([note] if note else []):
            self.writer.text(line)
        return session

    def _dispatch(self, session: Session | None, msg: Message) -> None:
        if msg.id == MessageId.IMAGE:
            self.n_images += 1
            self.writer.image(msg.value)  # the input goes back first, byte for byte
            if session is not None:
                record = ImageRecord.from_ismrmrd(msg.value)
                self._send_records(r for r in session.feed(record) if r is not record)
                self._send_reports(session)
        elif msg.id in (MessageId.ACQUISITION, MessageId.WAVEFORM):
            if msg.id not in self.dropped:
                self.writer.text(f"WRN: {msg.id.name.lower()} messages are not processed by VNE "
                                 "(it works on reconstructed images); dropped")
            self.dropped[msg.id] = self.dropped.get(msg.id, 0) + 1
        elif msg.id == MessageId.TEXT:
            log.debug("connection #%d: TEXT after the data started, ignored", self.number)
        else:
            raise MalformedMessage(f"unexpected {msg.id.name} after the ISMRMRD header")

    def _send_records(self, records) -> None:
        for record in records:
            self.writer.image(record.to_ismrmrd())
            self.n_vne += 1

    def _send_reports(self, session: Session) -> None:
        """One TEXT line per new slice report: ``DBG:`` for a VNE made, ``WRN:`` with the reason otherwise."""
        for report in session.reports[self.n_reported:]:
            self.writer.text(f"{'DBG' if report.made else 'WRN'}: {report.line()}")
        self.n_reported = len(session.reports)
