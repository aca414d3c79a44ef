"""The DICOM node with a real PACS: exams C-STOREd to the node (pynetdicom, dcmtk's storescu), VNE
forwarded to Orthanc and read back through its REST API; restart, queue, refusal, SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_builders import write_exam
from orthanc import free_port, start_orthanc
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, SecondaryCaptureImageStorage
from test_pipeline import FakeBackend, cine_records, t1_records

from vne_inline.adapters.dicom_node import Destination, DicomNode, NodeConfig

T1_OFFSETS = (0.0, 8.0, 16.0)


def _dcmtk(name: str) -> str | None:
    """dcmtk's tool (Debian installs it in /usr/bin; another `storescu` may come first on PATH)."""
    return f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else shutil.which(name)


CINE_OFFSETS = (1.0, 9.0, 17.0)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    try:
        pacs = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield pacs
    pacs.stop()


@pytest.fixture
def exam(tmp_path):
    """A three-slice exam (Siemens-like series) of a fresh study: (folder, study UID)."""
    study = generate_uid()
    write_exam(tmp_path / "exam", cine_records(CINE_OFFSETS), t1_records(T1_OFFSETS), "siemens", study_uid=study)
    return tmp_path / "exam", study


def _node(tmp_path, forward, **kw) -> DicomNode:
    config = NodeConfig(spool=tmp_path / "spool", port=free_port(), forward=forward, series_idle_s=30.0,
                        retry_initial_s=0.2, shutdown_timeout_s=10.0, **kw)
    return DicomNode(config, {"store_dir": str(tmp_path / "store")}, backend=FakeBackend()).start()


def _send(node: DicomNode, folder: Path) -> int:
    """C-STORE every file under `folder` in one association; the count accepted."""
    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate(*node.address, ae_title=node.config.ae_title)
    assert assoc.is_established
    ok = sum(assoc.send_c_store(pydicom.dcmread(p)).Status == 0 for p in sorted(folder.rglob("*.dcm")))
    assoc.release()
    return ok


def _wait(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _vne_series(orthanc, study):
    return [s for s in orthanc.series_with(study) if s["MainDicomTags"].get("SeriesDescription", "").endswith("_VNE")]


def _check_geometry(orthanc, series, folder):
    maps = [pydicom.dcmread(p) for p in (folder / "t1").rglob("*.dcm")]
    for iid in series["Instances"]:
        tags = orthanc.get(f"/instances/{iid}/simplified-tags")
        ipp = np.array([float(v) for v in tags["ImagePositionPatient"].split("\\")])
        m = min(maps, key=lambda d: np.linalg.norm(np.asarray(d.ImagePositionPatient, float) - ipp))
        np.testing.assert_allclose(ipp, np.asarray(m.ImagePositionPatient, float), atol=0.01)
        iop = [float(v) for v in tags["ImageOrientationPatient"].split("\\")]
        np.testing.assert_allclose(iop, np.asarray(m.ImageOrientationPatient, float), atol=1e-6)
        spacing = [float(v) for v in tags["PixelSpacing"].split("\\")]
        np.testing.assert_allclose(spacing, np.asarray(m.PixelSpacing, float), atol=1e-6)
        assert tags["StudyInstanceUID"] == m.StudyInstanceUID and tags["FrameOfReferenceUID"] == m.FrameOfReferenceUID


def test_exam_to_node_vne_series_in_orthanc(tmp_path, orthanc, exam, caplog):
    folder, study = exam
    caplog.set_level("INFO")
    with _node(tmp_path, Destination("127.0.0.1", orthanc.dicom_port, orthanc.ae_title)) as node:
        assert _send(node, folder / "cine") == 30
        assert _send(node, folder / "ir") + _send(node, folder / "t1") == 18
        assert _wait(lambda: node.forwarded == 3)
    (series,) = _vne_series(orthanc, study)
    assert len(series["Instances"]) == 3
    _check_geometry(orthanc, series, folder)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("vne_inline")]
    made = [x for x in lines if "VNE made" in x]
    # the IR series, sent before its map, waits for the map series (map_wait_s) instead of being fitted
    assert sorted(x.split(":")[0] for x in made) == ["T1 slice 0", "T1 slice 1", "T1 slice 2"]
    assert not any("fitted" in x for x in made)
    assert any("waiting up to 30 s for the map series" in x for x in lines)
    assert not any("Doe" in x or "PID-12345" in x for x in lines)  # no PHI in the logs
    assert not list((tmp_path / "spool" / "outbox").glob("*.dcm"))


def test_ir_series_without_map_gets_fitted_maps_and_vne_after_the_wait(tmp_path, orthanc, exam):
    folder, study = exam
    with _node(tmp_path, Destination("127.0.0.1", orthanc.dicom_port, orthanc.ae_title), map_wait_s=0.5) as node:
        assert _send(node, folder / "cine") == 30
        assert _send(node, folder / "ir") == 15
        assert _wait(lambda: node.forwarded == 6)  # 3 fitted maps, then their 3 VNE
    series = {s["MainDicomTags"]["SeriesDescription"]: s for s in orthanc.series_with(study)}
    ir_description = pydicom.dcmread(next((folder / "ir").rglob("*.dcm"))).SeriesDescription
    maps, vne = series[f"{ir_description}_T1FIT"], series[f"{ir_description}_VNE"]
    assert len(maps["Instances"]) == len(vne["Instances"]) == 3
    map_uids = {orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in maps["Instances"]}
    for iid in vne["Instances"]:
        sources = orthanc.get(f"/instances/{iid}/simplified-tags")["SourceImageSequence"]
        assert sources[0]["ReferencedSOPInstanceUID"] in map_uids  # the VNE names its fitted map
    _check_geometry(orthanc, vne, folder)


def test_ir_series_waiting_for_its_map_survives_a_restart(tmp_path, orthanc, exam, caplog):
    folder, study = exam
    caplog.set_level("INFO")
    pacs = Destination("127.0.0.1", orthanc.dicom_port, orthanc.ae_title)
    with _node(tmp_path, pacs, map_wait_s=60.0) as node:
        assert _send(node, folder / "cine") + _send(node, folder / "ir") == 45
        assert _wait(lambda: node.processed == 2)
    assert node.forwarded == 0  # stopped while the IR series waited for its map
    with _node(tmp_path, pacs, map_wait_s=0.5) as node:  # the pending IR series waits again, then is fitted
        assert _wait(lambda: node.forwarded == 6)
    made = [r.getMessage() for r in caplog.records if "VNE made" in r.getMessage()]
    assert len(made) == 3 and all("fitted" in x for x in made)


def test_restart_between_cine_and_t1_and_queue_survives_a_down_pacs(tmp_path, orthanc, exam):
    folder, study = exam
    with _node(tmp_path, Destination("127.0.0.1", orthanc.dicom_port, orthanc.ae_title)) as node:
        assert _send(node, folder / "cine") == 30
        assert _wait(lambda: node.processed == 1)
    down = Destination("127.0.0.1", free_port(), "NOBODY")  # nothing listens there
    with _node(tmp_path, down) as node:  # a fresh process state on the same store and spool
        assert _send(node, folder / "t1") + _send(node, folder / "ir") == 18
        assert _wait(lambda: len(list((tmp_path / "spool" / "outbox").glob("*.dcm"))) == 3)
        assert node.forwarded == 0
    assert _vne_series(orthanc, study) == []
    with _node(tmp_path, Destination("127.0.0.1", orthanc.dicom_port, orthanc.ae_title)) as node:
        assert _wait(lambda: node.forwarded == 3)  # the queued VNE go out after the restart
    (series,) = _vne_series(orthanc, study)
    assert len(series["Instances"]) == 3
    _check_geometry(orthanc, series, folder)


def test_non_image_sop_classes_are_refused(tmp_path):
    with _node(tmp_path, None) as node:
        ae = AE(ae_title="TEST_SCU")
        ae.add_requested_context(SecondaryCaptureImageStorage)
        assoc = ae.associate(*node.address, ae_title=node.config.ae_title)
        accepted = assoc.accepted_contexts if assoc.is_established else []
        if assoc.is_established:
            assoc.release()
        assert accepted == []
        assert not list((tmp_path / "spool" / "incoming").rglob("*.dcm"))


@pytest.mark.skipif(_dcmtk("storescu") is None, reason="dcmtk not installed (.ci/run installs it)")
def test_cli_node_takes_storescu_and_finishes_on_sigterm(tmp_path, exam):
    folder, _ = exam
    port = free_port()
    env = {**os.environ, "VNE_INLINE_STORE": str(tmp_path / "store"), "PYTHONPATH": os.getcwd()}
    node = subprocess.Popen([sys.executable, "-m", "vne_inline.cli", "dicom-node", "--port", str(port),
                             "--spool", str(tmp_path / "spool"), "--backend", "onnxruntime", "--threads", "1",
                             "--series-idle", "60"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            echo = subprocess.run([_dcmtk("echoscu"), "-aec", "VNE_INLINE", "127.0.0.1", str(port)], capture_output=True)
            if echo.returncode == 0:
                break
            time.sleep(0.3)
        sent = subprocess.run([_dcmtk("storescu"), "-aec", "VNE_INLINE", "+sd", "+r", "127.0.0.1", str(port), str(folder)],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        node.send_signal(signal.SIGTERM)
        out, _ = node.communicate(timeout=120)
    finally:
        if node.poll() is None:
            node.kill()
    assert node.returncode == 0, out
    assert "DICOM node stopped: 3 series processed" in out
    assert sum("T1 slice" in line for line in out.splitlines()) == 3  # one line per slice, made or not
    assert "Traceback" not in out and "Doe" not in out and "PID-12345" not in out
    assert len(list((tmp_path / "spool" / "outbox").glob("*.dcm"))) == sum("VNE made" in x for x in out.splitlines())
