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
   ones (model, backend, threads, store, role patterns, bounds) belong to the operator and are
   refused; ``config`` and ``customconfig`` name the plugin and are ignored; anything else is listed
   as unused. Parameters that are not a JSON object (or nest deeper than :data:`MAX_JSON_DEPTH`) get
   an ``ERR:`` line and turn VNE off for the connection; the images still pass through.
4. images (1022), then CLOSE (4).

The server answers every input image (the same bytes, at once), the VNE images as they are made,
TEXT log lines (``DBG:`` facts, ``WRN:`` one per T1 slice without VNE and why, ``ERR:`` a protocol
error) and CLOSE. Raw acquisitions (1008) and waveforms (1026) are read and dropped (VNE works on
reconstructed images; one ``WRN:`` line says so). A connection that ends without CLOSE is abandoned:
its open slices are not completed. A message over the size limit, an unknown message id or an
undecodable message gets an ``ERR:`` line and the connection is closed; other sessions go on.

Work per client is bounded (:class:`ServerLimits`): text messages and image meta are refused above
``max_text_bytes`` before they are read; the config and header must arrive within ``header_timeout_s``
of connecting; once a message has started, it must keep coming at ``min_rate_bytes_s`` after a grace of
``message_grace_s``; between messages a connection may be silent for ``idle_timeout_s`` (a scanner
between reconstructions). A connection that breaks a bound gets an ``ERR:`` line and CLOSE. So silent
or trickling clients hold a slot for seconds, not minutes.

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
    DEFAULT_MAX_TEXT_BYTES,
    DEFAULT_PORT,
    MalformedMessage,
    Message,
    MessageId,
    MessageReader,
    MessageWriter,
    ProtocolError,
)
from vne_inline.core.normalise import ModelInputs
from vne_inline.core.pipeline import PROPERTIES, CoreConfig, InlineCore, Session, open_store
from vne_inline.io.records import ImageRecord

__all__ = ["MrdServer", "ServerLimits", "SESSION_PROPERTIES", "MAX_JSON_DEPTH", "session_properties"]

log = logging.getLogger("vne_inline.adapters.mrd_server")

#: Core properties a client may set for its own session (JSON parameters).
SESSION_PROPERTIES = frozenset(
    {"vne_series_index", "series_roles", "min_cine_phases", "min_cosine", "max_distance_mm"}
)
#: Deepest nesting accepted in JSON parameters (FIRE's are two levels deep).
MAX_JSON_DEPTH = 8
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
    """Bounds: message and text size (bytes), concurrent connections, time to the header (s), silence between
    messages (s), slowest transfer inside a message (bytes/s after a grace in s), shutdown grace (s)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    max_clients: int = 8
    header_timeout_s: float = 5.0
    idle_timeout_s: float = 300.0
    min_rate_bytes_s: float = 2.0**20
    message_grace_s: float = 10.0
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_message_bytes < CONFIG_FILE_BYTES or self.max_text_bytes < CONFIG_FILE_BYTES:
            raise ValueError(f"max_message_bytes and max_text_bytes must be >= {CONFIG_FILE_BYTES}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {self.max_clients}")
        if not (self.idle_timeout_s > 0 and self.header_timeout_s > 0 and self.shutdown_timeout_s >= 0):
            raise ValueError("idle_timeout_s and header_timeout_s must be > 0 and shutdown_timeout_s >= 0")
        if not (self.min_rate_bytes_s > 0 and self.message_grace_s > 0):
            raise ValueError("min_rate_bytes_s and message_grace_s must be > 0")


def _depth(value: object) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def session_properties(text: str) -> tuple[dict[str, str], list[str]]:
    """The per-session core properties in a JSON parameter text, and the ``WRN:``/``DBG:`` lines about it.
    ValueError (one line) for text that is not a JSON object of at most :data:`MAX_JSON_DEPTH` levels."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, too deep for the parser
        raise ValueError(f"parameters are not valid JSON ({type(exc).__name__})") from None
    if _depth(raw) > MAX_JSON_DEPTH:
        raise ValueError(f"parameters nest deeper than {MAX_JSON_DEPTH} levels")
    params = raw.get("parameters", raw) if isinstance(raw, dict) else None
    if not isinstance(params, dict):
        raise ValueError("parameters must be a JSON object")
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
        open_store(config)  # the store root: created, or refused (ValueError, OSError) now, not per scan
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


class _TooSlow(TimeoutError):
    """A client broke a time bound of :class:`ServerLimits`; the message says which."""


class _Pacer:
    """`recv` for one connection under the time bounds of :class:`ServerLimits`: until the header is in, one
    deadline from the connect; then `idle_timeout_s` between messages; inside a message, at least
    `min_rate_bytes_s` once `message_grace_s` has passed."""

    def __init__(self, sock: socket.socket, limits: ServerLimits) -> None:
        self._sock = sock
        self._limits = limits
        self._until: float | None = time.monotonic() + limits.header_timeout_s
        self._started: float | None = None
        self._received = 0

    def next_message(self) -> None:
        self._started, self._received = None, 0

    def header_done(self) -> None:
        self._until = None

    def recv(self, n: int) -> bytes:
        now, limits = time.monotonic(), self._limits
        if self._started is None:
            timeout, what = ((self._until - now, f"no config and header within {limits.header_timeout_s:g} s")
                             if self._until is not None else
                             (limits.idle_timeout_s, f"silent for {limits.idle_timeout_s:g} s"))
        else:
            timeout = self._started + limits.message_grace_s + self._received / limits.min_rate_bytes_s - now
            what = f"message slower than {limits.min_rate_bytes_s / 1024:g} KiB/s"
            if self._until is not None and self._until - now < timeout:
                timeout, what = self._until - now, f"no config and header within {limits.header_timeout_s:g} s"
        if timeout <= 0:
            raise _TooSlow(what)
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(n)
        except TimeoutError:
            raise _TooSlow(what) from None
        if self._started is None and data:
            self._started = now
        self._received += len(data)
        return data

    def send(self, data: bytes) -> None:
        self._sock.settimeout(self._limits.idle_timeout_s)
        self._sock.sendall(data)


class _Connection:
    """One client connection: the message loop around one core session."""

    def __init__(self, server: MrdServer, number: int, sock: socket.socket) -> None:
        self.server = server
        self.number = number
        self.pacer = _Pacer(sock, server.limits)
        self.reader = MessageReader(self.pacer.recv, server.limits.max_message_bytes, server.limits.max_text_bytes)
        self.writer = MessageWriter(self.pacer.send)
        self.n_images = self.n_vne = self.n_reported = 0
        self.dropped: dict[MessageId, int] = {}

    def run(self) -> None:
        try:
            self._serve()
        except (ProtocolError, _TooSlow) as exc:
            kind = "protocol error" if isinstance(exc, ProtocolError) else "too slow"
            log.warning("connection #%d: %s, closed: %s", self.number, kind, exc)
            try:
                self.writer.text(f"ERR: {exc}; connection closed")
                self.writer.close()
            except OSError:
                pass
        except OSError as exc:  # reset, broken pipe
            log.warning("connection #%d lost: %s", self.number, exc.strerror or type(exc).__name__)

    def _read(self) -> Message | None:
        self.pacer.next_message()
        return self.reader.read()

    def _serve(self) -> None:
        started = time.monotonic()
        msg = self._read()
        if msg is None or msg.id == MessageId.CLOSE:
            log.debug("connection #%d ended before a config", self.number)
            return self._close_if(msg)
        if msg.id not in (MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT):
            raise MalformedMessage(f"expected CONFIG_FILE or CONFIG_TEXT first, got {msg.id.name}")
        config_name = msg.value.strip().splitlines()[0][:80] if msg.value.strip() else ""
        msg = self._read()
        if msg is None or msg.id == MessageId.CLOSE:
            log.info("connection #%d: config %r only, no data (normal for a query)", self.number, config_name)
            return self._close_if(msg)
        if msg.id != MessageId.HEADER:
            raise MalformedMessage(f"expected HEADER after the config, got {msg.id.name}")
        self.pacer.header_done()
        header_xml = msg.value
        msg = self._read()
        params = None
        if msg is not None and msg.id == MessageId.TEXT:
            params, msg = msg.value, self._read()
        session = self._open_session(header_xml, params)
        while msg is not None and msg.id != MessageId.CLOSE:
            self._dispatch(session, msg)
            msg = self._read()
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
        """The core session (None: VNE off, images still pass through), announced by DBG/WRN/ERR lines."""
        try:
            props, notes = session_properties(params) if params is not None else ({}, [])
        except ValueError as exc:
            log.warning("connection #%d: VNE off, images pass through: %s", self.number, exc)
            self.writer.text(f"ERR: {exc}; VNE off for this connection, images pass through")
            return None
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
        if session.header_note is not None:
            notes.append(f"WRN: {session.header_note}: cine and T1 mapping on different connections cannot be "
                         "matched")
        for line in lines + notes:
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
