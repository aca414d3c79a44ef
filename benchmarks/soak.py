"""Soak: `vne-inline serve` over a few hundred sessions; server memory, open files and the store stay bounded.

Starts `vne-inline serve` in a subprocess on a fresh store with a store cap (``--store-mb``), then sends
sessions in rounds of three, each round a new study: the cine scan of one synthetic exam, its T1-mapping
scan (VNE expected), and a scan of cine slices that never complete (``--junk-slices`` slices of a few
phases each, stored at close: what fills a store without bounds). Every ``--every`` sessions, and at
the end, it records the server's resident memory (now and peak, from /proc), its open file
descriptors, and the store's size and file count; prints a Markdown table and the VNE count::

    python benchmarks/soak.py --sessions 300 --store-mb 256 --threads 1
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vne_inline.adapters.mrd_client import exchange
from vne_inline.io.mrd_file import read_file
from vne_inline.synth.exam import generate_patient

_UID = re.compile(r"<(studyInstanceUID|frameOfReferenceUID)>[^<]*</\1>")


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _store_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def _start(store: Path, args) -> tuple[subprocess.Popen, int, list[str]]:
    cmd = [sys.executable, "-m", "vne_inline.cli", "serve", "--port", "0", "--backend", args.backend,
           "--store", str(store), "--property", f"max_store_mb={args.store_mb}"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", str(args.model)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,  # noqa: SIM115
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for line in list(lines):
            if m := re.search(r"listening on [\d.]+:(\d+)", line):
                return proc, int(m.group(1)), lines
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start:\n" + "".join(lines[-20:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--every", type=int, default=30, help="Record every this many sessions.")
    parser.add_argument("--store-mb", type=float, default=256.0, help="Store cap given to the server (MB).")
    parser.add_argument("--junk-slices", type=int, default=200, help="Never-completing cine slices per junk scan.")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vne-soak-") as tmp:
        exam = generate_patient(Path(tmp) / "exam", 0, 0).directory
        cine, t1 = read_file(exam / "cine.h5"), read_file(exam / "t1map.h5")
        cine_records, t1_records = list(cine.records()), list(t1.records())
        junk = [r for r in cine_records if r.phase < 3][:3]
        store = Path(tmp) / "store"
        proc, port, lines = _start(store, args)
        rows, n_vne, started = [], 0, time.monotonic()
        try:
            for i in range(args.sessions):
                study = lambda m: f"<{m[1]}>2.25.{10**6 + i // 3}.{len(m[1])}</{m[1]}>"  # noqa: E731, B023
                kind = i % 3
                if kind == 0:
                    header, records = _UID.sub(study, cine.header_xml), cine_records
                elif kind == 1:
                    header, records = _UID.sub(study, t1.header_xml), t1_records
                else:  # slices that never complete: new slice indices, three phases each
                    header = _UID.sub(study, cine.header_xml)
                    records = []
                    for s in range(args.junk_slices):
                        for r in junk:
                            copy = type(r)(data=r.data, head=type(r.head).from_buffer_copy(bytes(r.head)),
                                           meta=dict(r.meta))
                            copy.head.slice = 100 + s
                            records.append(copy)
                reply = exchange(header, records, port=port, timeout_s=300.0)
                if not reply.closed:
                    raise SystemExit(f"session {i} failed: {reply.error}")
                n_vne += sum(1 for r in reply.records if r.series_index == 99)
                if (i + 1) % args.every == 0 or i + 1 == args.sessions:
                    size, files = _store_size(store)
                    status = _status(proc.pid)
                    rows.append((i + 1, status["VmRSS"] / 1024, status["VmHWM"] / 1024,
                                 len(os.listdir(f"/proc/{proc.pid}/fd")), size / 2**20, files))
        finally:
            proc.terminate()
            proc.wait(60)
            proc.stderr.close()
        elapsed = time.monotonic() - started
    print(f"{args.sessions} sessions in {elapsed:.0f} s, {n_vne} VNE images, store cap {args.store_mb:g} MB, "
          f"{args.junk_slices} never-completing cine slices per junk scan")
    print("| sessions | RSS (MB) | peak RSS (MB) | open fds | store (MB) | store files |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, rss, hwm, fds, size, files in rows:
        print(f"| {n} | {rss:.0f} | {hwm:.0f} | {fds} | {size:.1f} | {files} |")
    warnings = [line for line in lines if "store over its cap" in line]
    print(f"store cap purges logged: {len(warnings)}")


if __name__ == "__main__":
    main()
