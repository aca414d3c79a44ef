"""The inline core: one :class:`InlineCore` per process, one :class:`Session` per connection (scan).

Every adapter (Gadgetron gadget, MRD server, offline replay) is a thin loop::

    core = InlineCore(CoreConfig.from_properties(props))
    session = core.open_session(header_xml)
    for record in images:
        send(session.feed(record))     # the input itself first (unchanged), then any VNE made
    send(session.close())              # VNE of slices completed at close

Per image: classify (:mod:`core.roles`); cine frames are buffered per slice until all announced
phases are in (else until close) and then written to the per-study store; a T1 slice is complete
when its map and its IR images are in (the header's announced ``set`` count, else at close; without a
map from the scanner the core fits one from the IR images, ``t1_maps``), is
written to the store as a new arrival and gets its VNE on its own connection: closest cine slice in
the store (:func:`find_match`), resampled onto the T1 grid, normalised, inferred, emitted. A
repeated or re-sent T1 scan is a new arrival and gets a new VNE. A T1 slice whose cine is not there
yet waits in the store; a cine slice that completes later (on any connection) makes the VNE of every
waiting T1 slice it matches, once per arrival (a claim in the store keeps two cine connections from
both making it). With ``vne_without_cine`` a T1 slice that no stored cine matches gets its VNE from
the IR images and the map alone, at once (tagged ``VNE_Inputs=IR+T1``). The cine's share of the work
(resampling onto the T1 grid, normalisation) is done when the first image of a T1 grid arrives, while
the rest of the slice is acquired, and kept for its VNE while the stored cine file is unchanged.
Every VNE carries the
input-domain check (:mod:`core.domain`: ``VNE_QC`` pass/warn/fail, ``VNE_QC_Reason``); a VNE whose
check is at or above ``qc_withhold`` is withheld with that reason.

Every T1 slice without a VNE gets one report line with the reason (:attr:`Session.reports`, logged);
a cine slice that cannot be stored does too. Inputs always pass through and nothing raises out of
``feed``/``close``. Work is bounded: images larger than ``max_grid`` pixels a side are not used, a
session buffers at most ``max_session_mb`` of pixels and stores at most ``max_session_slices``
slices; the store's own bounds are in :mod:`core.store`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vne_inline.core.domain import STATUSES, TrainingDomain, check_domain, slice_statistics
from vne_inline.core.emit import vne_record
from vne_inline.core.match import MatchCriteria, NoMatch, find_match, resample_onto
from vne_inline.core.normalise import MIN_IR_IMAGES, ModelInputs, cine_input, prepare_inputs
from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.core.slices import T1Slice, cine_slices, same_plane, t1_slices
from vne_inline.core.store import (
    DEFAULT_MAX_STORE_BYTES,
    DEFAULT_MAX_STUDY_SLICES,
    BadEntry,
    Claim,
    SliceStore,
    StoreFull,
    StudyStore,
    default_store_dir,
)
from vne_inline.core.t1_fit import DEFAULT_T1_SERIES, fit_slice
from vne_inline.geometry import SliceGeometry
from vne_inline.io.dicom_json import conformed
from vne_inline.io.header import ExamHeader, parse_header
from vne_inline.io.records import ImageRecord

__all__ = ["CoreConfig", "InlineCore", "Session", "SliceReport", "open_store", "DEFAULT_VNE_SERIES", "PROPERTIES"]

log = logging.getLogger("vne_inline.core.pipeline")

#: Default `image_series_index` of the VNE images: clear of the scanner's own series numbers
#: (the synthetic exams use 1-4) and of Gadgetron's usual 1-50 range.
DEFAULT_VNE_SERIES = 99


# ---------------------------------------------------------------------------- configuration
def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and np.isfinite(value)):
        raise ValueError("must be a positive number")
    return value


def _cosine(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError("must be in (0, 1]")
    return value


def _backend_name(text: str) -> str:
    from vne_inline.infer.select import BACKENDS  # names only: no runtime is imported

    if text not in ("auto", *BACKENDS):
        raise ValueError(f"choose from auto, {', '.join(BACKENDS)}")
    return text


def _choice(*names: str):
    def parse(text: str) -> str:
        if text.lower() not in names:
            raise ValueError(f"choose from {', '.join(names)}")
        return text.lower()

    return parse


def _scheme_name(text: str) -> str:
    from vne_inline.physics.t1_mapping import resolve_scheme

    resolve_scheme(text)  # ValueError naming the known schemes
    return text.lower()


def _precision(text: str) -> str:
    from vne_inline.infer.precision import PRECISIONS  # names only: no runtime is imported

    if text not in ("auto", *PRECISIONS):
        raise ValueError(f"choose from auto, {', '.join(PRECISIONS)}")
    return text


def _flag(text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError("must be true or false")
    return value in ("true", "1", "yes", "on")


def _withhold(text: str) -> str:
    if text not in (*STATUSES[1:], "never"):
        raise ValueError("choose from warn, fail, never")
    return text


def _int_in(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be an integer in [{low}, {high}]")
        return value

    return parse


#: Where T1 maps come from: "scanner" (use the scanner's; fit one from the IR images at the end of the
#: connection if none came), "fit" (the scanner sends none: fit as soon as a slice's IR images are in),
#: "off" (never fit).
T1_MAP_MODES = ("scanner", "fit", "off")

#: Property name -> parser of its text value (ValueError on a bad value).
PROPERTIES = {
    "store_dir": Path, "expiry_h": _positive_float, "vne_series_index": _int_in(0, 65535),
    "backend": _backend_name, "model": Path, "threads": _int_in(1, 1024), "precision": _precision,
    "series_roles": str, "role_patterns": str, "min_cine_phases": _int_in(1, 10000),
    "min_cosine": _cosine, "max_distance_mm": _positive_float,
    "vne_without_cine": _flag, "qc_withhold": _withhold,
    "t1_maps": _choice(*T1_MAP_MODES), "t1_scheme": _scheme_name, "t1_series_index": _int_in(0, 65535),
    "max_grid": _int_in(16, 8192), "max_session_mb": _positive_float, "max_session_slices": _int_in(1, 100000),
    "max_study_slices": _int_in(1, 100000), "max_store_mb": _positive_float,
}


@dataclass(frozen=True)
class CoreConfig:
    """Inline core settings. `store_dir` defaults to ``$VNE_INLINE_STORE`` or ``~/.cache/vne-inline/store``;
    `backend` is an :func:`vne_inline.infer.load_backend` name; `model` None means the shipped default;
    `precision` "auto" (the fastest the model's validation accepted), "fp32", "bf16" or "int8";
    `vne_without_cine`: make a VNE from IR images and map when no cine matches; `qc_withhold`: withhold
    a VNE whose domain check is "fail" (default), "warn" or worse, or "never" (tagged only)."""

    rules: RoleRules = field(default_factory=RoleRules)
    store_dir: Path = field(default_factory=default_store_dir)
    expiry_h: float = 24.0
    vne_series_index: int = DEFAULT_VNE_SERIES
    criteria: MatchCriteria = field(default_factory=MatchCriteria)
    backend: str = "auto"
    model: Path | None = None
    threads: int | None = None
    precision: str = "auto"
    vne_without_cine: bool = False
    qc_withhold: str = "fail"
    t1_maps: str = "scanner"
    t1_scheme: str = "auto"
    t1_series_index: int = DEFAULT_T1_SERIES
    #: Largest T1 / cine grid used for VNE (pixels per side); larger images pass through without VNE.
    max_grid: int = 512
    #: Pixels one session may hold in memory while slices complete (MB), and slices it may store.
    max_session_mb: float = 256.0
    max_session_slices: int = 64
    #: Slices per study, and size of the whole store (MB): the oldest studies are purged first.
    max_study_slices: int = DEFAULT_MAX_STUDY_SLICES
    max_store_mb: float = DEFAULT_MAX_STORE_BYTES / 2**20

    def __post_init__(self) -> None:
        clash = self.rules.series_roles.get(self.vne_series_index)
        if clash is not None and clash is not Role.VNE:
            raise ValueError(f"vne_series_index {self.vne_series_index} is the series of the {clash.value} images "
                             "(series_roles); choose another VNE series")

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> CoreConfig:
        """From string properties (Gadgetron ``<property>`` elements, MRD JSON parameters).

        Keys: ``store_dir``, ``expiry_h``, ``vne_series_index``, ``backend``, ``model``, ``threads``, ``precision``,
        ``series_roles`` (``"5=cine,7=ir"``), ``role_patterns`` (``"regex=role;..."``),
        ``min_cine_phases``, ``min_cosine``, ``max_distance_mm``, ``vne_without_cine`` (true/false),
        ``qc_withhold`` (warn, fail, never), ``t1_maps`` (:data:`T1_MAP_MODES`), ``t1_scheme`` (``auto``
        or a scheme name), ``t1_series_index``, and the bounds ``max_grid``, ``max_session_mb``,
        ``max_session_slices``, ``max_study_slices``, ``max_store_mb``. Empty values keep the default.
        Raises ValueError naming the key for an unknown key or a bad value.
        """
        unknown = sorted(set(props) - set(PROPERTIES))
        if unknown:
            raise ValueError(f"unknown VNE properties {unknown}; known: {sorted(PROPERTIES)}")
        values = {}
        for key, text in props.items():
            text = str(text).strip()
            if not text:
                continue
            try:
                values[key] = PROPERTIES[key](text)
            except ValueError as exc:
                raise ValueError(f"VNE property {key}={text!r}: {exc}") from exc
        try:
            rules = RoleRules.from_strings(values.pop("series_roles", None), values.pop("role_patterns", None),
                                           values.pop("min_cine_phases", RoleRules().min_cine_phases))
        except ValueError as exc:
            raise ValueError(f"VNE role properties: {exc}") from exc
        defaults = MatchCriteria()
        criteria = MatchCriteria(values.pop("min_cosine", defaults.min_cosine),
                                 values.pop("max_distance_mm", defaults.max_distance_mm))
        return replace(cls(), rules=rules, criteria=criteria, **values)


@dataclass(frozen=True)
class SliceReport:
    """What happened to one slice (`kind` "T1", or "cine" for one that could not be stored): VNE made or
    not and why; the cine match; time to VNE (ms)."""

    slice: int
    made: bool
    reason: str
    cine_distance_mm: float | None = None
    cine_cosine: float | None = None
    time_ms: float | None = None
    t1_fit_ms: float | None = None
    kind: str = "T1"

    def line(self) -> str:
        """One log line (no patient data)."""
        match = "" if self.cine_cosine is None else f" [cine {self.cine_distance_mm:.1f} mm, cos {self.cine_cosine:.3f}]"
        timing = "" if self.time_ms is None else f" [{self.time_ms:.0f} ms]"
        outcome = "VNE made" if self.made else ("no VNE" if self.kind == "T1" else "not stored")
        return f"{self.kind} slice {self.slice}: {outcome}: {self.reason}{match}{timing}"


class _Skip(Exception):
    """A VNE cannot be made; the message is the one-line reason."""


@functools.lru_cache(maxsize=8)
def _training_domain(domain_json: str) -> TrainingDomain:
    """A model's training domain, parsed once per model configuration (not once per slice)."""
    return TrainingDomain.from_json(domain_json)


def _plane_figures(plane) -> tuple[float | None, float | None]:
    """(distance mm, cosine) of a cine match, or (None, None) without one."""
    return (None, None) if plane is None else (plane.distance_mm, plane.cosine)


# ---------------------------------------------------------------------------- the core
def open_store(config: CoreConfig) -> SliceStore:
    """The configured store (created if missing); ValueError or OSError for a root that cannot be used."""
    return SliceStore(config.store_dir, config.expiry_h, int(config.max_store_mb * 2**20), config.max_study_slices)


class InlineCore:
    """Shared per process: configuration, store, and the backend (loaded lazily once, unless injected).
    Several sessions may run in threads at once; inference is serialised by a lock."""

    def __init__(self, config: CoreConfig | None = None, backend=None) -> None:
        self.config = config or CoreConfig()
        self.store = open_store(self.config)
        self._backend = backend
        self._backend_error: str | None = None
        self._load_lock = threading.Lock()
        self._infer_lock = threading.Lock()

    def open_session(self, header_xml: str | bytes | None) -> Session:
        """A session for one connection; purges expired store entries (and studies over the store's cap) first."""
        session = Session(self, header_xml)
        self.store.purge(keep=session.study_name)
        return session

    def backend(self):
        """The inference backend, loaded on first use; raises _Skip with the reason if unavailable."""
        with self._load_lock:
            if self._backend is None and self._backend_error is None:
                from vne_inline.infer import BackendError, load_backend

                c = self.config
                try:
                    self._backend = load_backend(c.backend, None if c.model is None else str(c.model), c.threads,
                                                 c.precision)
                    log.info("VNE backend %s loaded", self._backend.name)
                except BackendError as exc:
                    self._backend_error = str(exc)
            if self._backend is None:
                raise _Skip(f"backend unavailable: {self._backend_error}")
            return self._backend

    def infer(self, inputs: ModelInputs) -> np.ndarray:
        """The network output (H, W) for one slice; raises _Skip('model error: ...') on failure."""
        from vne_inline.infer import predict

        backend = self.backend()
        with self._infer_lock:
            try:
                return predict(backend, [inputs])[0]
            except Exception as exc:  # any backend failure is a per-slice skip, never a crash
                raise _Skip(f"model error: {type(exc).__name__}: {exc}") from exc


#: Cine inputs made ahead that a session keeps (the oldest go first; one is used by each VNE).
_CINE_AHEAD = 8


@dataclass(frozen=True)
class _CineInput:
    """A stored cine slice (store entry, file version, series and slice) as the generator's cine input
    on one T1 grid."""

    entry: str
    version: tuple[int, int, int] | None
    key: tuple[int, int]
    grid: SliceGeometry
    frames: np.ndarray


# ---------------------------------------------------------------------------- one connection
class Session:
    """One connection: feeds images in, returns them (plus any VNE) out. Not shared between threads.
    `header_note` says in one line why cine and T1 mapping of this session cannot meet across
    connections (None when the header keys the study)."""

    def __init__(self, core: InlineCore, header_xml: str | bytes | None) -> None:
        self._core = core
        self._config = core.config
        self.header_note: str | None = None
        try:
            header = parse_header(header_xml)
        except ValueError:  # the parser's message may quote header content: not logged
            header = ExamHeader()
            self.header_note = "header is not ISMRMRD XML"
        key = header.study_key
        self._ephemeral = key is None
        if key is None:
            key = f"session-{uuid.uuid4().hex}"
            self.header_note = self.header_note or "header has no StudyInstanceUID or FrameOfReferenceUID"
            log.warning("%s: cine and T1 mapping on different connections cannot be matched (per-session store)",
                        self.header_note)
        self.study_name = key
        self._study: StudyStore = core.store.study(key)
        self.n_phases = header.n_phases
        self.n_sets = header.n_sets
        self.field_t = header.field_strength_t
        self._cine: dict[tuple[int, int], dict[int, ImageRecord]] = {}
        self._maps: list[ImageRecord] = []
        self._ir: list[ImageRecord] = []
        self._map_seen = False
        self._buffered = 0  # bytes of pixels held in the buffers above
        self._stored = 0  # slices this session wrote to the store
        self._warned: set[str] = set()
        self._vne_off: str | None = None
        self.reports: list[SliceReport] = []
        self._finished_maps: list[ImageRecord] = []  # maps already paired with IR images this session
        self._cine_inputs: list[_CineInput] = []  # made when a T1 grid's first image arrived
        self._grids_seen: list[SliceGeometry] = []

    # ------------------------------------------------------------------ public
    def feed(self, record: ImageRecord) -> list[ImageRecord]:
        """The input itself (unchanged) first, then any VNE images it completed."""
        out = [record]
        try:
            out += self._route(record)
        except Exception as exc:  # never break the image stream; the reason names code, not data
            log.warning("image (series %d, slice %d) not processed for VNE: %s: %s", record.series_index,
                        record.slice, type(exc).__name__, exc)
            log.debug("details", exc_info=True)
        return out

    def close(self) -> list[ImageRecord]:
        """VNE images of the slices that complete at the end of the connection."""
        out: list[ImageRecord] = []
        try:
            for key in list(self._cine):
                out += self._finish_cine(key)
            out += self._complete_t1(final=True)
        except Exception as exc:
            log.warning("session close failed for VNE: %s: %s", type(exc).__name__, exc)
            log.debug("details", exc_info=True)
        finally:
            try:
                if self._ephemeral:
                    self._study.remove()
                self._core.store.purge(keep=self.study_name)
            except OSError as exc:
                log.warning("store clean-up after the session failed: %s", exc.strerror or exc)
        return out

    # ------------------------------------------------------------------ routing
    def _route(self, record: ImageRecord) -> list[ImageRecord]:
        record = conformed(record)  # DICOM geometry and TI of images converted from DICOM (DicomJson)
        role = classify(record, self._config.rules, self.n_phases)
        if role not in (Role.CINE, Role.IR, Role.T1MAP):
            return []
        if record.series_index == self._config.vne_series_index and self._vne_off is None:
            self._vne_off = (f"input {role.value} images use the VNE series index {record.series_index}; VNE off "
                             "for this connection (set vne_series_index to a free series)")
            log.warning(self._vne_off)
        if role is Role.T1MAP:
            self._map_seen = True  # the scanner sends maps, even one this session cannot use
        problem = self._unusable(record)
        if problem is not None:
            if role is Role.T1MAP:
                self._report(SliceReport(record.slice, False, problem))
            else:
                self._warn_once(f"{role.value} {problem}", f"{role.value} image (series %d, slice %d) not used "
                                f"for VNE: {problem}", record.series_index, record.slice)
            return []
        self._buffered += record.data.nbytes
        if role is Role.CINE:
            key = (record.series_index, record.slice)
            old = self._cine.setdefault(key, {}).get(record.phase)
            self._buffered -= 0 if old is None else old.data.nbytes
            self._cine[key][record.phase] = record
            if self.n_phases > 1 and len(self._cine[key]) >= self.n_phases:
                return self._finish_cine(key)
        else:
            (self._ir if role is Role.IR else self._maps).append(record)
            self._first_on_grid(record.geometry)
            return self._complete_t1(final=False)
        return []

    def _first_on_grid(self, grid: SliceGeometry) -> None:
        """On the first T1-scan image of a grid, make the generator's cine input of the matching stored
        cine slice on that grid, so that the slice's last image does not wait for it (the rest of the
        T1 slice is still being acquired). Any problem is left for the VNE to report."""
        if self._vne_off is not None or any(grid.same_grid(g) for g in self._grids_seen):
            return
        self._grids_seen.append(grid)
        try:
            match = find_match(grid, self._study.cine_geometries(), self._config.criteria)
            if not isinstance(match, NoMatch):
                self._cine_inputs = [*self._cine_inputs[1 - _CINE_AHEAD:], self._cine_input(match.key, grid)]
        except Exception as exc:  # only a head start: the VNE itself reports what is wrong
            log.debug("cine input for a T1 grid not made ahead: %s: %s", type(exc).__name__, exc)

    def _cine_input(self, entry: str, grid: SliceGeometry) -> _CineInput:
        """The stored cine slice `entry` as the generator's cine input on `grid`: the one made ahead when
        its file is unchanged, else read, resampled and normalised now (BadEntry, FileNotFoundError, or
        _Skip with the reason: no backend, the cine does not cover the grid)."""
        version = self._study.cine_version(entry)
        for i, ready in enumerate(self._cine_inputs):
            if ready.entry == entry and ready.version == version and ready.grid.same_grid(grid):
                return self._cine_inputs.pop(i)
        cine = self._study.cine(entry)
        config = self._core.backend().config
        try:
            frames = cine_input(resample_onto(grid, cine.frames, cine.geometry).data, grid.shape, config)
        except ValueError as exc:
            raise _Skip(f"cine not usable: {exc}") from exc
        return _CineInput(entry, version, cine.key, grid, frames)

    def _unusable(self, record: ImageRecord) -> str | None:
        """Why an image cannot take part in a VNE (bad geometry, grid over the limit, session memory full)."""
        try:
            geometry = record.geometry
        except ValueError as exc:
            return f"bad geometry ({exc})"
        nx, ny = geometry.matrix
        limit = self._config.max_grid
        if nx > limit or ny > limit:
            return f"grid {nx} x {ny} exceeds the VNE limit of {limit} x {limit} (max_grid); images pass through"
        if record.data.shape[-2:] != (ny, nx):
            return f"data of shape {record.data.shape} does not match its {nx} x {ny} header matrix"
        if self._buffered + record.data.nbytes > self._config.max_session_mb * 2**20:
            return f"the session holds its maximum of {self._config.max_session_mb:g} MB of images (max_session_mb)"
        return None

    def _warn_once(self, what: str, message: str, *args) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(message, *args)

    def _release(self, records) -> None:
        self._buffered -= sum(r.data.nbytes for r in records)

    def _store(self, put):
        """`put()` unless the session already stored its maximum; StoreFull with the reason otherwise."""
        if self._stored >= self._config.max_session_slices:
            raise StoreFull(f"the session stored its maximum of {self._config.max_session_slices} slices "
                            "(max_session_slices); not stored")
        result = put()
        self._stored += 1
        return result

    def _finish_cine(self, key: tuple[int, int]) -> list[ImageRecord]:
        """Store a complete cine slice, then make the VNE of waiting T1 slices it matches."""
        started = time.perf_counter()
        records = self._cine.pop(key)
        self._release(records.values())
        try:
            (cine,) = cine_slices(records.values())
            self._store(lambda: self._study.put_cine(cine))
        except (ValueError, StoreFull) as exc:
            self._report(SliceReport(key[1], False, str(exc), kind="cine"))
            return []
        c = self._config.criteria
        pending = [(k, a) for k, a, g in self._study.pending_t1()
                   if g.compare(cine.geometry).accepted(c.min_cosine, c.max_distance_mm)]
        out = []
        for t1_id, arrival in pending:
            claim = self._study.claim(t1_id, arrival)
            if claim is None:  # made, or being made, by another session: that arrival gets one VNE
                continue
            with claim:
                try:
                    t1, stored_arrival = self._study.t1(t1_id)
                except (BadEntry, FileNotFoundError) as exc:
                    log.warning("waiting T1 slice not read: %s", exc)
                    continue
                if stored_arrival == arrival:
                    out += self._make(claim, t1, started)
        return out

    def _complete_t1(self, final: bool) -> list[ImageRecord]:
        """Finish every T1 map whose IR images are all in (all maps when `final`), each on its own; then fit
        the maps of complete IR slices: with ``t1_maps=fit`` as they complete, with ``scanner`` at `final`
        when the connection brought no map at all."""
        expected = max(self.n_sets, MIN_IR_IMAGES)
        out = []
        for m in list(self._maps):
            mine = [r for r in self._ir if same_plane(m.geometry, r.geometry)]
            if final or (self.n_sets > 1 and len(mine) >= expected):
                self._maps.remove(m)
                self._ir = [r for r in self._ir if not any(r is x for x in mine)]
                self._release([m, *mine])
                try:
                    out += self._finish_t1(m, mine)
                except Exception as exc:  # one bad slice costs only itself
                    self._report(SliceReport(m.slice, False, f"internal error: {type(exc).__name__}: {exc}"))
                    log.debug("details", exc_info=True)
        mode = self._config.t1_maps
        fit_now = mode == "fit" or (mode != "off" and final and not self._map_seen)
        while self._ir and (fit_now or (mode == "off" and final and not self._map_seen)):
            mine = [r for r in self._ir if same_plane(self._ir[0].geometry, r.geometry)]
            if not final and not (self.n_sets > 1 and len(mine) >= expected):
                break  # IR images arrive slice by slice: the oldest slice is not complete yet
            self._ir = [r for r in self._ir if not any(r is x for x in mine)]
            self._release(mine)
            if mode == "off":
                self._report(SliceReport(mine[0].slice, False, "no T1 map from the scanner and fitting is off (t1_maps=off)"))
            else:
                out += self._fit_and_finish(mine)
        if final and self._ir:
            self._warn_once("orphan ir", "%d IR-weighted images without a T1 map on their plane: not used",
                            len(self._ir))
        return out

    def _fit_and_finish(self, ir: list[ImageRecord]) -> list[ImageRecord]:
        """Fit a slice's T1 map from its IR images (in the order sent), emit it, make its VNE."""
        started = time.perf_counter()
        c = self._config
        try:
            fitted = fit_slice(ir, c.t1_series_index, None if c.t1_scheme == "auto" else c.t1_scheme)
        except ValueError as exc:
            self._report(SliceReport(ir[0].slice, False, f"no T1 map and none could be fitted: {exc}"))
            return []
        log.info("T1 slice %d: no map from the scanner, fitted one in %.0f ms (%s)", ir[0].slice,
                 fitted.time_ms, fitted.fit.method)
        return [fitted.record, *self._finish_t1(fitted.record, ir, started, fitted.time_ms)]

    def _finish_t1(self, t1_map: ImageRecord, ir: list[ImageRecord], started: float | None = None,
                   t1_fit_ms: float | None = None) -> list[ImageRecord]:
        """Store a T1 slice as a new arrival and make its VNE here (this connection holds its claim)."""
        started = time.perf_counter() if started is None else started
        twin = next((m for m in self._finished_maps if same_plane(m.geometry, t1_map.geometry)), None)
        if twin is not None and not ir:  # vendors' map series may add a display map on the same plane
            self._report(SliceReport(t1_map.slice, False, f"second T1 map on the plane of T1 slice {twin.slice} "
                                     "(a display map): not used"))
            return []
        self._finished_maps.append(t1_map)
        try:
            (t1,) = t1_slices([t1_map], ir)
        except ValueError as exc:
            self._report(SliceReport(t1_map.slice, False, f"incomplete T1 slice: {exc}", t1_fit_ms=t1_fit_ms))
            return []
        if self._vne_off is not None:
            self._report(SliceReport(t1.slice, False, self._vne_off))
            return []
        try:
            with self._study.locked():
                t1_id, arrival = self._store(lambda: self._study.put_t1(t1))
                claim = self._study.claim(t1_id, arrival)
        except StoreFull as exc:
            self._report(SliceReport(t1.slice, False, str(exc)))
            return []
        if claim is None:  # a new arrival cannot be claimed elsewhere first; report it if it ever is
            self._report(SliceReport(t1.slice, False, "claimed by another session"))
            return []
        with claim:
            return self._make(claim, t1, started, t1_fit_ms)

    # ------------------------------------------------------------------ making one VNE
    def _make(self, claim: Claim, t1: T1Slice, started: float, t1_fit_ms: float | None = None) -> list[ImageRecord]:
        """Make the VNE of the claimed T1 slice; [] with a report line if it cannot be made. A cine file that
        cannot be read is quarantined and the next best cine slice is tried."""
        while True:
            match = find_match(t1.geometry, self._study.cine_geometries(), self._config.criteria)
            if isinstance(match, NoMatch) and not self._config.vne_without_cine:
                self._report(SliceReport(t1.slice, False, f"no cine match yet: {match.reason}", t1_fit_ms=t1_fit_ms))
                return []
            plane = None if isinstance(match, NoMatch) else match.plane
            try:
                cine = None if plane is None else self._cine_input(match.key, t1.geometry)
            except (BadEntry, FileNotFoundError) as exc:
                log.warning("cine slice for T1 slice %d not read (%s); trying the next", t1.slice, exc)
                continue
            except _Skip as exc:
                self._report(SliceReport(t1.slice, False, str(exc), *_plane_figures(plane), t1_fit_ms=t1_fit_ms))
                return []
            try:
                vne = self._infer(t1, cine)
            except Exception as exc:  # a skip reason, or an unexpected failure reported the same way
                if not isinstance(exc, _Skip):
                    log.debug("unexpected VNE failure", exc_info=True)
                reason = str(exc) if isinstance(exc, _Skip) else f"internal error: {type(exc).__name__}: {exc}"
                self._report(SliceReport(t1.slice, False, reason, *_plane_figures(plane), t1_fit_ms=t1_fit_ms))
                return []
            self._study.mark_made(claim)
            elapsed = 1000.0 * (time.perf_counter() - started)
            source = (f"from cine series {cine.key[0]} slice {cine.key[1]}" if cine is not None
                      else f"without cine ({match.reason})")
            qc = (f"; QC {vne.meta_str('VNE_QC')}: {vne.meta_str('VNE_QC_Reason')}"
                  if vne.meta_str("VNE_QC") != "pass" else "")
            if t1_fit_ms is not None:
                source += f"; T1 map fitted from the IR images in {t1_fit_ms:.0f} ms"
            self._report(SliceReport(t1.slice, True, source + qc, *_plane_figures(plane), elapsed, t1_fit_ms))
            return [vne]

    def _infer(self, t1: T1Slice, cine: _CineInput | None) -> ImageRecord:
        backend = self._core.backend()
        try:
            inputs = prepare_inputs(None, t1.ir, t1.ti_ms, t1.t1_ms, backend.config,
                                    ready_cine=None if cine is None else cine.frames)
        except ValueError as exc:
            raise _Skip(f"bad input: {exc}") from exc
        check = self._domain_check(t1, inputs, backend.config.domain)
        withhold = self._config.qc_withhold
        if withhold != "never" and STATUSES.index(check.status) >= STATUSES.index(withhold):
            raise _Skip(f"VNE withheld: QC {check.status}: {check.reason}")
        output = self._core.infer(inputs)
        notes = {"VNE_QC": check.status, "VNE_QC_Reason": check.reason, "VNE_Inputs": "IR+T1" if cine is None else "cine+IR+T1"}
        comment = (("no cine",) if cine is None else ()) + ((f"QC {check.status}: {check.reason}",) if check.status != "pass" else ())
        try:
            return vne_record(t1.map_record, output, self._config.vne_series_index, backend.config, notes, comment)
        except ValueError as exc:
            raise _Skip(f"model error: {exc}") from exc

    def _domain_check(self, t1: T1Slice, inputs: ModelInputs, domain_json: str):
        domain = _training_domain(domain_json) if domain_json else None
        stats = slice_statistics(t1.t1_ms, inputs.ir, t1.geometry.pixel_spacing)
        return check_domain(domain, self.field_t, len(t1.ti_ms), stats)

    def _report(self, report: SliceReport) -> None:
        self.reports.append(report)
        (log.info if report.made else log.warning)(report.line())

