"""Per-study slice store on disk: cine and T1 slices shared across connections and processes.

Cine and T1 mapping are separate scans, hence separate connections (and under Gadgetron separate
Python processes), so the slices wait for each other here (design §2)::

    <root>/                          0o700; refused if another user owns it and others may write to it
      <study_key>/                   0o700; the one-way study hash, never a patient name or ID
        .lock                        fcntl.flock: one writer/reader at a time per study
        cine-<id>.npz                frames (P, y, x) float32 + geometry
        t1-<id>.npz                  T1 map (ms), IR images + TIs (ms), geometry, the map's header and
                                     meta (patient identifiers removed), the arrival token
        vne-<id>.json                the arrival token of T1 slice <id> whose VNE was made
        claim-<id>-<arrival>.lock    flock held while a VNE of that arrival is being made
      quarantine/                    store files that could not be read, kept for inspection until expiry

Entry ids are built from the series and slice index and a hash of the slice geometry (no patient
data). Each storing of a T1 slice is a new *arrival* (a random token): a repeated or re-sent T1 scan
gets its own VNE, and a T1 slice waiting for its cine gets exactly one. A claim is an flock on its
own file, so it belongs to the process (and thread) holding it: the kernel releases it when the
process dies, and the next session takes it over at once.

Files are written atomically (temporary file + ``os.replace``) with mode 0o600, read with
``allow_pickle=False`` (npz/json only, never pickle) and opened with ``O_NOFOLLOW``: a symbolic link in
the store is never followed (a study directory that is a link is removed and made afresh). A file
that cannot be read is moved to ``quarantine/`` with one log line naming it; it costs only its own
slice. Bounds: at most `max_study_slices` slices per study; :meth:`SliceStore.purge` (called when a
connection opens and closes) removes entries older than ``expiry_h`` hours, then whole studies, the
least recently written first, until the store is under `max_bytes`.
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
import stat
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np

from vne_inline.core.phi import strip_identifiers
from vne_inline.core.slices import CineSlice, T1Slice
from vne_inline.geometry import SliceGeometry
from vne_inline.io.records import ImageRecord

__all__ = ["SliceStore", "StudyStore", "Claim", "BadEntry", "StoreFull", "default_store_dir", "entry_id",
           "STUDY_NAME", "QUARANTINE", "DEFAULT_MAX_STORE_BYTES", "DEFAULT_MAX_STUDY_SLICES"]

log = logging.getLogger("vne_inline.core.store")

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = ".lock"
QUARANTINE = "quarantine"
#: Default cap on the whole store (bytes) and on the slices of one study.
DEFAULT_MAX_STORE_BYTES = 2 * 2**30
DEFAULT_MAX_STUDY_SLICES = 256
_GEOMETRY_FIELDS = ("position", "read_dir", "phase_dir", "slice_dir", "fov")
#: Study directory names: the 32-hex-digit study hash, or a per-session key.
STUDY_NAME = re.compile(r"^(session-)?[0-9a-f]{32}$")
#: The only files the store creates (and therefore the only ones purge and remove delete).
_ENTRY_NAME = re.compile(r"^((cine|t1)-[\w-]+\.npz|vne-[\w-]+\.json|claim-[\w-]+\.lock|\..+\.tmp)$")
_SLICE_NAME = re.compile(r"^(cine|t1)-[\w-]+\.npz$")
#: The arrays read to list a study's entries (never the pixel data).
_INDEX_KEYS = (*(f"geom_{n}" for n in (*_GEOMETRY_FIELDS, "matrix")), "arrival")
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: Index (geometry, arrival) of entries already read, keyed by path, valid while the file's inode,
#: modification time and size are unchanged (entries are replaced by rename, never edited in place).
_INDEX_CACHE: OrderedDict[str, tuple[tuple[int, int, int], SliceGeometry, str]] = OrderedDict()
_INDEX_CACHE_SIZE = 4096
_INDEX_LOCK = threading.Lock()
#: What a damaged npz/json raises on reading.
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _file_version(path: Path) -> tuple[int, int, int]:
    """(inode, mtime ns, size) of a store file: changes whenever the file is written again (atomic rename)."""
    st = os.lstat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


class BadEntry(Exception):
    """A store file could not be read; it has been quarantined. The message names the file."""


class StoreFull(Exception):
    """The study already holds its maximum number of slices; the message says so in one line."""


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
def _is_real_dir(path: Path) -> bool:
    """A directory that is not a symbolic link."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _ensure_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; the leaf gets mode 0o700 regardless of the umask.
    A symbolic link in its place is removed first (never followed)."""
    if _is_real_dir(path):
        return
    if path.is_symlink():
        log.warning("store: %s was a symbolic link; removed, not followed", path.name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
    if not _is_real_dir(path):
        raise OSError(f"store directory {path.name} could not be created as a directory")
    os.chmod(path, DIR_MODE, follow_symlinks=False)


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write `payload` to a private temporary file next to `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, FILE_MODE)
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


def _open_regular(path: Path):
    """A binary file object of a regular file, never opened through a symbolic link (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise OSError(f"{path.name} is not a regular file")
    return f


def _read_bytes(path: Path) -> bytes:
    with _open_regular(path) as f:
        return f.read()


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
    """An ImageRecord as plain arrays: data, raw header bytes and meta (identifiers removed) as JSON text."""
    return {
        "map_data": np.ascontiguousarray(record.data),
        "map_head": np.frombuffer(bytes(record.head), dtype=np.uint8),
        "map_meta": np.array(json.dumps(strip_identifiers(record.meta), sort_keys=True)),
    }


def _record_from(npz) -> ImageRecord:
    head = ismrmrd.ImageHeader.from_buffer_copy(npz["map_head"].tobytes())
    return ImageRecord(data=npz["map_data"], head=head, meta=json.loads(str(npz["map_meta"])))


def _tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files directly in `path` (links not followed)."""
    size = count = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(path) as it:
        for e in it:
            with contextlib.suppress(FileNotFoundError):
                if e.is_file(follow_symlinks=False):
                    size += e.stat(follow_symlinks=False).st_size
                    count += 1
    return size, count


def _last_written(path: Path) -> float:
    """The newest mtime of the entries in `path` (epoch s), or the directory's own when it has none."""
    times = []
    with contextlib.suppress(FileNotFoundError), os.scandir(path) as it:
        for e in it:
            with contextlib.suppress(FileNotFoundError):
                times.append(e.stat(follow_symlinks=False).st_mtime)
    return max(times) if times else os.lstat(path).st_mtime


def _check_root(root: Path) -> None:
    """Refuse a store root that is a non-directory, or that other users may write to and we do not own;
    tighten one we own to 0o700 (one warning)."""
    st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"store {root} is not a directory")
    loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if st.st_uid != os.getuid():
        if loose:
            raise ValueError(f"store {root} belongs to another user and others may write to it; refused "
                             "(use a private directory)")
        return
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(root, DIR_MODE)
        if loose:
            log.warning("store %s was writable by other users (mode %o); set to 700", root, stat.S_IMODE(st.st_mode))


# ---------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class SliceStore:
    """The store root; :meth:`study` opens one study's directory. Raises ValueError for a root others
    may write to (see :func:`_check_root`) or a bad bound."""

    root: Path
    expiry_h: float = 24.0
    max_bytes: int = DEFAULT_MAX_STORE_BYTES
    max_study_slices: int = DEFAULT_MAX_STUDY_SLICES

    def __post_init__(self) -> None:
        if not (self.expiry_h > 0):
            raise ValueError(f"expiry_h must be > 0, got {self.expiry_h}")
        if self.max_bytes < 1 or self.max_study_slices < 1:
            raise ValueError("max_bytes and max_study_slices must be >= 1")
        object.__setattr__(self, "root", Path(self.root).expanduser())
        if not self.root.exists():
            self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            os.chmod(self.root, DIR_MODE)
        _check_root(self.root)

    def study(self, key: str) -> StudyStore:
        """The store of one study (`key`: the 32-hex-digit study hash, or ``session-`` + 32 hex digits)."""
        if not STUDY_NAME.match(key or ""):
            raise ValueError("study key must be a 32-hex-digit hash (optionally prefixed 'session-')")
        return StudyStore(self.root / key, self.max_study_slices)

    def _studies(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if STUDY_NAME.match(p.name) and _is_real_dir(p))

    def size(self) -> tuple[int, int]:
        """(bytes, files) held by the store: studies and quarantine."""
        totals = [_tree_size(p) for p in [*self._studies(), self.root / QUARANTINE]]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)

    def purge(self, keep: str | None = None) -> int:
        """Remove expired entries (and study directories left empty), then the least recently written
        studies (never `keep`) while the store is over `max_bytes`; returns the number of files removed.
        Only study directories, entry files and quarantined files are touched, whatever else lies in `root`."""
        cutoff = time.time() - 3600.0 * self.expiry_h
        removed = 0
        for path in self._studies():
            try:
                removed += StudyStore(path).purge(cutoff)
            except OSError as exc:  # another process removing the same study, or a foreign directory
                log.warning("store purge skipped one study directory: %s", exc.strerror or exc)
        quarantine = self.root / QUARANTINE
        if _is_real_dir(quarantine):
            for p in quarantine.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if p.lstat().st_mtime < cutoff:
                        p.unlink()
                        removed += 1
        if removed:
            log.info("store purge removed %d expired entries", removed)
        return removed + self._enforce_cap(keep)

    def _enforce_cap(self, keep: str | None) -> int:
        total, _ = self.size()
        if total <= self.max_bytes:
            return 0
        removed = 0
        aged = sorted((_last_written(p), p) for p in self._studies() if p.name != keep)
        for written, path in aged:
            if total <= self.max_bytes:
                break
            size, count = _tree_size(path)
            try:
                StudyStore(path).remove()
            except OSError as exc:
                log.warning("store cap: one study not removed: %s", exc.strerror or exc)
                continue
            total -= size
            removed += count
            log.warning("store over its cap of %.1f MB: removed study %s (%d files, %.1f MB, last written %.1f h "
                        "ago)", self.max_bytes / 1e6, path.name[:8], count, size / 1e6, (time.time() - written) / 3600)
        return removed


@dataclass
class Claim:
    """The right to make the VNE of one arrival of one T1 slice; an flock on ``claim-<id>-<arrival>.lock``."""

    study: StudyStore
    key: str
    arrival: str
    fd: int | None

    def release(self) -> None:
        """Give the claim back (idempotent). A VNE not marked made stays pending for a later cine."""
        if self.fd is None:
            return
        path = self.study.path / f"claim-{self.key}-{self.arrival}.lock"
        with self.study.locked(), contextlib.suppress(FileNotFoundError):
            if os.lstat(path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(path)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class StudyStore:
    """One study's slices. Every method takes the study lock itself; :meth:`locked` groups several
    calls into one critical section (the lock is re-entrant within one instance). One instance per
    thread (each session opens its own); instances in any thread or process exclude each other."""

    def __init__(self, path: Path, max_slices: int = DEFAULT_MAX_STUDY_SLICES) -> None:
        self.path = Path(path)
        self.max_slices = max_slices
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
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, FILE_MODE)
            except FileNotFoundError:  # a purge removed the directory in between
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.lstat(lock_path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    # ------------------------------------------------------------------ reading, quarantine
    def _load(self, name: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Arrays `keys` (default all) of npz entry `name`; an unreadable file is quarantined (BadEntry)."""
        path = self.path / name
        try:
            with _open_regular(path) as f, np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in (z.files if keys is None else [k for k in keys if k in z.files])}
        except FileNotFoundError:
            raise
        except _UNREADABLE as exc:
            self._quarantine(path, exc)
            raise BadEntry(f"store file {name} unreadable ({type(exc).__name__}); quarantined") from exc

    def _quarantine(self, path: Path, exc: BaseException) -> None:
        """Move `path` to the store's quarantine folder with one log line naming it."""
        folder = self.path.parent / QUARANTINE
        target = folder / f"{self.path.name[:8]}-{int(time.time())}-{path.name}"
        try:
            _ensure_dir(folder)
            os.replace(path, target)
        except OSError:  # cannot move it: remove it, it cannot be read anyway
            with contextlib.suppress(OSError):
                os.unlink(path)
        log.warning("store file %s/%s unreadable (%s): moved to %s", self.path.name[:8], path.name,
                    type(exc).__name__, target)

    def _slice_count(self) -> int:
        return sum(1 for p in self.path.iterdir() if _SLICE_NAME.match(p.name))

    def _put(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        with self.locked():
            path = self.path / name
            if not os.path.lexists(path) and self._slice_count() >= self.max_slices:
                raise StoreFull(f"study holds its maximum of {self.max_slices} slices (max_study_slices); not stored")
            _write_atomic(path, _npz_bytes(arrays))

    # ------------------------------------------------------------------ cine
    def put_cine(self, cine: CineSlice) -> str:
        """Store (or replace) a cine slice; returns its entry id. StoreFull when the study is full."""
        key = entry_id(cine.key[0], cine.key[1], cine.geometry)
        arrays = {"frames": np.asarray(cine.frames, dtype=np.float32),
                  "key": np.asarray(cine.key, dtype=np.int64), **_geometry_arrays(cine.geometry)}
        self._put(f"cine-{key}.npz", arrays)
        return key

    def cine_version(self, key: str) -> tuple[int, int, int] | None:
        """(inode, mtime ns, size) of a stored cine slice, None when it is not stored: what tells a cine
        slice stored again from the one read before."""
        try:
            return _file_version(self.path / f"cine-{key}.npz")
        except FileNotFoundError:
            return None

    def cine_geometries(self) -> list[tuple[str, SliceGeometry]]:
        """(entry id, geometry) of every readable stored cine slice (frames are kept out of the result)."""
        return [(k, g) for k, g, _ in self._entries_of("cine")]

    def cine(self, key: str) -> CineSlice:
        """One cine slice; BadEntry (quarantined) or FileNotFoundError."""
        z = self._load(f"cine-{key}.npz")
        try:
            series, index = (int(v) for v in z["key"])
            return CineSlice(key=(series, index), geometry=_geometry_from(z), frames=z["frames"])
        except _UNREADABLE as exc:
            self._quarantine(self.path / f"cine-{key}.npz", exc)
            raise BadEntry(f"store file cine-{key}.npz unreadable ({type(exc).__name__}); quarantined") from exc

    # ------------------------------------------------------------------ T1
    def put_t1(self, t1: T1Slice) -> tuple[str, str]:
        """Store (or replace) a T1 slice as a new arrival; returns (entry id, arrival token)."""
        key = entry_id(t1.map_record.series_index, t1.slice, t1.geometry)
        arrival = uuid.uuid4().hex[:16]
        arrays = {
            "slice": np.asarray(t1.slice, dtype=np.int64),
            "t1_ms": np.asarray(t1.t1_ms, dtype=np.float32),
            "ir": np.asarray(t1.ir, dtype=np.float32),
            "ti_ms": np.asarray(t1.ti_ms, dtype=np.float32),
            "arrival": np.array(arrival),
            **_geometry_arrays(t1.geometry),
            **_record_arrays(t1.map_record),
        }
        self._put(f"t1-{key}.npz", arrays)
        return key, arrival

    def t1_geometries(self) -> list[tuple[str, SliceGeometry]]:
        """(entry id, geometry) of every readable stored T1 slice."""
        return [(k, g) for k, g, _ in self._entries_of("t1")]

    def t1(self, key: str) -> tuple[T1Slice, str]:
        """One T1 slice and its arrival token; BadEntry (quarantined) or FileNotFoundError."""
        z = self._load(f"t1-{key}.npz")
        try:
            t1 = T1Slice(slice=int(z["slice"]), geometry=_geometry_from(z), t1_ms=z["t1_ms"], ir=z["ir"],
                         ti_ms=z["ti_ms"], map_record=_record_from(z))
            return t1, str(z["arrival"])
        except _UNREADABLE as exc:
            self._quarantine(self.path / f"t1-{key}.npz", exc)
            raise BadEntry(f"store file t1-{key}.npz unreadable ({type(exc).__name__}); quarantined") from exc

    # ------------------------------------------------------------------ VNE state and claims
    def made_arrival(self, key: str) -> str | None:
        """The arrival token of T1 slice `key` whose VNE was made, if any (an unreadable record is quarantined)."""
        path = self.path / f"vne-{key}.json"
        with self.locked():
            try:
                state = json.loads(_read_bytes(path))
                return str(state["arrival"])
            except FileNotFoundError:
                return None
            except (*_UNREADABLE, TypeError) as exc:
                self._quarantine(path, exc)
                return None

    def claim(self, key: str, arrival: str) -> Claim | None:
        """Claim arrival `arrival` of T1 slice `key` for making its VNE: None if that VNE is already made or
        another live session holds the claim. The claim dies with its process."""
        with self.locked():
            if self.made_arrival(key) == arrival:
                return None
            path = self.path / f"claim-{key}-{arrival}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            return Claim(self, key, arrival, fd)

    def mark_made(self, claim: Claim) -> None:
        """Record that the VNE of the claimed arrival was made."""
        _write_atomic(self.path / f"vne-{claim.key}.json",
                      json.dumps({"arrival": claim.arrival, "time": time.time()}).encode())

    def pending_t1(self) -> list[tuple[str, str, SliceGeometry]]:
        """(entry id, arrival, geometry) of the stored T1 slices whose current arrival has no VNE yet."""
        with self.locked():
            return [(k, a, g) for k, g, a in self._entries_of("t1") if self.made_arrival(k) != a]

    # ------------------------------------------------------------------ housekeeping
    def _entries_of(self, kind: str) -> list[tuple[str, SliceGeometry, str]]:
        """(entry id, geometry, arrival or '') of the readable entries of `kind`; others are quarantined."""
        out = []
        with self.locked():
            for path in sorted(self.path.glob(f"{kind}-*.npz")):
                try:
                    out.append((path.stem[len(kind) + 1:], *self._index(path)))
                except BadEntry:
                    continue
                except FileNotFoundError:
                    continue
                except _UNREADABLE as exc:  # readable npz, bad geometry
                    self._quarantine(path, exc)
        return out

    def _index(self, path: Path) -> tuple[SliceGeometry, str]:
        """(geometry, arrival or '') of one entry, from the index cache while the file is unchanged."""
        version = _file_version(path)
        with _INDEX_LOCK:
            hit = _INDEX_CACHE.get(str(path))
            if hit is not None and hit[0] == version:
                _INDEX_CACHE.move_to_end(str(path))
                return hit[1], hit[2]
        z = self._load(path.name, _INDEX_KEYS)
        geometry, arrival = _geometry_from(z), str(z.get("arrival", ""))
        with _INDEX_LOCK:
            _INDEX_CACHE[str(path)] = (version, geometry, arrival)
            while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
                _INDEX_CACHE.popitem(last=False)
        return geometry, arrival

    def purge(self, cutoff: float) -> int:
        """Remove entries last written before `cutoff` (epoch s); remove the directory if none is left."""
        with self.locked():
            entries = self._entries()
            expired = [p for p in entries if p.lstat().st_mtime < cutoff]
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
