"""DICOM node: a C-STORE receiver (pynetdicom) on the inline core, forwarding the VNE series by C-STORE.

A scanner or PACS routes the cine and T1-mapping series to this node, in any order and in separate
associations. The node

1. accepts MR Image Storage and Enhanced MR Image Storage (and Verification); every other SOP class
   is refused at association negotiation. Each instance is written atomically, owner-only, to
   ``SPOOL/incoming/<study hash>/<series hash>/`` (file names are hashes: no UID or name in a path);
   a ``pending`` marker flags the series for processing.
2. decodes each instance as it arrives (:func:`vne_inline.io.dicom.parse_instance`) and processes a
   series when its association ends (release or abort), or when no image of it has arrived for
   ``series_idle_s`` while the association stays open: the series (from the decoded instances, or read
   from disk after a restart) is grouped with the study's other series as :mod:`adapters.scans` does
   (IR images travel with their T1 map), and each scan it belongs to is fed to the shared
   :class:`InlineCore` as one session, so the per-study store (shared with the Gadgetron gadget and
   the MRD server) meets cine and T1 mapping across associations and restarts. IR images whose map
   series has not arrived wait for it up to ``map_wait_s`` (``t1_maps=scanner``) before a map is fitted.
3. writes each VNE (and each fitted T1 map), as soon as it is made, as a DICOM MR image
   (:class:`adapters.dicom_output.DicomOutput`) to
   ``SPOOL/outbox/`` and C-STOREs the outbox to the ``--forward`` destination: retried with
   exponential back-off, kept on disk until the destination confirms, so a restart loses nothing
   (pending series and queued VNE are picked up at start).

Bounded ACSE / DIMSE / network (idle) timeouts and maximum PDU size; SIGTERM (``stop``) lets open
associations finish (up to ``shutdown_timeout_s``), closes the listener, processes what arrived and
tries the outbox once more. One log
line per T1 slice (the core's report) and per forwarded batch; no patient data in the logs. Received
files are removed after ``expiry_h`` like the store's entries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import EnhancedMRImageStorage, MRImageStorage, Verification

from vne_inline.adapters.dicom_output import DicomOutput
from vne_inline.adapters.scans import dicom_scans
from vne_inline.core.pipeline import CoreConfig, InlineCore
from vne_inline.core.roles import Role, classify
from vne_inline.core.t1_fit import is_fitted_map
from vne_inline.io.dicom import (
    DicomFolder,
    DicomSeries,
    ParsedInstance,
    parse_instance,
    read_dicom_folder,
    series_from_parsed,
)
from vne_inline.io.header import ExamHeader
from vne_inline.io.records import ImageRecord

__all__ = ["Destination", "NodeConfig", "DicomNode", "STORAGE_CLASSES"]

log = logging.getLogger("vne_inline.adapters.dicom_node")

STORAGE_CLASSES = (MRImageStorage, EnhancedMRImageStorage)
_PENDING = "pending"
_STATUS_OK, _STATUS_CANNOT_UNDERSTAND, _STATUS_OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700


@dataclass(frozen=True)
class Destination:
    """A C-STORE destination (host, port, AE title)."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Destination:
        """From ``HOST:PORT:AET`` (ValueError with the expected form otherwise)."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ValueError(f"forward destination {text!r}: use HOST:PORT:AET")
        try:
            port = int(parts[1])
        except ValueError as exc:
            raise ValueError(f"forward destination {text!r}: port must be a number") from exc
        if not 0 < port < 65536 or len(parts[2]) > 16:
            raise ValueError(f"forward destination {text!r}: port 1-65535, AE title at most 16 characters")
        return cls(parts[0], port, parts[2])


@dataclass(frozen=True)
class NodeConfig:
    """Network, spool and timing settings of the node (times in s, sizes in bytes)."""

    spool: Path
    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "VNE_INLINE"
    forward: Destination | None = None
    max_pdu: int = 65536
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 120.0
    max_associations: int = 8
    series_idle_s: float = 15.0
    map_wait_s: float = 30.0
    retry_initial_s: float = 2.0
    retry_max_s: float = 300.0
    shutdown_timeout_s: float = 30.0
    expiry_h: float = 24.0

    def __post_init__(self) -> None:
        if self.map_wait_s < 0:
            raise ValueError("map_wait_s must be >= 0")
        if not 1 <= len(self.ae_title) <= 16:
            raise ValueError("AE title must have 1 to 16 characters")
        if self.max_pdu != 0 and self.max_pdu < 4096:
            raise ValueError("maximum PDU size must be 0 (unlimited) or at least 4096 bytes")


def _digest(text: str, n: int = 24) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write_atomic(ds: Dataset, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        ds.save_as(f, enforce_file_format=True)
    os.replace(tmp, path)


@dataclass(frozen=True)
class _MapDue:
    """The wait for the T1 maps of a study's IR images is over."""

    study: str


@dataclass
class _Series:
    """A received series waiting to be processed."""

    study: str
    path: Path
    last_seen: float
    associations: set[int] = field(default_factory=set)


class DicomNode:
    """The node: pynetdicom server, one processing thread, one forwarding thread."""

    def __init__(self, config: NodeConfig, core_properties: Mapping[str, str] | None = None, backend=None) -> None:
        self.config = config
        self.core = InlineCore(CoreConfig.from_properties(dict(core_properties or {})), backend=backend)
        self._incoming, self._outbox = config.spool / "incoming", config.spool / "outbox"
        for d in (config.spool, self._incoming, self._outbox):
            _ensure_dir(d)
        self._lock = threading.Lock()
        self._open: dict[str, _Series] = {}  # series dir -> receiving state
        self._ready: queue.Queue[Path | _MapDue | None] = queue.Queue()
        self._studies: dict[str, dict[str, DicomSeries]] = {}  # study hash -> parsed series (cache)
        self._received: dict[Path, dict[str, ParsedInstance]] = {}  # series dir -> file name -> decoded on arrival
        self._map_due: dict[str, float] = {}  # study hash -> when its IR images without a map get a fitted one
        self._outputs: dict[str, DicomOutput] = {}  # study hash -> its VNE series numbering and sources
        self._wake_forwarder = threading.Event()
        self._stop_requested = threading.Event()
        self._stopping = threading.Event()
        self._retry_at: dict[str, float] = {}
        self._backoff_s = config.retry_initial_s
        self._server = None
        self._threads: list[threading.Thread] = []
        self.processed = 0  # series processed (for tests and the benchmark)
        self.forwarded = 0  # VNE instances confirmed by the destination

    # ------------------------------------------------------------------ life cycle
    def start(self) -> DicomNode:
        """Start listening (once); resume series and VNE left by an earlier run."""
        if self._server is not None:
            return self
        self._purge()
        for marker in sorted(self._incoming.glob(f"*/*/{_PENDING}")):
            self._ready.put(marker.parent)
        ae = AE(ae_title=self.config.ae_title)
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class)
        ae.add_supported_context(Verification)
        ae.acse_timeout, ae.dimse_timeout = self.config.acse_timeout_s, self.config.dimse_timeout_s
        ae.network_timeout = self.config.network_timeout_s
        ae.maximum_pdu_size = self.config.max_pdu
        ae.maximum_associations = self.config.max_associations
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_end),
                    (evt.EVT_ABORTED, self._on_end), (evt.EVT_CONN_CLOSE, self._on_end)]
        self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        for target, name in ((self._process_loop, "vne-node-process"), (self._forward_loop, "vne-node-forward"),
                             (self._sweep_loop, "vne-node-sweep")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        queued = len(list(self._outbox.glob("*.dcm")))
        log.info("DICOM node %s listening on %s:%d%s%s", self.config.ae_title, *self.address,
                 "" if self.config.forward is None else
                 f", forwarding to {self.config.forward.ae_title}@{self.config.forward.host}:{self.config.forward.port}",
                 f", {queued} VNE queued" if queued else "")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2] if self._server else (self.config.host, self.config.port)

    def stop(self) -> None:
        """Refuse new associations, let open ones finish, process what arrived, try the outbox once more."""
        if self._stopping.is_set():
            return
        self._stop_requested.set()
        self._stopping.set()
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        server = self._server
        if server is not None:
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)  # open associations finish
            server.shutdown()
        with self._lock:
            for key in list(self._open):
                self._ready.put(self._open.pop(key).path)
        self._ready.put(None)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()) + 1.0)
        log.info("DICOM node stopped: %d series processed, %d VNE forwarded, %d queued", self.processed,
                 self.forwarded, len(list(self._outbox.glob("*.dcm"))))

    def __enter__(self) -> DicomNode:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe in a signal handler)."""
        self._stop_requested.set()

    def wait(self) -> None:
        """Block until :meth:`request_stop` (SIGTERM in the command) or :meth:`stop`."""
        while not self._stop_requested.wait(0.5):
            pass

    # ------------------------------------------------------------------ receiving
    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception:  # undecodable dataset: refused, the association goes on
            return _STATUS_CANNOT_UNDERSTAND
        study_uid, series_uid, sop_uid = (str(ds.get(k, "")) for k in
                                          ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
        if not (study_uid and series_uid and sop_uid):
            return _STATUS_CANNOT_UNDERSTAND
        study = ExamHeader(study_uid=study_uid).study_key
        series_dir = self._incoming / study / _digest(series_uid)
        name = f"{_digest(sop_uid)}.dcm"
        try:
            _ensure_dir(series_dir.parent)
            _ensure_dir(series_dir)
            _write_atomic(ds, series_dir / name)
            (series_dir / _PENDING).touch(mode=0o600)
        except OSError:
            log.exception("cannot store a received instance")
            return _STATUS_OUT_OF_RESOURCES
        try:  # decoded now, while the rest of the series is still on its way
            parsed = parse_instance(ds)
        except Exception:  # left to the reading from disk, which names the reason
            parsed = None
        with self._lock:
            if parsed is not None:
                self._received.setdefault(series_dir, {})[name] = parsed
            s = self._open.setdefault(str(series_dir), _Series(study, series_dir, time.monotonic()))
            s.last_seen = time.monotonic()
            s.associations.add(id(event.assoc))
        return _STATUS_OK

    def _on_end(self, event) -> None:
        """An association ended: its series are complete."""
        assoc = id(event.assoc)
        with self._lock:
            done = [k for k, s in self._open.items() if assoc in s.associations]
            for k in done:
                s = self._open[k]
                s.associations.discard(assoc)
                if not s.associations:
                    self._ready.put(self._open.pop(k).path)

    def _sweep_loop(self) -> None:
        """Series idle for `series_idle_s` under a still-open association are complete; expiry hourly."""
        last_purge = time.monotonic()
        while not self._stopping.wait(0.5):
            now = time.monotonic()
            with self._lock:
                idle = [k for k, s in self._open.items() if now - s.last_seen > self.config.series_idle_s]
                for k in idle:
                    self._ready.put(self._open.pop(k).path)
                due = [study for study, at in self._map_due.items() if at <= now]
                for study in due:
                    del self._map_due[study]
                    self._ready.put(_MapDue(study))
            if now - last_purge > 3600:
                self._purge()
                last_purge = now

    def _purge(self) -> None:
        cutoff = time.time() - 3600.0 * self.config.expiry_h
        for study in self._incoming.glob("*"):
            try:
                if study.is_dir() and study.stat().st_mtime < cutoff:
                    for f in sorted(study.rglob("*"), reverse=True):
                        f.unlink() if f.is_file() else f.rmdir()
                    study.rmdir()
                    self._studies.pop(study.name, None)
                    self._outputs.pop(study.name, None)
            except OSError:
                continue

    # ------------------------------------------------------------------ processing
    def _process_loop(self) -> None:
        while True:
            batch, done = [self._ready.get()], False
            while True:  # everything ready now is one batch: series of one study are processed together
                try:
                    batch.append(self._ready.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                batch, done = [p for p in batch if p is not None], True
            by_study: dict[str, set[Path]] = {}
            due: set[str] = set()
            for item in batch:
                if isinstance(item, _MapDue):
                    due.add(item.study)
                else:
                    by_study.setdefault(Path(item).parent.name, set()).add(Path(item))
            for study in [*by_study, *(d for d in due if d not in by_study)]:
                try:
                    self._process(study, by_study.get(study, set()), study in due or done)
                except Exception:  # one bad series never stops the node; the traceback names code, not data
                    log.exception("a received series could not be processed")
            self._wake_forwarder.set()
            if done:
                break

    def _study_series(self, study: str, fresh: set[Path]) -> dict[str, DicomSeries]:
        """The study's parsed series (cached), with the series in `fresh` read again from disk."""
        cached = self._studies.setdefault(study, {})
        for series_dir in sorted((self._incoming / study).glob("*")):
            if series_dir.is_dir() and (series_dir in fresh or series_dir.name not in cached):
                series = self._read_series(series_dir)
                if series is None:
                    log.warning("a received series holds no usable MR image")
                    cached.pop(series_dir.name, None)
                    continue
                cached[series_dir.name] = series
        while len(self._studies) > 8:  # keep the most recent studies parsed
            oldest = next(iter(self._studies))
            self._studies.pop(oldest)
            self._outputs.pop(oldest, None)
        return cached

    def _read_series(self, series_dir: Path) -> DicomSeries | None:
        """A received series: from the instances decoded on arrival when they cover every file of it, else
        read from disk (after a restart, or a series completed over several associations); None if unusable."""
        names = sorted(p.name for p in series_dir.glob("*.dcm"))
        with self._lock:
            decoded = self._received.pop(series_dir, {})
        if names and all(n in decoded for n in names):
            series, _ = series_from_parsed(decoded[n] for n in names)
        else:
            try:
                series = read_dicom_folder(series_dir).series
            except ValueError:
                return None
        return series[0] if series else None

    def _process(self, study: str, fresh: set[Path], maps_due: bool = False) -> None:
        """Feed every scan holding a freshly completed series of `study` to the core; queue the VNE. IR images
        that came without a T1 map (``t1_maps=scanner``) wait up to ``map_wait_s`` for the map series,
        which scanners send as a series of its own, before the core fits a map (`maps_due`: the wait is over)."""
        started = time.perf_counter()
        fresh = {p for p in fresh if p.is_dir()}
        all_series = self._study_series(study, fresh)
        self.processed += len(fresh)
        uids = {all_series[p.name].uid for p in fresh if p.name in all_series}
        if maps_due:  # series still marked pending and not being received: IR images held for their map
            with self._lock:
                receiving = set(self._open)
            uids |= {s.uid for name, s in all_series.items()
                     if (self._incoming / study / name / _PENDING).exists() and str(self._incoming / study / name) not in receiving}
        folder = DicomFolder(sorted(all_series.values(), key=lambda s: (s.time, s.number)), [])
        scans = [s for s in dicom_scans(folder, self.core.config.rules) if any(x.uid in uids for x in s.series)]
        held = []
        if not maps_due and self.core.config.t1_maps == "scanner" and self.config.map_wait_s > 0:
            held = [s for s in scans if self._without_map(s)]
            if held:
                with self._lock:
                    self._map_due[study] = time.monotonic() + self.config.map_wait_s
                log.info("IR-weighted images of %d series without a T1 map yet: waiting up to %.0f s for the map "
                         "series before fitting one", len(held), self.config.map_wait_s)
                scans = [s for s in scans if s not in held]
        held_uids = {x.uid for s in held for x in s.series}
        for uid in (uids | {x.uid for s in scans for x in s.series}) - held_uids:  # handled: no longer pending
            (self._incoming / study / _digest(uid) / _PENDING).unlink(missing_ok=True)
        if not scans:
            return
        output = self._outputs.setdefault(study, DicomOutput(self.core.config.rules, self.core.config.criteria))
        for s in folder.series:
            if s.uid in uids or not output.knows(s.uid):
                output.add(s.records, s.header_xml, [s], key=s.uid)
        for scan in scans:  # each VNE (and fitted map) goes to the outbox, and the forwarder, as soon as it is made
            session = self.core.open_session(scan.header_xml)
            for record in scan.records:
                self._queue(output, session.feed(record)[1:])
            self._queue(output, session.close())
        log.debug("%d series processed in %.0f ms", len(fresh), 1000 * (time.perf_counter() - started))

    def _queue(self, output: DicomOutput, images: list[ImageRecord]) -> None:
        """Write the VNE and fitted T1 maps among a session's new `images` to the outbox and wake the forwarder
        (fitted maps come before the VNE made from them)."""
        for image in filter(output.writes, images):
            try:
                ds = output.dataset(image)
                _write_atomic(ds, self._outbox / f"{time.time_ns()}-{_digest(ds.SOPInstanceUID, 12)}.dcm")
            except (ValueError, OSError) as exc:
                what = "fitted T1 map" if is_fitted_map(image) else "VNE"
                log.warning("T1 slice %d: %s not written as DICOM: %s", image.slice, what, exc)
                continue
            self._wake_forwarder.set()

    def _without_map(self, scan) -> bool:
        """True for a scan of IR-weighted images that brought no T1 map."""
        roles = {classify(r, self.core.config.rules) for r in scan.records}
        return Role.IR in roles and Role.T1MAP not in roles

    # ------------------------------------------------------------------ forwarding
    def _forward_loop(self) -> None:
        while True:
            self._wake_forwarder.wait(1.0)
            self._wake_forwarder.clear()
            finishing = self._stopping.is_set() and not any(t.is_alive() for t in self._threads[:1])
            if self.config.forward is not None:
                self._forward_due(force=finishing)
            if finishing:
                break

    def _forward_due(self, force: bool = False) -> None:
        now = time.monotonic()
        files = sorted(p for p in self._outbox.glob("*.dcm") if force or self._retry_at.get(p.name, 0.0) <= now)
        if not files:
            return
        dest = self.config.forward
        ae = AE(ae_title=self.config.ae_title)
        ae.add_requested_context(MRImageStorage)
        ae.acse_timeout, ae.dimse_timeout = self.config.acse_timeout_s, self.config.dimse_timeout_s
        ae.network_timeout, ae.connection_timeout = self.config.network_timeout_s, self.config.acse_timeout_s
        ae.maximum_pdu_size = self.config.max_pdu
        sent, reason = 0, None
        try:
            assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        except Exception as exc:  # socket errors surface here on some platforms
            assoc, reason = None, f"{type(exc).__name__}"
        if assoc is not None and assoc.is_established:
            try:
                for path in files:
                    status = assoc.send_c_store(pydicom.dcmread(path))
                    code = getattr(status, "Status", None)
                    if code is None or not (code == 0 or 0xB000 <= code <= 0xBFFF):
                        reason = "no response" if code is None else f"status 0x{code:04X}"
                        break
                    path.unlink(missing_ok=True)
                    self._retry_at.pop(path.name, None)
                    sent += 1
            finally:
                assoc.release()
        elif reason is None:
            reason = "association rejected or destination unreachable"
        self.forwarded += sent
        left = len(files) - sent
        if sent:
            log.info("forwarded %d VNE image(s) to %s", sent, dest.ae_title)
        if left:
            when = time.monotonic() + self._backoff_s
            for path in files[sent:]:
                self._retry_at[path.name] = when
            log.warning("forwarding to %s failed (%s): %d VNE image(s) queued on disk, retry in %.0f s",
                        dest.ae_title, reason, left, self._backoff_s)
            self._backoff_s = min(2 * self._backoff_s, self.config.retry_max_s)
        else:
            self._backoff_s = self.config.retry_initial_s
