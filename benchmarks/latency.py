"""Inline latency: from the last T1-scan image of a slice fed to the core to its VNE coming out.

Generates one synthetic exam, replays its cine scan into a fresh store (untimed), then feeds the
T1-mapping scan image by image and times every ``Session.feed`` call that returns a VNE: that call
holds the whole inline path (store write, cine match and resampling, normalisation, inference,
emit). One untimed warm-up round first; then rounds until ``--slices`` VNE are timed. Prints the
median (and range) in ms. CPU by default (``--backend onnxruntime``). ``--fit-t1`` sends the T1 scan
without its maps (``t1_maps=fit``): the timed call then also fits the slice's T1 map; ``--scheme``
picks the exam's T1 sampling::

    python benchmarks/latency.py --slices 9 --threads 2 [--model x.onnx] [--fit-t1 --scheme molli-533]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from vne_inline.core.pipeline import CoreConfig, InlineCore
from vne_inline.core.roles import Role, classify
from vne_inline.infer import load_backend
from vne_inline.io.mrd_file import read_file
from vne_inline.synth.exam import generate_patient


def _round(backend, cine, t1_header, t1, t1_maps: str = "scanner") -> list[float]:
    """One study in a fresh store: cine connection (untimed), then the T1 connection; ms per VNE."""
    with tempfile.TemporaryDirectory(prefix="vne-latency-") as store:
        core = InlineCore(CoreConfig(store_dir=Path(store), t1_maps=t1_maps), backend=backend)
        session = core.open_session(cine.header_xml)
        for record in cine.records():
            session.feed(record)
        session.close()
        session = core.open_session(t1_header)
        timings = []
        for record in t1:
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
    parser.add_argument("--precision", default="fp32", help="fp32 (default), bf16, int8 or auto.")
    parser.add_argument("--slices", type=int, default=9, help="Number of timed VNE slices.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic exam.")
    parser.add_argument("--fit-t1", action="store_true", help="Send no T1 maps: the core fits them (t1_maps=fit).")
    parser.add_argument("--scheme", default="shmolli", help="T1 sampling of the exam (shmolli, molli-533, molli-3335).")
    args = parser.parse_args()

    backend = load_backend(args.backend, None if args.model is None else str(args.model), args.threads, args.precision)
    with tempfile.TemporaryDirectory(prefix="vne-latency-exam-") as tmp:
        exam = generate_patient(tmp, args.seed, 0, t1_scheme=args.scheme).directory
        cine, t1_file = read_file(exam / "cine.h5"), read_file(exam / "t1map.h5")
    t1 = [r for r in t1_file.records() if not (args.fit_t1 and classify(r) is Role.T1MAP)]
    t1_maps = "fit" if args.fit_t1 else "scanner"
    shape = t1[-1].pixels.shape
    _round(backend, cine, t1_file.header_xml, t1, t1_maps)  # warm-up: first-call allocations and kernel selection
    timings: list[float] = []
    while len(timings) < args.slices:
        got = _round(backend, cine, t1_file.header_xml, t1, t1_maps)
        if not got:
            raise SystemExit("no VNE was made: check the model and the core's log")
        timings += got
    timings = timings[: args.slices]
    print(f"backend {backend.name} ({backend.detail}); model {backend.config.name}; T1 grid {shape[0]} x {shape[1]}; "
          f"{args.scheme}, maps {'fitted inline' if args.fit_t1 else 'from the scanner'}; load average {os.getloadavg()[0]:.1f}")
    print(f"latency last T1 image -> VNE over {len(timings)} slices: median {statistics.median(timings):.0f} ms "
          f"(min {min(timings):.0f}, max {max(timings):.0f})")


if __name__ == "__main__":
    main()
