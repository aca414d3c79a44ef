"""A real Orthanc PACS for the tests: started on free loopback ports with its own temporary
configuration and storage, read through its REST API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: DICOM on `dicom_port` (AE title `ae_title`), REST on `http_port`."""

    process: subprocess.Popen
    http_port: int
    dicom_port: int
    log: IO[bytes]
    ae_title: str = "ORTHANC"

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def series_with(self, study_uid: str) -> list[dict]:
        """Every series of the study `study_uid`, with its MainDicomTags and Instances."""
        out = []
        for sid in self.get("/series"):
            s = self.get(f"/series/{sid}")
            study = self.get(f"/studies/{s['ParentStudy']}")
            if study["MainDicomTags"].get("StudyInstanceUID") == study_uid:
                out.append(s)
        return out

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def start_orthanc(directory: Path) -> Orthanc:
    """Start Orthanc with a configuration of its own under `directory` (its database too)."""
    binary = shutil.which("Orthanc") or shutil.which("orthanc")
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed (apt-get install -y orthanc; .ci/run does it)")
    http_port, dicom_port = free_port(), free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = {"Name": "vne-inline-test", "StorageDirectory": str(directory / "db"),
              "IndexDirectory": str(directory / "db"), "HttpPort": http_port, "DicomPort": dicom_port,
              "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "Plugins": [], "DicomCheckCalledAet": False, "StorageCompression": False,
              "DicomAlwaysAllowStore": True, "HttpServerEnabled": True, "DicomServerEnabled": True}
    (directory / "orthanc.json").write_text(json.dumps(config))
    log = open(directory / "orthanc.log", "wb")  # noqa: SIM115  (lives as long as the process)
    process = subprocess.Popen([binary, str(directory / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(process, http_port, dicom_port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(f"Orthanc exited: {(directory / 'orthanc.log').read_text()[-2000:]}")
        try:
            orthanc.get("/system")
            return orthanc
        except OSError:
            time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError("Orthanc did not answer within 30 s")
