"""The per-study slice store: persistence across cores and processes, permissions, expiry, locking."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import (  # the shared exam builders
    CINE_HEADER,
    PATIENT_ID,
    STUDY_UID,
    T1_HEADER,
    cine_geometry,
    cine_records,
    make_core,
    run_connection,
    t1_records,
    vnes,
)

from vne_inline.core.slices import CineSlice, t1_slices
from vne_inline.core.store import SliceStore, default_store_dir, entry_id
from vne_inline.io import study_key

KEY = study_key(T1_HEADER)


def a_cine(index: int = 0, value: float = 1.0) -> CineSlice:
    g = cine_geometry(8.0 * index)
    return CineSlice(key=(1, index), geometry=g, frames=np.full((4, *g.shape), value, np.float32))


def a_t1():
    records = t1_records()
    return t1_slices([r for r in records if r.series_index == 3], [r for r in records if r.series_index == 2])[0]


def test_round_trip_without_pickle(tmp_path):
    study = SliceStore(tmp_path).study(KEY)
    cine, t1 = a_cine(), a_t1()
    c_id, (t_id, arrival) = study.put_cine(cine), study.put_t1(t1)
    back = study.cine(c_id)
    assert back.key == cine.key and back.geometry.compare(cine.geometry).distance_mm < 1e-9
    np.testing.assert_array_equal(back.frames, cine.frames)
    t, back_arrival = study.t1(t_id)
    assert back_arrival == arrival and study.pending_t1()[0][:2] == (t_id, arrival)
    np.testing.assert_array_equal(t.t1_ms, t1.t1_ms)
    np.testing.assert_array_equal(t.ir, t1.ir)
    np.testing.assert_array_equal(t.ti_ms, t1.ti_ms)
    assert bytes(t.map_record.head) == bytes(t1.map_record.head) and t.map_record.meta == t1.map_record.meta
    np.testing.assert_array_equal(t.map_record.data, t1.map_record.data)
    assert [k for k, _ in study.cine_geometries()] == [c_id] and [k for k, _ in study.t1_geometries()] == [t_id]
    for path in study.path.glob("*.npz"):
        with np.load(path, allow_pickle=False) as z:
            assert all(z[name].dtype != object for name in z.files)


def test_persists_across_two_cores(tmp_path):
    out, _ = run_connection(make_core(tmp_path), CINE_HEADER, cine_records())
    assert not vnes(out)
    out, session = run_connection(make_core(tmp_path), T1_HEADER, t1_records())
    assert len(vnes(out)) == 2 and all(r.made for r in session.reports)


def _cine_connection(store_dir: str) -> int:
    """Child process: one cine connection through its own core."""
    from test_pipeline import CINE_HEADER, cine_records, make_core, run_connection

    out, _ = run_connection(make_core(Path(store_dir)), CINE_HEADER, cine_records())
    return len(out)


def test_persists_across_two_processes(tmp_path):
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_cine_connection, (str(tmp_path),)) == len(cine_records())
    out, _ = run_connection(make_core(tmp_path), T1_HEADER, t1_records())
    assert len(vnes(out)) == 2


def test_owner_only_permissions_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        run_connection(make_core(tmp_path), CINE_HEADER, cine_records())
        run_connection(make_core(tmp_path), T1_HEADER, t1_records())
    finally:
        os.umask(old)
    root = tmp_path / "store"
    paths = list(root.rglob("*"))
    assert paths and os.stat(root).st_mode & 0o777 == 0o700
    for p in paths:
        assert os.stat(p).st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), p


def test_no_uid_or_patient_id_in_file_names_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="vne_inline")
    run_connection(make_core(tmp_path), CINE_HEADER, cine_records())
    run_connection(make_core(tmp_path), T1_HEADER, t1_records())
    names = [str(p.relative_to(tmp_path)) for p in (tmp_path / "store").rglob("*")]
    assert names and all(s not in n for n in names for s in (STUDY_UID, PATIENT_ID))
    assert [p.name for p in (tmp_path / "store").iterdir()] == [KEY]
    assert all(s not in r.getMessage() for r in caplog.records for s in (STUDY_UID, PATIENT_ID))


def test_expired_entries_are_purged_on_open(tmp_path):
    core = make_core(tmp_path, expiry_h=1.0)
    run_connection(core, CINE_HEADER, cine_records())
    study_dir = tmp_path / "store" / KEY
    old = time.time() - 2 * 3600
    for p in study_dir.glob("cine-*"):
        os.utime(p, (old, old))
    out, session = run_connection(core, T1_HEADER, t1_records())  # open_session purges first
    assert not vnes(out) and all("no cine match" in r.reason for r in session.reports)
    assert not list(study_dir.glob("cine-*")) and len(list(study_dir.glob("t1-*"))) == 2
    for p in study_dir.iterdir():
        os.utime(p, (old, old))
    assert core.store.purge() == 2 and not study_dir.exists()


def test_purge_touches_only_the_store_s_own_files(tmp_path):
    old = time.time() - 48 * 3600
    foreign = tmp_path / "not-a-study"
    foreign.mkdir()
    (foreign / "cine-1-0-x.npz").write_bytes(b"someone else's")
    study = SliceStore(tmp_path).study(KEY)
    study.put_cine(a_cine())
    (study.path / "notes.txt").write_text("kept")
    for p in [*foreign.iterdir(), *study.path.iterdir()]:
        os.utime(p, (old, old))
    assert SliceStore(tmp_path).purge() == 1
    assert (foreign / "cine-1-0-x.npz").exists() and (study.path / "notes.txt").exists()
    assert study.cine_geometries() == []


def test_expiry_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="expiry_h"):
        SliceStore(tmp_path, expiry_h=0)
    with pytest.raises(ValueError, match="study key"):
        SliceStore(tmp_path).study("../escape")


def test_default_store_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VNE_INLINE_STORE", str(tmp_path / "s"))
    assert default_store_dir() == tmp_path / "s"
    monkeypatch.delenv("VNE_INLINE_STORE")
    assert default_store_dir() == Path.home() / ".cache" / "vne-inline" / "store"


def test_claims_are_exclusive_per_arrival_and_made_arrivals_are_not_claimed_again(tmp_path):
    a, b = SliceStore(tmp_path).study(KEY), SliceStore(tmp_path).study(KEY)
    claim = a.claim("x", "arrival1")
    assert claim is not None and b.claim("x", "arrival1") is None
    other = b.claim("x", "arrival2")  # a new arrival of the same slice is independent
    assert other is not None
    other.release()
    claim.release()
    claim = b.claim("x", "arrival1")
    b.mark_made(claim)
    claim.release()
    assert a.made_arrival("x") == "arrival1" and a.claim("x", "arrival1") is None
    assert not list(a.path.glob("claim-*"))  # released claims leave no file


def _claim_and_die(root: str) -> None:
    """Child process: take a claim and be killed while holding it (as kill -9 mid-inference)."""
    claim = SliceStore(Path(root)).study(KEY).claim("x", "a1")
    assert claim is not None
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_claim_dies_with_its_process_and_is_taken_over_at_once(tmp_path):
    child = mp.get_context("fork").Process(target=_claim_and_die, args=(str(tmp_path),))
    child.start()
    child.join(20)
    assert child.exitcode == -signal.SIGKILL
    assert list((tmp_path / KEY).glob("claim-*"))  # the file is left behind ...
    claim = SliceStore(tmp_path).study(KEY).claim("x", "a1")  # ... but its lock died with the process
    assert claim is not None
    claim.release()


_held = []  # claims a pool worker keeps until it exits


def _writer(args) -> tuple[int, bool]:
    """Child process: write cine slices into the shared study and race for one claim."""
    root, worker = args
    study = SliceStore(Path(root)).study(KEY)
    for i in range(5):
        study.put_cine(a_cine(i, value=float(worker)))
        study.cine_geometries()
    claim = study.claim("shared", "a1")
    _held.append(claim)
    return worker, claim is not None


def test_concurrent_writers_keep_files_whole_and_one_claim_wins(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        results = pool.map(_writer, [(str(tmp_path), w) for w in range(8)])
    assert sum(claimed for _, claimed in results) == 1
    study = SliceStore(tmp_path).study(KEY)
    ids = [k for k, _ in study.cine_geometries()]
    assert len(ids) == 5 and not list(study.path.glob(".*.tmp"))
    for k in ids:
        frames = study.cine(k).frames
        assert np.all(frames == frames.flat[0])  # one writer's slice, never a mix


def test_entry_id_depends_on_geometry_not_on_data():
    g = cine_geometry(0.0)
    assert entry_id(1, 0, g) == entry_id(1, 0, cine_geometry(0.01))
    assert entry_id(1, 0, g) != entry_id(1, 0, cine_geometry(2.0)) != entry_id(2, 0, g)
