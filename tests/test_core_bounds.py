"""What a bad slice, a damaged store or a hostile image costs the inline core: only itself.

Bounded work and memory per image, session and study; store files that heal (quarantine, claims that die
with their process); no patient identifiers at rest; no symbolic link followed; no world-writable store.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import replace

import numpy as np
import pytest
from test_pipeline import (
    CINE_HEADER,
    PATIENT_ID,
    STUDY_UID,
    T1_HEADER,
    TIS,
    FakeBackend,
    cine_records,
    header,
    inputs_in_order,
    make_core,
    run_connection,
    t1_geometry,
    t1_records,
    vnes,
)

from vne_inline.core.phi import strip_identifiers
from vne_inline.core.pipeline import CoreConfig
from vne_inline.core.roles import MATCH_CHARS, Role, RoleRules, classify
from vne_inline.core.store import QUARANTINE, SliceStore
from vne_inline.io import ImageRecord, study_key

KEY = study_key(T1_HEADER)
PHI = {"PatientName": "DOE^JANE", "PatientID": PATIENT_ID, "PatientBirthDate": "19700101",
       "AccessionNumber": "ACC-778899", "GADGETRON_PatientName": "DOE^JANE"}


def _store_files(tmp_path):
    return [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


# ---------------------------------------------------------------------------- one slice costs only itself
def test_a_t1_map_with_nan_position_costs_only_its_slice(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records(offsets=(-7.0, 1.0, 9.0, 17.0)))
    t1 = t1_records(offsets=(0.0, 8.0, 16.0))
    bad = [r for r in t1 if r.series_index == 3][1]
    bad.head.position[0] = float("nan")
    out, session = run_connection(core, header(n_sets=len(TIS)), t1)
    assert inputs_in_order(out, t1)
    assert sorted(v.slice for v in vnes(out)) == [0, 2]
    reasons = {r.slice: r.reason for r in session.reports if not r.made}
    assert list(reasons) == [1] and reasons[1].startswith("bad geometry")


def test_an_unreadable_store_file_is_quarantined_and_costs_only_its_slice(tmp_path, caplog):
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    study = tmp_path / "store" / KEY
    victim = sorted(study.glob("cine-1-1-*.npz"))[0]  # the cine slice of T1 slice 0
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    caplog.set_level(logging.WARNING, logger="vne_inline")
    out, session = run_connection(core, T1_HEADER, t1_records())
    assert [v.slice for v in vnes(out)] == [1]
    (report,) = [r for r in session.reports if not r.made]
    assert report.slice == 0 and "no cine match" in report.reason
    quarantined = list((tmp_path / "store" / QUARANTINE).iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.endswith(victim.name) and not victim.exists()
    assert len([r for r in caplog.records if victim.name in r.getMessage()]) == 1


def test_an_unreadable_waiting_t1_file_costs_only_its_slice(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, T1_HEADER, t1_records())  # no cine yet: both slices wait in the store
    victim = sorted((tmp_path / "store" / KEY).glob("t1-*.npz"))[0]
    victim.write_bytes(b"PK\x03\x04 not a whole zip file")
    out, _ = run_connection(core, CINE_HEADER, cine_records())
    assert len(vnes(out)) == 1
    assert len(list((tmp_path / "store" / QUARANTINE).iterdir())) == 1


# ---------------------------------------------------------------------------- claims
def test_a_claim_left_by_a_dead_process_does_not_block_the_vne(tmp_path):
    """A session killed mid-inference leaves its claim file; the lock in it died with the process."""
    core = make_core(tmp_path)
    run_connection(core, T1_HEADER, t1_records())
    study = core.store.study(KEY)
    for t1_id, arrival, _ in study.pending_t1():  # the crashed process's leftovers
        (study.path / f"claim-{t1_id}-{arrival}.lock").write_bytes(b"")
    out, session = run_connection(core, CINE_HEADER, cine_records())
    assert len(vnes(out)) == 2 and all(r.made for r in session.reports)


def test_a_failing_inference_releases_its_claim(tmp_path):
    backend = FakeBackend(fail=True)
    core = make_core(tmp_path, backend=backend)
    run_connection(core, CINE_HEADER, cine_records())
    out, session = run_connection(core, T1_HEADER, t1_records())
    assert not vnes(out) and all("model error" in r.reason for r in session.reports)
    assert not list((tmp_path / "store" / KEY).glob("claim-*"))
    backend.fail = False
    out, _ = run_connection(core, CINE_HEADER, cine_records())  # the waiting slices are made by the next cine
    assert len(vnes(out)) == 2


# ---------------------------------------------------------------------------- bounded memory
def test_a_t1_grid_above_max_grid_is_refused_with_a_reason_and_passes_through(tmp_path):
    core = make_core(tmp_path, max_grid=32)  # the test grid is 50 x 40
    run_connection(core, CINE_HEADER, cine_records())
    t1 = t1_records()
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1) and not vnes(out)
    assert [r.line() for r in session.reports] == [
        f"T1 slice {s}: no VNE: grid 50 x 40 exceeds the VNE limit of 32 x 32 (max_grid); images pass through"
        for s in (0, 1)]
    assert not list((tmp_path / "store" / KEY).glob("t1-*"))


def test_session_and_study_caps_bound_the_store_and_say_so(tmp_path):
    core = make_core(tmp_path, max_session_slices=2)
    cine = cine_records(phases=3)
    out, session = run_connection(core, header(n_phases=10), cine)  # phases never complete: stored at close
    assert inputs_in_order(out, cine)
    assert len(list((tmp_path / "store" / KEY).glob("cine-*"))) == 2
    (report,) = session.reports
    assert report.line() == ("cine slice 2: not stored: the session stored its maximum of 2 slices "
                             "(max_session_slices); not stored")
    core = make_core(tmp_path, max_study_slices=3)
    out, session = run_connection(core, T1_HEADER, t1_records())
    assert [r.reason for r in session.reports][1] == ("study holds its maximum of 3 slices (max_study_slices); "
                                                       "not stored")


def test_session_memory_is_bounded(tmp_path):
    core = make_core(tmp_path, max_session_mb=0.01)  # 10 kB: two 50 x 40 uint16 images
    t1 = t1_records()
    out, session = run_connection(core, T1_HEADER, t1)
    assert inputs_in_order(out, t1)
    assert not vnes(out) and not any(r.made for r in session.reports)
    memory = [r.slice for r in session.reports if "maximum of 0.01 MB of images (max_session_mb)" in r.reason]
    assert memory == [0, 1]  # both maps refused with the reason; the IR images held are too few to fit one


def test_the_store_cap_purges_the_least_recently_written_studies_first(tmp_path, caplog):
    core = make_core(tmp_path)
    keys = []
    for i, age_h in enumerate((3.0, 1.0, 2.0)):
        h = header(n_phases=10, uid=f"2.25.{i}")
        run_connection(core, h, cine_records())
        keys.append(study_key(h))
        written = os.path.getmtime(next((tmp_path / "store" / keys[-1]).glob("cine-*"))) - 3600 * age_h
        for p in (tmp_path / "store" / keys[-1]).iterdir():
            os.utime(p, (written, written))
    three, _ = SliceStore(tmp_path / "store").size()
    capped = SliceStore(tmp_path / "store", max_bytes=int(three * 0.7))  # room for two studies
    caplog.set_level(logging.WARNING, logger="vne_inline")
    capped.purge(keep=keys[0])
    left = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert left == sorted([keys[0], keys[1]])  # the oldest other study (2 h) went; the kept one stays
    assert capped.size()[0] <= capped.max_bytes
    assert any("store over its cap" in r.getMessage() and keys[2][:8] in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- no PHI, no links, no loose root
def test_no_patient_name_or_id_in_any_store_file(tmp_path):
    core = make_core(tmp_path)
    run_connection(core, T1_HEADER, t1_records())  # waits in the store with its map's meta
    t1 = t1_records()
    dicom = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]}, "00100020": {"vr": "LO",
             "Value": [PATIENT_ID]}, "00080050": {"vr": "SH", "Value": ["ACC-778899"]},
             "00080060": {"vr": "CS", "Value": ["MR"]}}
    for r in t1:
        r.meta.update(PHI, DicomJson=json.dumps(dicom))
    run_connection(core, T1_HEADER, t1)
    files = _store_files(tmp_path)
    assert any(p.name.startswith("t1-") for p in files)
    for p in files:
        raw = p.read_bytes()
        for secret in ("DOE^JANE", PATIENT_ID, "19700101", "ACC-778899", STUDY_UID):
            assert secret.encode("utf-8") not in raw and secret.encode("utf-32-le") not in raw, (p.name, secret)
    kept = strip_identifiers({**PHI, "DicomJson": json.dumps(dicom), "WindowCenter": "500"})
    assert json.loads(kept.pop("DicomJson")) == {"00080060": {"vr": "CS", "Value": ["MR"]}}
    assert kept == {"WindowCenter": "500"}


def test_a_store_root_others_may_write_to_is_fixed_or_refused(tmp_path, caplog):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o1777)
    caplog.set_level(logging.WARNING, logger="vne_inline")
    SliceStore(root)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700 and "writable by other users" in caplog.text
    if os.getuid() != 0:
        pytest.skip("refusing another user's store needs a second user (root can chown)")
    os.chown(root, 65534, 65534)
    os.chmod(root, 0o777)
    with pytest.raises(ValueError, match="belongs to another user and others may write to it"):
        SliceStore(root)


def test_a_symbolic_link_in_the_store_is_never_followed(tmp_path, caplog):
    victim = tmp_path / "victim"
    victim.mkdir()
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    (store / KEY).symlink_to(victim)
    caplog.set_level(logging.WARNING, logger="vne_inline")
    core = make_core(tmp_path)
    run_connection(core, CINE_HEADER, cine_records())
    assert list(victim.iterdir()) == [] and (store / KEY).is_dir() and not (store / KEY).is_symlink()
    assert "symbolic link" in caplog.text
    entry = next((store / KEY).glob("cine-1-1-*"))  # the cine slice of T1 slice 0
    target = tmp_path / "elsewhere.npz"
    target.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(target)  # a planted entry: quarantined, never read through
    out, session = run_connection(core, T1_HEADER, t1_records())
    assert len(vnes(out)) == 1 and target.exists()


# ---------------------------------------------------------------------------- configuration
def test_a_vne_series_equal_to_an_input_series_is_refused(tmp_path):
    with pytest.raises(ValueError, match="vne_series_index 3 is the series of the t1map images"):
        CoreConfig.from_properties({"vne_series_index": "3", "series_roles": "3=t1map"})
    core = make_core(tmp_path, vne_series_index=3)  # learnt only from the images: VNE off, said once per slice
    run_connection(core, CINE_HEADER, cine_records())
    out, session = run_connection(core, T1_HEADER, t1_records())
    assert len(out) == len(t1_records()) and [r.made for r in session.reports] == [False, False]
    assert all("use the VNE series index 3" in r.reason for r in session.reports)


def test_role_patterns_are_compiled_once_and_see_a_bounded_prefix():
    rules = RoleRules.from_strings(patterns="cine$=cine")
    g = t1_geometry(0.0)
    late = ImageRecord.new(np.zeros(g.shape, np.uint16), g, {"SequenceDescription": "x" * MATCH_CHARS + "cine"})
    assert classify(late, rules) is Role.OTHER
    molli = ImageRecord.new(np.zeros(g.shape, np.uint16), g, {"SequenceDescription": "MOLLI" * 100000})
    assert classify(molli, RoleRules()) is Role.IR
    with pytest.raises(ValueError, match="bad role pattern"):
        replace(RoleRules(), description_patterns=(("(", Role.CINE),))
