"""The inline core end to end with small hand-built exams and a fake backend (no model file needed).

`exam()` builds one study: a cine scan (3 slices, 10 phases) and a T1-mapping scan (2 slices, map +
5 IR images each) on different grids, each with its own ISMRMRD header, as two connections would see
them. Other test modules import these builders.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from vne_inline.core.match import MatchCriteria
from vne_inline.core.pipeline import CoreConfig, InlineCore, SliceReport
from vne_inline.core.roles import Role
from vne_inline.core.store import StudyStore
from vne_inline.geometry import SliceGeometry, plane_from_normal
from vne_inline.io import ExamHeader, ImageRecord, make_header_xml
from vne_inline.io.header import parse_header
from vne_inline.modelspec import ModelConfig

STUDY_UID = "2.25.31415926535"
PATIENT_ID = "SYNTH-PATIENT-0042"
NORMAL = np.array([0.3, -0.4, 0.87])
TIS = [100.0, 180.0, 260.0, 1100.0, 2100.0]
T1_OFFSETS_MM = (0.0, 8.0)
CINE_OFFSETS_MM = (-7.0, 1.0, 9.0)
N_PHASES = 10
VNE_SERIES = 99


# ---------------------------------------------------------------------------- builders
def t1_geometry(offset_mm: float) -> SliceGeometry:
    return plane_from_normal(np.array([5.0, -10.0, 20.0]) + offset_mm * NORMAL / np.linalg.norm(NORMAL), NORMAL,
                             (200.0, 160.0, 8.0), (50, 40), 10.0)


def cine_geometry(offset_mm: float) -> SliceGeometry:
    return plane_from_normal(np.array([6.0, -9.0, 20.0]) + offset_mm * NORMAL / np.linalg.norm(NORMAL), NORMAL,
                             (260.0, 260.0, 8.0), (36, 36), 4.0)


def _disc(g: SliceGeometry, inside: float, outside: float) -> np.ndarray:
    r = np.linalg.norm(g.pixel_centres() - g.position, axis=-1)
    return np.where(r < 40.0, inside, outside).astype(np.float32)


def cine_records(offsets=CINE_OFFSETS_MM, phases=N_PHASES) -> list[ImageRecord]:
    out = []
    for s, off in enumerate(offsets):
        g = cine_geometry(off)
        for p in range(phases):
            img = _disc(g, 800.0 + 20 * p, 300.0).astype(np.uint16)
            out.append(ImageRecord.new(img, g, {"GADGETRON_DataRole": "Image"}, image_series_index=1, slice=s, phase=p))
    return out


def t1_records(offsets=T1_OFFSETS_MM) -> list[ImageRecord]:
    """Per slice: the IR images (series 2), then the map (series 3), as Gadgetron sends them."""
    out = []
    for s, off in enumerate(offsets):
        g = t1_geometry(off)
        t1 = _disc(g, 1500.0, 960.0)
        for k, ti in enumerate(TIS):
            ir = np.abs(1 - 2 * np.exp(-ti / t1)) * 1000
            out.append(ImageRecord.new(ir.astype(np.uint16), g, {"GADGETRON_TI": f"{ti:g}"},
                                       image_series_index=2, slice=s, set=k))
        out.append(ImageRecord.new(t1, g, {"GADGETRON_DataRole": "T1", "GADGETRON_SeqDescription": "ShMOLLI_T1MAP",
                                           "GADGETRON_ImageProcessingHistory": ["GT", "T1MAP"]},
                                   image_series_index=3, slice=s))
    return out


def header(n_phases: int = 1, n_sets: int = 1, uid: str | None = STUDY_UID) -> str:
    return make_header_xml(ExamHeader(study_uid=uid), PATIENT_ID, (50, 40), (200.0, 160.0, 8.0),
                           n_phases=n_phases, n_sets=n_sets)


CINE_HEADER = header(n_phases=N_PHASES)
T1_HEADER = header(n_sets=len(TIS))


@dataclass
class FakeBackend:
    """Stands in for an inference backend: output = the T1 input (normalised), or an error."""

    config: ModelConfig = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, name="fake-test")
    name: str = "fake"
    detail: str = "fake backend for tests"
    fail: bool = False
    calls: int = 0

    def run(self, batch):
        self.calls += 1
        if self.fail:
            raise RuntimeError("simulated backend failure")
        return batch["t1"].copy()


def make_core(tmp_path: Path, backend=None, **overrides) -> InlineCore:
    config = replace(CoreConfig(), store_dir=tmp_path / "store", **overrides)
    return InlineCore(config, backend=FakeBackend() if backend is None else backend)


def run_connection(core: InlineCore, header_xml, records):
    """Feed one connection; returns (outputs in order, session)."""
    session = core.open_session(header_xml)
    out = []
    for r in records:
        out += session.feed(r)
    out += session.close()
    return out, session


def vnes(records) -> list[ImageRecord]:
    return [r for r in records if r.series_index == VNE_SERIES]


def inputs_in_order(out, records) -> bool:
    """Every input came back, unchanged (same object), in its order."""
    return [r for r in out if r.series_index != VNE_SERIES] == records and all(
        a is b for a, b in zip([r for r in out if r.series_index != VNE_SERIES], records, strict=True))


# ---------------------------------------------------------------------------- behaviour
def test_cine_then_t1_gives_one_vne_per_t1_slice_right_after_its_map(tmp_path):
    core = make_core(tmp_path)
    cine = cine_records()
    out, s1 = run_connection(core, CINE_HEADER, cine)
    assert inputs_in_order(out, cine) and not vnes(out) and s1.reports == []
    t1 = t1_records()
    out, s2 = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1)
    made = vnes(out)
    assert [v.slice for v in made] == [0, 1]
    # each VNE follows its T1 map immediately (made while feeding, not at close)
    maps = [i for i, r in enumerate(out) if r.series_index == 3]
    assert [out[i + 1].series_index for i in maps] == [VNE_SERIES, VNE_SERIES]
    assert [r.made for r in s2.reports] == [True, True]
    assert all(r.cine_distance_mm < 4 and r.cine_cosine > 0.9 and r.time_ms >= 0 for r in s2.reports)
    for v, m in zip(made, [r for r in t1 if r.series_index == 3], strict=True):
        assert v.geometry.compare(m.geometry).distance_mm == pytest.approx(0, abs=1e-4)
        assert v.pixels.shape == m.pixels.shape and v.pixels.dtype == np.float32
        assert v.meta["GADGETRON_DataRole"] == "VNE"


def test_t1_then_cine_emits_vne_on_the_cine_connection(tmp_path, caplog):
    core = make_core(tmp_path)
    t1 = t1_records()
    caplog.set_level(logging.INFO, logger="vne_inline")
    out, s1 = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    assert [r.made for r in s1.reports] == [False, False]
    assert all("no cine match" in r.reason for r in s1.reports)
    cine = cine_records()
    out, s2 = run_connection(core, CINE_HEADER, cine)
    assert inputs_in_order(out, cine)
    assert sorted(v.slice for v in vnes(out)) == [0, 1]
    # made as soon as the matching cine slice had all its phases, i.e. before close
    last_phase = [i for i, r in enumerate(out) if r.series_index == 1 and r.phase == N_PHASES - 1]
    assert out[last_phase[1] + 1].series_index == VNE_SERIES
    assert [r.made for r in s2.reports] == [True, True]
    # the cine sent again makes no second VNE of the same T1 arrival
    out, s3 = run_connection(core, CINE_HEADER, cine_records())
    assert not vnes(out) and s3.reports == []


def test_a_resent_or_repeated_t1_scan_gets_its_vne_on_its_own_connection(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    first, _ = run_connection(core, T1_HEADER, t1_records())
    again, s2 = run_connection(core, T1_HEADER, t1_records())  # the same series re-sent
    assert sorted(v.slice for v in vnes(first)) == sorted(v.slice for v in vnes(again)) == [0, 1]
    assert [r.made for r in s2.reports] == [True, True]
    repeat = t1_records()  # a repeated breath-hold: same planes, new data
    for r in repeat:
        r.data[...] = r.data * 1.1
    out, _ = run_connection(core, T1_HEADER, repeat)
    assert len(vnes(out)) == 2
    np.testing.assert_allclose(vnes(out)[0].data, 1.1 * vnes(first)[0].data, rtol=1e-5)  # made from the new data
    # a later cine of the same planes makes none of them again: each arrival has had its VNE
    out, s4 = run_connection(core, CINE_HEADER, cine_records())
    assert not vnes(out) and s4.reports == []


@dataclass
class CineRecordingBackend(FakeBackend):
    """The fake backend, keeping the cine input of every run."""

    cines: list = None

    def run(self, batch):
        self.cines = (self.cines or []) + [batch["cine"].copy()]
        return super().run(batch)


def _cine_work_per_image(core, records, monkeypatch):
    """Feed one T1 connection; the number of cine resamplings done in each feed call."""
    import vne_inline.core.pipeline as pipeline

    calls = []
    original = pipeline.resample_onto
    monkeypatch.setattr(pipeline, "resample_onto", lambda *a, **k: calls.append(1) or original(*a, **k))
    session = core.open_session(T1_HEADER)
    per_image = []
    for r in records:
        before = len(calls)
        session.feed(r)
        per_image.append(len(calls) - before)
    session.close()
    return per_image


def test_the_cine_input_is_made_at_the_first_image_of_a_t1_slice(tmp_path, monkeypatch):
    backend = CineRecordingBackend()
    core = make_core(tmp_path, backend=backend)
    run_connection(core, CINE_HEADER, cine_records())
    t1 = t1_records()
    per_image = _cine_work_per_image(core, t1, monkeypatch)
    first = [i for i, r in enumerate(t1) if r.set == 0 and r.series_index == 2]
    assert [i for i, n in enumerate(per_image) if n] == first  # nothing left to do when the map comes
    assert len(backend.cines) == 2
    # the same cine input as when the cine comes after the T1 scan (made then, with no head start)
    late = CineRecordingBackend()
    core = make_core(tmp_path / "late", backend=late)
    run_connection(core, T1_HEADER, t1_records())
    run_connection(core, CINE_HEADER, cine_records())
    for a, b in zip(backend.cines, late.cines, strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.ptp(a) > 0


def test_a_cine_stored_again_after_the_first_t1_image_is_the_one_used(tmp_path):
    backend = CineRecordingBackend()
    core = make_core(tmp_path, backend=backend)
    run_connection(core, CINE_HEADER, cine_records())
    t1 = t1_records()
    session = core.open_session(T1_HEADER)
    session.feed(t1[0])  # the cine input of slice 0 is made from the first cine
    changed = [replace(r, data=np.where(r.data > 500, r.data, r.data * 2)) for r in cine_records()]
    run_connection(core, CINE_HEADER, changed)  # another connection stores new cine data, same slices
    for r in t1[1:]:
        session.feed(r)
    session.close()
    fresh = CineRecordingBackend()
    core = make_core(tmp_path / "fresh", backend=fresh)
    run_connection(core, CINE_HEADER, changed)
    run_connection(core, T1_HEADER, t1_records())
    np.testing.assert_array_equal(backend.cines[0], fresh.cines[0])
    first = CineRecordingBackend()
    core = make_core(tmp_path / "first", backend=first)
    run_connection(core, CINE_HEADER, cine_records())
    run_connection(core, T1_HEADER, t1_records())
    assert not np.array_equal(backend.cines[0], first.cines[0])  # the new data give another input


def test_missing_cine_passes_everything_and_logs_one_line_per_slice(tmp_path, caplog):
    core = make_core(tmp_path)
    t1 = t1_records()
    caplog.set_level(logging.INFO, logger="vne_inline")
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    lines = [r.getMessage() for r in caplog.records if "T1 slice" in r.getMessage()]
    assert len(lines) == 2 and all("no VNE: no cine match yet" in line for line in lines)
    assert not any(PATIENT_ID in r.getMessage() or STUDY_UID in r.getMessage() for r in caplog.records)


def test_nan_cine_and_all_nan_t1_map_are_skipped_with_reason(tmp_path):
    core = make_core(tmp_path)
    cine = cine_records()
    for r in cine:
        if r.slice == 1 and r.phase == 3:
            r.data = r.data.astype(np.float32)
            r.data[0, 0, 5, 5] = np.nan
    run_connection(core, CINE_HEADER, cine)
    t1 = t1_records()
    t1[len(TIS) * 2 + 1].data[:] = np.nan  # the second slice's map
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    reasons = {r.slice: r.reason for r in session.reports}
    assert "cine not usable" in reasons[0] and "NaN" in reasons[0]
    assert "bad input" in reasons[1] and "NaN" in reasons[1]


def test_wrong_shapes_are_skipped_with_reason(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    t1 = t1_records()
    bad_map = t1[len(TIS)]  # slice 0's map: data one column short of its header's matrix
    bad_map.data = np.ascontiguousarray(bad_map.data[..., :-1])
    small = plane_from_normal(t1_geometry(T1_OFFSETS_MM[1]).position, NORMAL, (90.0, 90.0, 8.0), (30, 30))
    for i in range(len(TIS) + 1, 2 * len(TIS) - 1):  # slice 1: three of its IR images on another grid
        t1[i] = ImageRecord.new(np.zeros((30, 30), np.uint16), small, dict(t1[i].meta),
                                image_series_index=2, slice=1, set=t1[i].set)
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    reasons = {r.slice: r.reason for r in session.reports}
    assert reasons[0] == "data of shape (1, 1, 40, 49) does not match its 50 x 40 header matrix"
    assert "incomplete T1 slice" in reasons[1] and "2 IR-weighted" in reasons[1]


def test_model_error_passes_inputs_and_a_later_cine_may_retry(tmp_path):
    backend = FakeBackend(fail=True)
    core = make_core(tmp_path, backend=backend)
    run_connection(core, CINE_HEADER, cine_records())
    t1 = t1_records()
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    assert all(not r.made and r.reason.startswith("model error: RuntimeError") for r in session.reports)
    backend.fail = False
    out, session = run_connection(core, CINE_HEADER, cine_records())
    assert len(vnes(out)) == 2


def test_unexpected_failure_is_reported_not_raised(tmp_path, monkeypatch):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())

    def broken(self, key):
        raise OSError("store unreadable")

    monkeypatch.setattr(StudyStore, "cine", broken)
    t1 = t1_records()
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    assert [r.reason for r in session.reports] == ["internal error: OSError: store unreadable"] * 2
    monkeypatch.undo()
    assert len(vnes(run_connection(core, T1_HEADER, t1_records())[0])) == 2  # the claims were given back


def test_backend_unavailable_is_a_reason_not_a_crash(tmp_path):
    config = replace(CoreConfig(), store_dir=tmp_path / "store", backend="onnxruntime", model=tmp_path / "none.onnx")
    core = InlineCore(config)
    run_connection(core, CINE_HEADER, cine_records())
    t1 = t1_records()
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    assert all(r.reason.startswith("backend unavailable") for r in session.reports) and len(session.reports) == 2


def test_vne_and_other_images_pass_through_unclassified(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    made = vnes(run_connection(core, T1_HEADER, t1_records())[0])
    lge = ImageRecord.new(np.ones((40, 50), np.float32), t1_geometry(0), {"GADGETRON_DataRole": "PSIR"},
                          image_series_index=4, image_type=ismrmrd.IMTYPE_REAL)
    out, session = run_connection(make_core(tmp_path / "other"), T1_HEADER, made + [lge])
    assert all(a is b for a, b in zip(out, made + [lge], strict=True)) and session.reports == []


def test_without_announced_sets_t1_slices_complete_at_close(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    session = core.open_session(header(n_sets=1))
    fed = [v for r in t1_records() for v in session.feed(r)]
    assert not vnes(fed)
    assert [v.slice for v in vnes(session.close())] == [0, 1]


def test_header_without_uid_works_within_one_connection_only(tmp_path, caplog):
    core = make_core(tmp_path)
    caplog.set_level(logging.WARNING, logger="vne_inline")
    no_uid = header(n_phases=N_PHASES, n_sets=len(TIS), uid=None)
    out, _ = run_connection(core, no_uid, cine_records() + t1_records())
    assert len(vnes(out)) == 2
    assert any("cannot be matched" in r.getMessage() for r in caplog.records)
    assert list((tmp_path / "store").iterdir()) == []  # the per-session store is gone
    out, session = run_connection(core, None, t1_records())  # no header at all: still passes through
    assert not vnes(out) and len(out) == len(t1_records())


def test_sessions_in_threads_share_one_core(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    results = {}

    def connection(i):
        uid = f"2.25.{i}"
        results[i] = run_connection(core, header(n_phases=N_PHASES, n_sets=len(TIS), uid=uid),
                                    cine_records() + t1_records())[0]

    threads = [threading.Thread(target=connection, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(vnes(results[i])) for i in range(4)] == [2, 2, 2, 2]


# ---------------------------------------------------------------------------- configuration
def test_config_from_properties():
    c = CoreConfig.from_properties({
        "store_dir": "/tmp/x", "expiry_h": "2.5", "vne_series_index": "120", "backend": "onnxruntime",
        "model": "", "threads": "2", "series_roles": "5=cine,7=ir", "min_cosine": "0.95", "max_distance_mm": "3",
        "min_cine_phases": "12",
    })
    assert c.store_dir == Path("/tmp/x") and c.expiry_h == 2.5 and c.vne_series_index == 120
    assert c.backend == "onnxruntime" and c.model is None and c.threads == 2
    assert c.criteria == MatchCriteria(0.95, 3.0) and c.rules.min_cine_phases == 12
    assert dict(c.rules.series_roles) == {5: Role.CINE, 7: Role.IR}
    assert CoreConfig.from_properties({}) == CoreConfig()


@pytest.mark.parametrize("props, message", [
    ({"expiry_h": "-1"}, "expiry_h"),
    ({"vne_series_index": "70000"}, "vne_series_index"),
    ({"threads": "two"}, "threads"),
    ({"min_cosine": "1.5"}, "min_cosine"),
    ({"series_roles": "5=banana"}, "series map"),
    ({"bogus": "1"}, "unknown VNE properties"),
    ({"backend": "cuda"}, "backend='cuda': choose from auto"),
])
def test_config_rejects_bad_properties(props, message):
    with pytest.raises(ValueError, match=message):
        CoreConfig.from_properties(props)


def test_announced_sets_and_report_line():
    assert parse_header(T1_HEADER).n_sets == len(TIS) and parse_header(T1_HEADER).n_phases == 1
    assert ExamHeader().n_sets == 1  # what a session uses for a missing or garbage header
    line = SliceReport(2, True, "from cine series 1 slice 4", 1.04, 0.999, 12.3).line()
    assert line == "T1 slice 2: VNE made: from cine series 1 slice 4 [cine 1.0 mm, cos 0.999] [12 ms]"
    assert SliceReport(0, False, "no cine match: none").line() == "T1 slice 0: no VNE: no cine match: none"

