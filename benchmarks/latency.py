"""Inline latency: from the last T1-scan image of a slice fed to the core to its VNE coming out.

Generates one synthetic exam, replays its cine scan into a fresh store (untimed), then feeds the
T1-mapping scan image by image and times every ``Session.feed`` call that returns a VNE: that call
holds the whole inline path (store write, cine match and resampling, normalisation, inference,
emit). One untimed warm-up round first; then rounds until ``--slices`` VNE are timed. Prints the
median (and range) in ms, then the latency of the last slice of a scan, last T1 image in -> last VNE
out (the final ``feed`` and ``close``), for the two ways a scan arrives:

- announced: the header gives the IR image count, so each slice completes (and is inferred) as its
  last image arrives; the last slice waits only for itself;
- at close: the header gives no count, so all slices complete at the end of the connection and run
  as one batch.

CPU by default (``--backend onnxruntime``)::

    python benchmarks/latency.py --slices 9 --threads 2 [--model x.onnx] [--precision auto]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from vne_inline.core.pipeline import CoreConfig, InlineCore
from vne_inline.infer import load_backend
from vne_inline.io.mrd_file import read_file
from vne_inline.synth.exam import generate_patient


def _round(backend, cine, t1) -> list[float]:
    """One study in a fresh store: cine connection (untimed), then the T1 connection; ms per VNE."""
    with tempfile.TemporaryDirectory(prefix="vne-latency-") as store:
        core = InlineCore(CoreConfig(store_dir=Path(store)), backend=backend)
        session = core.open_session(cine.header_xml)
        for record in cine.records():
            session.feed(record)
        session.close()
        session = core.open_session(t1.header_xml)
        timings = []
        for record in t1.records():
            start = time.perf_counter()
            out = session.feed(record)
            if len(out) > 1:
                timings.append(1000.0 * (time.perf_counter() - start))
        session.close()
        return timings


def _scan(backend, cine, t1, announced: bool) -> tuple[float, int]:
    """One study in a fresh store: (ms from the last T1 image fed to the last VNE out, VNE made)."""
    header = t1.header_xml if announced else re.sub(r"(<set>.*?<maximum>)\d+(</maximum>)", r"\g<1>0\2", t1.header_xml,
                                                     flags=re.S)
    with tempfile.TemporaryDirectory(prefix="vne-latency-") as store:
        core = InlineCore(CoreConfig(store_dir=Path(store)), backend=backend)
        session = core.open_session(cine.header_xml)
        for record in cine.records():
            session.feed(record)
        session.close()
        session = core.open_session(header)
        records = t1.records()
        made = sum(len(session.feed(record)) - 1 for record in records[:-1])
        start = time.perf_counter()
        out = session.feed(records[-1])[1:] + session.close()
        return 1000.0 * (time.perf_counter() - start), made + len(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one).")
    parser.add_argument("--backend", default="onnxruntime", help="Backend name (default onnxruntime, CPU).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all).")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16, int8 or auto.")
    parser.add_argument("--scans", type=int, default=5, help="Timed scans per arrival mode.")
    parser.add_argument("--slices", type=int, default=9, help="Number of timed VNE slices.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic exam.")
    args = parser.parse_args()

    backend = load_backend(args.backend, None if args.model is None else str(args.model), args.threads, args.precision)
    with tempfile.TemporaryDirectory(prefix="vne-latency-exam-") as tmp:
        exam = generate_patient(tmp, args.seed, 0).directory
        cine, t1 = read_file(exam / "cine.h5"), read_file(exam / "t1map.h5")
    shape = t1.records()[-1].pixels.shape
    _round(backend, cine, t1)  # warm-up: first-call allocations and kernel selection
    timings: list[float] = []
    while len(timings) < args.slices:
        got = _round(backend, cine, t1)
        if not got:
            raise SystemExit("no VNE was made: check the model and the core's log")
        timings += got
    timings = timings[: args.slices]
    print(f"backend {backend.name} ({backend.detail}); model {backend.config.name}; T1 grid {shape[0]} x {shape[1]}")
    print(f"latency last T1 image -> VNE over {len(timings)} slices: median {statistics.median(timings):.0f} ms "
          f"(min {min(timings):.0f}, max {max(timings):.0f})")
    for announced in (True, False):
        scans = [_scan(backend, cine, t1, announced) for _ in range(args.scans)]
        ms = [m for m, _ in scans]
        print(f"last slice of a scan, {'announced' if announced else 'at close (one batch)'}: {scans[0][1]} VNE per "
              f"scan, median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f}) over {len(ms)} scans")


if __name__ == "__main__":
    main()
