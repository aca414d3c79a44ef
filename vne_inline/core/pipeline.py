"""The inline core: one :class:`InlineCore` per process, one :class:`Session` per connection (scan).

Every adapter (Gadgetron gadget, MRD server, offline replay) is a thin loop::

    core = InlineCore(CoreConfig.from_properties(props))
    session = core.open_session(header_xml)
    for record in images:
        send(session.feed(record))     # the input itself first (unchanged), then any VNE made
    send(session.close())              # VNE of slices completed at close

Per image: classify (:mod:`core.roles`); cine frames are buffered per slice until all announced
phases are in (else until close) and then written to the per-study store; a T1 slice is complete
when its map and its IR images are in (the header's announced ``set`` count, else at close), is
written to the store and gets its VNE: closest cine slice in the store (:func:`find_match`),
resampled onto the T1 grid, normalised, inferred, emitted. A cine slice that completes later (on
a later connection) makes the VNE of every still pending T1 slice it matches. Each T1 slice gets at
most one VNE per study. With ``vne_without_cine`` a T1 slice that no stored cine matches gets its VNE
from the IR images and the map alone, at once (tagged ``VNE_Inputs=IR+T1``). Every VNE carries the
input-domain check (:mod:`core.domain`: ``VNE_QC`` pass/warn/fail, ``VNE_QC_Reason``); a VNE whose
check is at or above ``qc_withhold`` is withheld with that reason. A slice that cannot be made is logged once with the reason and reported in
:attr:`Session.reports`; inputs always pass through and nothing raises out of ``feed``/``close``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vne_inline.core.domain import STATUSES, DomainCheck, TrainingDomain, check_domain, slice_statistics
from vne_inline.core.emit import vne_record
from vne_inline.core.match import MatchCriteria, NoMatch, find_match, resample_onto
from vne_inline.core.normalise import MIN_IR_IMAGES, ModelInputs, prepare_inputs
from vne_inline.core.roles import Role, RoleRules, classify
from vne_inline.core.slices import CineSlice, T1Slice, cine_slices, same_plane, t1_slices
from vne_inline.core.store import SliceStore, StudyStore, default_store_dir
from vne_inline.geometry import PlaneMatch
from vne_inline.io.header import ExamHeader, parse_header
from vne_inline.io.records import ImageRecord

__all__ = ["CoreConfig", "InlineCore", "Session", "SliceReport", "DEFAULT_VNE_SERIES", "PROPERTIES"]

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


#: Property name -> parser of its text value (ValueError on a bad value).
PROPERTIES = {
    "store_dir": Path, "expiry_h": _positive_float, "vne_series_index": _int_in(0, 65535),
    "backend": _backend_name, "model": Path, "threads": _int_in(1, 1024), "precision": _precision,
    "series_roles": str, "role_patterns": str, "min_cine_phases": _int_in(1, 10000),
    "min_cosine": _cosine, "max_distance_mm": _positive_float,
    "vne_without_cine": _flag, "qc_withhold": _withhold,
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

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> CoreConfig:
        """From string properties (Gadgetron ``<property>`` elements, MRD JSON parameters).

        Keys: ``store_dir``, ``expiry_h``, ``vne_series_index``, ``backend``, ``model``, ``threads``, ``precision``,
        ``series_roles`` (``"5=cine,7=ir"``), ``role_patterns`` (``"regex=role;..."``),
        ``min_cine_phases``, ``min_cosine``, ``max_distance_mm``, ``vne_without_cine`` (true/false),
        ``qc_withhold`` (warn, fail, never). Empty values keep the default.
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
    """What happened to one T1 slice: VNE made or not and why; the cine match; time to VNE (ms)."""

    slice: int
    made: bool
    reason: str
    cine_distance_mm: float | None = None
    cine_cosine: float | None = None
    time_ms: float | None = None

    def line(self) -> str:
        """One log line (no patient data)."""
        match = "" if self.cine_cosine is None else f" [cine {self.cine_distance_mm:.1f} mm, cos {self.cine_cosine:.3f}]"
        timing = "" if self.time_ms is None else f" [{self.time_ms:.0f} ms]"
        return f"T1 slice {self.slice}: {'VNE made' if self.made else 'no VNE'}: {self.reason}{match}{timing}"


class _Skip(Exception):
    """A VNE cannot be made; the message is the one-line reason."""


@dataclass(frozen=True)
class _Job:
    """A T1 slice claimed for VNE: its cine match (None without cine) and where the cine came from, the
    model inputs and their domain check, and when its last image came in."""

    t1_id: str
    t1: T1Slice
    cine: CineSlice | None
    plane: PlaneMatch | None
    source: str
    inputs: ModelInputs
    check: DomainCheck
    started: float


def _plane_figures(plane) -> tuple[float | None, float | None]:
    """(distance mm, cosine) of a cine match, or (None, None) without one."""
    return (None, None) if plane is None else (plane.distance_mm, plane.cosine)


# ---------------------------------------------------------------------------- the core
class InlineCore:
    """Shared per process: configuration, store, and the backend (loaded lazily once, unless injected).
    Several sessions may run in threads at once; inference is serialised by a lock."""

    def __init__(self, config: CoreConfig | None = None, backend=None) -> None:
        self.config = config or CoreConfig()
        self.store = SliceStore(self.config.store_dir, self.config.expiry_h)
        self._backend = backend
        self._backend_error: str | None = None
        self._load_lock = threading.Lock()
        self._infer_lock = threading.Lock()

    def open_session(self, header_xml: str | bytes | None) -> Session:
        """A session for one connection; purges expired store entries first."""
        self.store.purge()
        return Session(self, header_xml)

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

    def infer_batch(self, inputs: list[ModelInputs]) -> list[np.ndarray]:
        """The network outputs (H, W) of slices ready at once, run as one batch (:func:`predict`);
        raises _Skip('model error: ...') on failure."""
        from vne_inline.infer import predict

        backend = self.backend()
        with self._infer_lock:
            try:
                return predict(backend, inputs)
            except Exception as exc:  # any backend failure is a per-slice skip, never a crash
                raise _Skip(f"model error: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------- one connection
class Session:
    """One connection: feeds images in, returns them (plus any VNE) out. Not shared between threads."""

    def __init__(self, core: InlineCore, header_xml: str | bytes | None) -> None:
        self._core = core
        self._config = core.config
        try:
            header = parse_header(header_xml)
        except ValueError:  # the parser's message may quote header content: not logged
            log.warning("session header is missing or not valid ISMRMRD XML; using defaults")
            header = ExamHeader()
        key = header.study_key
        self._ephemeral = key is None
        if key is None:
            key = f"session-{uuid.uuid4().hex}"
            log.warning("header has no StudyInstanceUID or FrameOfReferenceUID: cine and T1 mapping on "
                        "different connections cannot be matched (per-session store)")
        self._study: StudyStore = core.store.study(key)
        self.n_phases = header.n_phases
        self.n_sets = header.n_sets
        self.field_t = header.field_strength_t
        self._cine: dict[tuple[int, int], dict[int, ImageRecord]] = {}
        self._maps: list[ImageRecord] = []
        self._ir: list[ImageRecord] = []
        self.reports: list[SliceReport] = []

    # ------------------------------------------------------------------ public
    def feed(self, record: ImageRecord) -> list[ImageRecord]:
        """The input itself (unchanged) first, then any VNE images it completed."""
        out = [record]
        try:
            out += self._route(record)
        except Exception:  # never break the image stream; the traceback names code, not data
            log.exception("image (series %d, slice %d) not processed for VNE", record.series_index, record.slice)
        return out

    def close(self) -> list[ImageRecord]:
        """VNE images of the slices that complete at the end of the connection."""
        out: list[ImageRecord] = []
        try:
            for key in list(self._cine):
                out += self._finish_cine(key)
            out += self._complete_t1(final=True)
        except Exception:
            log.exception("session close failed for VNE")
        finally:
            if self._ephemeral:
                self._study.remove()
        return out

    # ------------------------------------------------------------------ routing
    def _route(self, record: ImageRecord) -> list[ImageRecord]:
        role = classify(record, self._config.rules, self.n_phases)
        if role is Role.CINE:
            key = (record.series_index, record.slice)
            self._cine.setdefault(key, {})[record.phase] = record
            if self.n_phases > 1 and len(self._cine[key]) >= self.n_phases:
                return self._finish_cine(key)
        elif role is Role.IR:
            self._ir.append(record)
            return self._complete_t1(final=False)
        elif role is Role.T1MAP:
            self._maps.append(record)
            return self._complete_t1(final=False)
        return []

    def _finish_cine(self, key: tuple[int, int]) -> list[ImageRecord]:
        """Store a complete cine slice, then make the VNE of pending T1 slices it matches."""
        started = time.perf_counter()
        records = self._cine.pop(key)
        try:
            (cine,) = cine_slices(records.values())
        except ValueError as exc:
            log.warning("cine slice %d not stored: %s", key[1], exc)
            return []
        c = self._config.criteria
        with self._study.locked():
            self._study.put_cine(cine)
            pending = [k for k, g in self._study.pending_t1()
                       if g.compare(cine.geometry).accepted(c.min_cosine, c.max_distance_mm)]
        return self._make([(t1_id, None, started) for t1_id in pending])

    def _complete_t1(self, final: bool) -> list[ImageRecord]:
        """Finish every T1 map whose IR images are all in (all maps when `final`); the slices that
        complete together run as one batch."""
        expected = max(self.n_sets, MIN_IR_IMAGES)
        ready = []
        for m in list(self._maps):
            mine = [r for r in self._ir if same_plane(m.geometry, r.geometry)]
            if final or (self.n_sets > 1 and len(mine) >= expected):
                self._maps.remove(m)
                self._ir = [r for r in self._ir if not any(r is x for x in mine)]
                ready += self._finish_t1(m, mine)
        return self._make(ready)

    def _finish_t1(self, t1_map: ImageRecord, ir: list[ImageRecord]) -> list[tuple[str, T1Slice, float]]:
        started = time.perf_counter()
        try:
            (t1,) = t1_slices([t1_map], ir)
        except ValueError as exc:
            self._report(SliceReport(t1_map.slice, False, f"incomplete T1 slice: {exc}"))
            return []
        return [(self._study.put_t1(t1), t1, started)]

    # ------------------------------------------------------------------ making VNE
    def _make(self, ready: list[tuple[str, T1Slice | None, float]]) -> list[ImageRecord]:
        """Make the VNE of the T1 slices ready at once, (id, slice or None to load it, start time)
        each: every slice is claimed, matched and prepared, then all run as one batch; [] for a slice
        made elsewhere or that cannot be made."""
        jobs = [job for item in ready if (job := self._prepare(*item)) is not None]
        if not jobs:
            return []
        try:
            outputs = self._core.infer_batch([job.inputs for job in jobs])
        except _Skip as exc:
            for job in jobs:
                self._fail(job.t1_id, job.t1, job.plane, exc)
            return []
        return [vne for job, output in zip(jobs, outputs, strict=True) for vne in self._emit(job, output)]

    def _prepare(self, t1_id: str, t1: T1Slice | None, started: float) -> _Job | None:
        """Claim T1 slice `t1_id`, match its cine and prepare the model inputs; None (reported) if not."""
        with self._study.locked():
            if not self._study.claim_vne(t1_id):
                return None
            if t1 is None:
                t1 = self._study.t1(t1_id)
            match = find_match(t1.geometry, self._study.cine_geometries(), self._config.criteria)
            if isinstance(match, NoMatch) and not self._config.vne_without_cine:
                self._study.release_vne(t1_id)
                self._report(SliceReport(t1.slice, False, f"no cine match yet: {match.reason}"))
                return None
        plane = None if isinstance(match, NoMatch) else match.plane
        try:
            cine = None if plane is None else self._study.cine(match.key)
            source = (f"from cine series {cine.key[0]} slice {cine.key[1]}" if cine is not None
                      else f"without cine ({match.reason})")
            return _Job(t1_id, t1, cine, plane, source, *self._inputs(t1, cine), started)
        except Exception as exc:  # a skip reason, or an unexpected failure reported the same way
            self._fail(t1_id, t1, plane, exc)
            return None

    def _inputs(self, t1: T1Slice, cine: CineSlice | None) -> tuple[ModelInputs, DomainCheck]:
        """The model inputs and their domain check; raises _Skip when unusable or withheld by QC."""
        try:
            cine_on_t1 = None if cine is None else resample_onto(t1.geometry, cine.frames, cine.geometry).data
        except ValueError as exc:
            raise _Skip(f"cine not usable: {exc}") from exc
        backend = self._core.backend()
        try:
            inputs = prepare_inputs(cine_on_t1, t1.ir, t1.ti_ms, t1.t1_ms, backend.config)
        except ValueError as exc:
            raise _Skip(f"bad input: {exc}") from exc
        check = self._domain_check(t1, inputs, backend.config.domain)
        withhold = self._config.qc_withhold
        if withhold != "never" and STATUSES.index(check.status) >= STATUSES.index(withhold):
            raise _Skip(f"VNE withheld: QC {check.status}: {check.reason}")
        return inputs, check

    def _emit(self, job: _Job, output: np.ndarray) -> list[ImageRecord]:
        check, no_cine = job.check, job.cine is None
        notes = {"VNE_QC": check.status, "VNE_QC_Reason": check.reason, "VNE_Inputs": "IR+T1" if no_cine else "cine+IR+T1"}
        comment = (("no cine",) if no_cine else ()) + ((f"QC {check.status}: {check.reason}",) if check.status != "pass" else ())
        try:
            vne = vne_record(job.t1.map_record, output, self._config.vne_series_index, self._core.backend().config,
                             notes, comment)
        except Exception as exc:
            self._fail(job.t1_id, job.t1, job.plane, _Skip(f"model error: {exc}") if isinstance(exc, ValueError) else exc)
            return []
        self._study.mark_vne_made(job.t1_id)
        elapsed = 1000.0 * (time.perf_counter() - job.started)
        qc = f"; QC {vne.meta_str('VNE_QC')}: {vne.meta_str('VNE_QC_Reason')}" if vne.meta_str("VNE_QC") != "pass" else ""
        self._report(SliceReport(job.t1.slice, True, job.source + qc, *_plane_figures(job.plane), elapsed))
        return [vne]

    def _fail(self, t1_id: str, t1: T1Slice, plane: PlaneMatch | None, exc: Exception) -> None:
        self._study.release_vne(t1_id)
        if not isinstance(exc, _Skip):
            log.debug("unexpected VNE failure", exc_info=exc)
        reason = str(exc) if isinstance(exc, _Skip) else f"internal error: {type(exc).__name__}: {exc}"
        self._report(SliceReport(t1.slice, False, reason, *_plane_figures(plane)))

    def _domain_check(self, t1: T1Slice, inputs: ModelInputs, domain_json: str):
        domain = TrainingDomain.from_json(domain_json) if domain_json else None
        stats = slice_statistics(t1.t1_ms, inputs.ir, t1.geometry.pixel_spacing)
        return check_domain(domain, self.field_t, len(t1.ti_ms), stats)

    def _report(self, report: SliceReport) -> None:
        self.reports.append(report)
        (log.info if report.made else log.warning)(report.line())

