"""DICOM node latency: from the last T1-mapping image received by the node to the VNE series stored
in a real PACS (Orthanc).

Per round, in a fresh store and spool: the cine series is C-STOREd to the node (untimed); then the
T1-mapping series (IR images and map) in one association, as a scanner sends a finished scan. The
clock starts at the C-STORE response to the last T1 image and stops when Orthanc has confirmed the
last VNE of the study (its C-STORE response to the node). Prints the median and range in ms. The
exam is one synthetic patient written as DICOM (or ``--exam DIR``); the model is the shipped default
on ONNX Runtime unless told otherwise. Needs Orthanc (``apt-get install -y orthanc``)::

    python benchmarks/dicom_node_latency.py --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from orthanc import free_port, start_orthanc  # noqa: E402  (the test suite's Orthanc launcher)

from vne_inline.adapters.dicom_node import Destination, DicomNode, NodeConfig  # noqa: E402
from vne_inline.core.roles import Role, classify  # noqa: E402
from vne_inline.infer import load_backend  # noqa: E402
from vne_inline.io.dicom import read_dicom_folder  # noqa: E402


def _send(address, ae_title: str, files: list[Path]) -> float:
    """C-STORE `files` in one association; the time (perf_counter) of the last response."""
    ae = AE(ae_title="BENCH_SCU")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate(*address, ae_title=ae_title)
    if not assoc.is_established:
        raise SystemExit("the node refused the association")
    datasets = [pydicom.dcmread(p) for p in files]
    last = 0.0
    for ds in datasets:
        status = getattr(assoc.send_c_store(ds), "Status", None)
        if status != 0:
            raise SystemExit(f"the node did not store an image ({'no response' if status is None else hex(status)})")
        last = time.perf_counter()
    assoc.release()
    return last


def _split(exam: Path) -> tuple[list[Path], list[Path], int]:
    """Cine files, T1-mapping files (IR images and maps) and the number of T1 maps of a DICOM exam."""
    cine, t1, maps = [], [], 0
    for series in read_dicom_folder(exam).series:
        roles = {classify(r) for r in series.records}
        files = sorted({p for p in exam.rglob("*.dcm")
                        if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == series.uid})
        if Role.CINE in roles:
            cine += files
        elif roles & {Role.IR, Role.T1MAP}:
            t1 += files
            maps += sum(classify(r) is Role.T1MAP for r in series.records)
    return cine, t1, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exam", type=Path, help="DICOM folder of one study (default: a synthetic patient)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vne-node-bench-") as tmp:
        tmp = Path(tmp)
        exam = args.exam
        if exam is None:
            from vne_inline.synth.exam import generate_patient

            exam = generate_patient(tmp / "exam", seed=0, index=0, formats=("dicom",)).directory / "dicom"
        cine, t1, n_maps = _split(exam)
        backend = load_backend(args.backend, None if args.model is None else str(args.model), args.threads)
        pacs = start_orthanc(tmp / "orthanc")
        timings = []
        try:
            for k in range(args.rounds + 1):  # round 0 warms up the backend and Orthanc
                config = NodeConfig(spool=tmp / f"spool{k}", port=free_port(), series_idle_s=60.0,
                                    forward=Destination("127.0.0.1", pacs.dicom_port, pacs.ae_title))
                with DicomNode(config, {"store_dir": str(tmp / f"store{k}")}, backend=backend) as node:
                    _send(node.address, config.ae_title, cine)
                    while node.processed < 1:
                        time.sleep(0.01)
                    last = _send(node.address, config.ae_title, t1)
                    while node.forwarded < n_maps:
                        time.sleep(0.002)
                    done = time.perf_counter()
                if k:
                    timings.append(1000.0 * (done - last))
                    print(f"round {k}: {timings[-1]:.0f} ms for {n_maps} VNE", flush=True)
        finally:
            pacs.stop()
    print(f"last T1 image in -> {n_maps} VNE stored in Orthanc: median {statistics.median(timings):.0f} ms "
          f"(range {min(timings):.0f}-{max(timings):.0f} ms, {len(timings)} rounds, backend {backend.name}, "
          f"{args.threads} threads)")


if __name__ == "__main__":
    main()
