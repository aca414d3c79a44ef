"""Inline latency: from the last T1-scan image of a slice fed to the core to its VNE coming out.

Generates one synthetic exam, replays its cine scan into a fresh store (untimed), then feeds the
T1-mapping scan image by image and times every ``Session.feed`` call that returns a VNE: that call
holds the whole inline path (store write, cine match and resampling, normalisation, inference,
emit). One untimed warm-up round first; then rounds until ``--slices`` VNE are timed. Prints the
median (and range) in ms. CPU by default (``--backend onnxruntime``)::

    python benchmarks/latency.py --slices 9 --threads 2 [--model x.onnx]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the shipped one).")
    parser.add_argument("--backend", default="onnxruntime", help="Backend name (default onnxruntime, CPU).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all).")
    parser.add_argument("--slices", type=int, default=9, help="Number of timed VNE slices.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic exam.")
    args = parser.parse_args()

    backend = load_backend(args.backend, None if args.model is None else str(args.model), args.threads)
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


if __name__ == "__main__":
    main()
