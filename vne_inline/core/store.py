"""Per-study slice store on disk: cine and T1 slices shared across connections and processes.

Cine and T1 mapping are separate scans, hence separate connections (and under Gadgetron separate
Python processes), so the slices wait for each other here (design §2)::

    <root>/                          0o700 when created here
      <study_key>/                   0o700; the one-way study hash, never a patient name or ID
        .lock                        fcntl.flock: one writer/reader at a time per study
        cine-<id>.npz                frames (P, y, x) float32 + geometry
        t1-<id>.npz                  T1 map (ms), IR images + TIs (ms), geometry, the map's header + meta
        vne-<id>.json                the VNE state of T1 slice <id>: "claimed" (being made) or "made"

Entry ids are built from the series and slice index and a hash of the slice geometry (no patient
data). Files are written atomically (temporary file + ``os.replace``) with mode 0o600, read with
``allow_pickle=False`` (npz/json only, never pickle). Entries older than ``expiry_h`` hours are
removed by :meth:`SliceStore.purge` (an adapter calls it when a connection opens), and a study
directory left empty is removed with them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np

from vne_inline.core.slices import CineSlice, T1Slice
from vne_inline.geometry import SliceGeometry
from vne_inline.io.records import ImageRecord

__all__ = ["SliceStore", "StudyStore", "default_store_dir", "entry_id", "CLAIM_TIMEOUT_S", "STUDY_NAME"]

log = logging.getLogger("vne_inline.core.store")

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = ".lock"
#: A VNE claim older than this (s) is considered abandoned (its process died) and may be taken over.
CLAIM_TIMEOUT_S = 600.0
_GEOMETRY_FIELDS = ("position", "read_dir", "phase_dir", "slice_dir", "fov")
#: Study directory names: the 32-hex-digit study hash, or a per-session key.
STUDY_NAME = re.compile(r"^(session-)?[0-9a-f]{32}$")
#: The only files the store creates (and therefore the only ones purge and remove delete).
_ENTRY_NAME = re.compile(r"^((cine|t1)-[\w-]+\.npz|vne-[\w-]+\.json|\..+\.tmp)$")


def default_store_dir() -> Path:
    """``$VNE_INLINE_STORE`` if set, else ``~/.cache/vne-inline/store``."""
    env = os.environ.get("VNE_INLINE_STORE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vne-inline" / "store"


def entry_id(series: int, slice_index: int, geometry: SliceGeometry) -> str:
    """File-name-safe id of one slice: series, slice index and a hash of the geometry (0.1 mm, 1e-3)."""
    parts = [np.round(geometry.position, 1), np.round(geometry.read_dir, 3), np.round(geometry.phase_dir, 3),
             np.round(geometry.fov, 1), np.asarray(geometry.matrix, dtype=np.float64)]
    digest = hashlib.sha256(np.concatenate(parts).astype(np.float64).tobytes()).hexdigest()[:12]
    return f"{int(series)}-{int(slice_index)}-{digest}"


# ---------------------------------------------------------------------------- file primitives
def _ensure_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; the leaf gets mode 0o700 regardless of the umask."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write `payload` to a private temporary file next to `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _geometry_arrays(g: SliceGeometry) -> dict[str, np.ndarray]:
    out = {f"geom_{name}": np.asarray(getattr(g, name), dtype=np.float64) for name in _GEOMETRY_FIELDS}
    out["geom_matrix"] = np.asarray(g.matrix, dtype=np.int64)
    return out


def _geometry_from(npz) -> SliceGeometry:
    kw = {name: npz[f"geom_{name}"] for name in _GEOMETRY_FIELDS}
    nx, ny = (int(v) for v in npz["geom_matrix"])
    return SliceGeometry(**kw, matrix=(nx, ny))


def _record_arrays(record: ImageRecord) -> dict[str, np.ndarray]:
    """An ImageRecord as plain arrays: data, raw header bytes and meta as JSON text."""
    return {
        "map_data": np.ascontiguousarray(record.data),
        "map_head": np.frombuffer(bytes(record.head), dtype=np.uint8),
        "map_meta": np.array(json.dumps(record.meta, sort_keys=True)),
    }


def _record_from(npz) -> ImageRecord:
    head = ismrmrd.ImageHeader.from_buffer_copy(npz["map_head"].tobytes())
    return ImageRecord(data=npz["map_data"], head=head, meta=json.loads(str(npz["map_meta"])))


# ---------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class SliceStore:
    """The store root; :meth:`study` opens one study's directory."""

    root: Path
    expiry_h: float = 24.0

    def __post_init__(self) -> None:
        if not (self.expiry_h > 0):
            raise ValueError(f"expiry_h must be > 0, got {self.expiry_h}")
        object.__setattr__(self, "root", Path(self.root).expanduser())
        _ensure_dir(self.root)

    def study(self, key: str) -> StudyStore:
        """The store of one study (`key`: the 32-hex-digit study hash, or ``session-`` + 32 hex digits)."""
        if not STUDY_NAME.match(key or ""):
            raise ValueError("study key must be a 32-hex-digit hash (optionally prefixed 'session-')")
        return StudyStore(self.root / key)

    def purge(self) -> int:
        """Remove entries older than `expiry_h` (and study directories left empty); returns the count.
        Only study directories and entry files of the store are touched, whatever else lies in `root`."""
        cutoff = time.time() - 3600.0 * self.expiry_h
        removed = 0
        for path in sorted(p for p in self.root.iterdir() if p.is_dir() and STUDY_NAME.match(p.name)):
            try:
                removed += StudyStore(path).purge(cutoff)
            except OSError as exc:  # another process removing the same study, or a foreign directory
                log.warning("store purge skipped one study directory: %s", exc.strerror or exc)
        if removed:
            log.info("store purge removed %d expired entries", removed)
        return removed


class StudyStore:
    """One study's slices. Every method takes the study lock itself; :meth:`locked` groups several
    calls into one critical section (the lock is re-entrant within one instance). One instance per
    thread (each session opens its own); instances in any thread or process exclude each other."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._depth = 0
        self._fd: int | None = None

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def locked(self) -> Iterator[StudyStore]:
        """Hold the study's flock (exclusive) for the duration of the block."""
        if self._depth == 0:
            self._fd = self._acquire()
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def _acquire(self) -> int:
        """Lock `.lock`; retry if a purge removed the file while we waited (checked by inode)."""
        lock_path = self.path / LOCK_NAME
        while True:
            _ensure_dir(self.path)
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            except FileNotFoundError:  # a purge removed the directory in between
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    # ------------------------------------------------------------------ cine
    def put_cine(self, cine: CineSlice) -> str:
        """Store (or replace) a cine slice; returns its entry id."""
        key = entry_id(cine.key[0], cine.key[1], cine.geometry)
        arrays = {"frames": np.asarray(cine.frames, dtype=np.float32),
                  "key": np.asarray(cine.key, dtype=np.int64), **_geometry_arrays(cine.geometry)}
        with self.locked():
            _write_atomic(self.path / f"cine-{key}.npz", _npz_bytes(arrays))
        return key

    def cine_geometries(self) -> list[tuple[str, SliceGeometry]]:
        """(entry id, geometry) of every stored cine slice (frames are not read)."""
        return self._geometries("cine")

    def cine(self, key: str) -> CineSlice:
        with self.locked(), np.load(self.path / f"cine-{key}.npz", allow_pickle=False) as z:
            series, index = (int(v) for v in z["key"])
            return CineSlice(key=(series, index), geometry=_geometry_from(z), frames=z["frames"])

    # ------------------------------------------------------------------ T1
    def put_t1(self, t1: T1Slice) -> str:
        """Store (or replace) a T1 slice with its map record; returns its entry id."""
        key = entry_id(t1.map_record.series_index, t1.slice, t1.geometry)
        arrays = {
            "slice": np.asarray(t1.slice, dtype=np.int64),
            "t1_ms": np.asarray(t1.t1_ms, dtype=np.float32),
            "ir": np.asarray(t1.ir, dtype=np.float32),
            "ti_ms": np.asarray(t1.ti_ms, dtype=np.float32),
            **_geometry_arrays(t1.geometry),
            **_record_arrays(t1.map_record),
        }
        with self.locked():
            _write_atomic(self.path / f"t1-{key}.npz", _npz_bytes(arrays))
        return key

    def t1_geometries(self) -> list[tuple[str, SliceGeometry]]:
        """(entry id, geometry) of every stored T1 slice."""
        return self._geometries("t1")

    def t1(self, key: str) -> T1Slice:
        with self.locked(), np.load(self.path / f"t1-{key}.npz", allow_pickle=False) as z:
            return T1Slice(slice=int(z["slice"]), geometry=_geometry_from(z), t1_ms=z["t1_ms"], ir=z["ir"],
                           ti_ms=z["ti_ms"], map_record=_record_from(z))

    # ------------------------------------------------------------------ VNE record
    def vne_state(self, key: str) -> str | None:
        """'made', 'claimed' (a live claim) or None for T1 slice `key`."""
        with self.locked():
            try:
                state = json.loads((self.path / f"vne-{key}.json").read_text())
            except FileNotFoundError:
                return None
        if state.get("state") == "claimed" and time.time() - float(state.get("time", 0)) > CLAIM_TIMEOUT_S:
            return None
        return state.get("state")

    def claim_vne(self, key: str) -> bool:
        """Claim T1 slice `key` for making its VNE; False if it is already made or claimed elsewhere."""
        with self.locked():
            if self.vne_state(key) is not None:
                return False
            self._write_vne(key, "claimed")
            return True

    def mark_vne_made(self, key: str) -> None:
        self._write_vne(key, "made")

    def release_vne(self, key: str) -> None:
        """Give a claim back (the VNE could not be made; a later cine may try again)."""
        with self.locked(), contextlib.suppress(FileNotFoundError):
            if self.vne_state(key) == "claimed":
                os.unlink(self.path / f"vne-{key}.json")

    def pending_t1(self) -> list[tuple[str, SliceGeometry]]:
        """(entry id, geometry) of the stored T1 slices that have no VNE yet (nor a live claim)."""
        with self.locked():
            return [(k, g) for k, g in self.t1_geometries() if self.vne_state(k) is None]

    def _write_vne(self, key: str, state: str) -> None:
        with self.locked():
            _write_atomic(self.path / f"vne-{key}.json", json.dumps({"state": state, "time": time.time()}).encode())

    # ------------------------------------------------------------------ housekeeping
    def _geometries(self, kind: str) -> list[tuple[str, SliceGeometry]]:
        out = []
        with self.locked():
            for path in sorted(self.path.glob(f"{kind}-*.npz")):
                with np.load(path, allow_pickle=False) as z:
                    out.append((path.stem[len(kind) + 1:], _geometry_from(z)))
        return out

    def purge(self, cutoff: float) -> int:
        """Remove entries last written before `cutoff` (epoch s); remove the directory if none is left."""
        with self.locked():
            entries = self._entries()
            expired = [p for p in entries if p.stat().st_mtime < cutoff]
            for p in expired:
                p.unlink()
            if len(expired) == len(entries):
                self.remove()
            return len(expired)

    def remove(self) -> None:
        """Delete the study's entries and, if nothing else is in it, its directory (a process waiting for
        the lock notices the new lock file by its inode)."""
        with self.locked():
            for p in self._entries():
                p.unlink()
            if not any(p.name != LOCK_NAME for p in self.path.iterdir()):
                os.unlink(self.path / LOCK_NAME)
                os.rmdir(self.path)

    def _entries(self) -> list[Path]:
        return [p for p in self.path.iterdir() if _ENTRY_NAME.match(p.name)]
