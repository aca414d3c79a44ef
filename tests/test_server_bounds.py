"""`vne-inline serve` against clients that misbehave, over real sockets: every bound holds in seconds.

One `serve` subprocess with default limits (tiny ONNX model) takes the hostile clients of each test; a
good client must still be served within the client's timeout. Bounds that need small settings to be
tested quickly (transfer rate, idle time) use the in-process server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_gadgetron import tiny_model  # noqa: F401  (a fixture)
from test_mrd_server import REPO, _collect, _wait_for_port, echoed, images, running, scan, talk, texts
from test_pipeline import CINE_HEADER, PATIENT_ID, T1_HEADER, TIS, cine_records, t1_geometry, t1_records

from vne_inline.adapters.mrd_client import exchange
from vne_inline.adapters.mrd_protocol import MessageId, MessageReader, MessageWriter
from vne_inline.geometry import plane_from_normal
from vne_inline.io import ImageRecord

CLIENT_TIMEOUT_S = 10.0
CODE = "import vne_inline.cli.server_cmds; from vne_inline.cli.app import app; app(prog_name='vne-inline')"


class Served:
    """A `vne-inline serve` subprocess on a free port."""

    def __init__(self, store: Path, weights: Path, *extra: str, home: Path | None = None) -> None:
        cmd = [sys.executable, "-c", CODE, "serve", "--port", "0", "--backend", "onnxruntime", "--model", str(weights),
               "--store", str(store), "--shutdown-timeout", "2", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **({"HOME": str(home)} if home else {})}
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env=env)
        self.lines: list[str] = []
        threading.Thread(target=_collect, args=(self.proc.stderr, self.lines), daemon=True).start()
        self.port = _wait_for_port(self.proc, self.lines, 60.0)
        self.address = ("127.0.0.1", self.port)

    def send(self, header_xml, records, **kw):
        return exchange(header_xml, records, port=self.port, timeout_s=CLIENT_TIMEOUT_S, **kw)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):  # noqa: F811
    root = tmp_path_factory.mktemp("served")
    server = Served(root / "store", tiny_model, "--threads", "1", home=root)
    yield server
    server.stop()
    log = "".join(server.lines)
    assert PATIENT_ID not in log and "Traceback" not in log, log[-3000:]


def good_client_is_served(server: Served) -> float:
    """A good exchange (two cine images) completes, echoed and closed; returns its time (s)."""
    started = time.monotonic()
    records = cine_records()[:2]
    reply = server.send(CINE_HEADER, records)
    assert reply.closed and not reply.error and len(reply.records) == 2, reply
    return time.monotonic() - started


def one_image(description: str) -> ImageRecord:
    g = t1_geometry(0.0)
    return ImageRecord.new(np.zeros(g.shape, np.uint16), g, {"GADGETRON_SeqDescription": description},
                           image_series_index=7)


# ---------------------------------------------------------------------------- bounded work per message
def test_a_long_description_and_a_client_pattern_do_not_stall_other_clients(served):
    hostile = [one_image("MOLLI" * 100000), one_image("a" * 40 + "!")]
    replies = {}
    worker = threading.Thread(target=lambda: replies.update(h=served.send(
        CINE_HEADER, hostile, parameters={"role_patterns": "^(a+)+$=cine"})))
    worker.start()
    good_client_is_served(served)
    worker.join(CLIENT_TIMEOUT_S + 5)
    reply = replies["h"]
    assert reply.closed and len(reply.records) == 2
    assert "WRN: parameter role_patterns is set by the server operator only; ignored" in reply.texts


def test_a_huge_header_is_refused_before_it_is_read(served):
    with socket.create_connection(served.address, timeout=CLIENT_TIMEOUT_S) as sock:
        w = MessageWriter(sock.sendall)
        w.config_file("vne")
        sock.sendall(struct.pack("<HI", MessageId.HEADER, 200 * 2**20) + b"M" * 2**16)
        reader = MessageReader(sock.recv)
        first, last = reader.read(), reader.read()
    assert first.id == MessageId.TEXT and first.value.startswith("ERR: HEADER of 209715200 bytes exceeds the limit")
    assert last.id == MessageId.CLOSE
    good_client_is_served(served)


def test_a_header_just_under_the_limit_is_parsed_once_and_tolerated(served):
    records = cine_records()[:1]
    reply = served.send("<" + "x" * (2**20 - 200), records)
    assert reply.closed and len(reply.records) == 1
    assert any(t.startswith("WRN: header is not ISMRMRD XML") for t in reply.texts)


@pytest.mark.parametrize(("params", "reason"), [
    ("[" * 200000, "parameters are not valid JSON (RecursionError)"),
    ('{"parameters": {"min_cosine": ' + "9" * 5000 + "}}", "parameters are not valid JSON (ValueError)"),
    (json.dumps({"parameters": {"a": [[[[[[[[[1]]]]]]]]]}}), "parameters nest deeper than 8 levels"),
], ids=["deep", "long integer", "nested"])
def test_bad_json_parameters_get_err_the_images_pass_and_close(served, params, reason):
    records = cine_records()[:2]
    msgs = talk(served.address, scan(CINE_HEADER, records, params=params), timeout_s=CLIENT_TIMEOUT_S)
    assert echoed(images(msgs), records) and msgs[-1].id == MessageId.CLOSE
    assert f"ERR: {reason}; VNE off for this connection, images pass through" in texts(msgs)


def test_a_t1_slice_of_2048_squared_is_refused_for_vne_and_passes_through(served):
    big = []
    g = t1_geometry(0.0)
    g = plane_from_normal(g.position, g.slice_dir, (300.0, 300.0, 8.0), (2048, 2048))
    for k, ti in enumerate(TIS):
        big.append(ImageRecord.new(np.ones(g.shape, np.uint16), g, {"GADGETRON_TI": f"{ti:g}"},
                                   image_series_index=2, set=k))
    big.append(ImageRecord.new(np.full(g.shape, 1000.0, np.float32), g, {"GADGETRON_DataRole": "T1"},
                               image_series_index=3))
    reply = exchange(T1_HEADER, big, port=served.port, timeout_s=60.0)
    assert reply.closed and len(reply.records) == len(big)
    assert ("WRN: T1 slice 0: no VNE: grid 2048 x 2048 exceeds the VNE limit of 512 x 512 (max_grid); images "
            "pass through") in reply.texts


# ---------------------------------------------------------------------------- slots cannot be held
def test_silent_and_trickling_clients_hold_a_slot_for_seconds_only(served):
    silent = [socket.create_connection(served.address) for _ in range(8)]
    trickle = socket.create_connection(served.address)
    stop = threading.Event()

    def drip():
        payload = struct.pack("<H", MessageId.CONFIG_FILE) + b"v" * 1024
        for byte in payload:
            if stop.wait(0.5):
                return
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                return
    threading.Thread(target=drip, daemon=True).start()
    try:
        time.sleep(0.5)  # the hostile clients are in first
        waited = good_client_is_served(served)
        assert waited < CLIENT_TIMEOUT_S
        silent[0].settimeout(CLIENT_TIMEOUT_S)
        reader = MessageReader(silent[0].recv)
        err, close = reader.read(), reader.read()
        assert err.value == "ERR: no config and header within 5 s; connection closed" and close.id == MessageId.CLOSE
    finally:
        stop.set()
        for s in [*silent, trickle]:
            s.close()


def test_a_message_below_the_minimum_rate_and_a_silent_session_are_cut(tmp_path):
    limits = {"message_grace_s": 0.5, "min_rate_bytes_s": 1000.0, "idle_timeout_s": 1.0}
    with running(tmp_path / "store", **limits) as server:
        image = cine_records()[0].to_ismrmrd()

        def slow(w: MessageWriter, send) -> None:
            w.config_file("vne")
            w.header(CINE_HEADER)
            raw = struct.pack("<H", MessageId.IMAGE) + image.to_bytes()
            for i in range(0, len(raw), 100):
                send(raw[i:i + 100])
                time.sleep(0.2)  # 500 bytes/s

        started = time.monotonic()
        msgs = talk(server.address, slow, timeout_s=CLIENT_TIMEOUT_S)
        assert texts(msgs)[-1] == "ERR: message slower than 0.976562 KiB/s; connection closed"
        assert time.monotonic() - started < CLIENT_TIMEOUT_S

        def idle(w: MessageWriter, send) -> None:
            w.config_file("vne")
            w.header(CINE_HEADER)
            time.sleep(2.0)

        msgs = talk(server.address, idle, timeout_s=CLIENT_TIMEOUT_S)
        assert texts(msgs)[-1] == "ERR: silent for 1 s; connection closed" and msgs[-1].id == MessageId.CLOSE


# ---------------------------------------------------------------------------- claims heal after a crash
def test_after_kill_9_mid_session_and_a_restart_the_resent_t1_scan_gets_its_vne(tmp_path, tiny_model):  # noqa: F811
    store = tmp_path / "store"
    first = Served(store, tiny_model, "--threads", "1")
    try:
        assert first.send(CINE_HEADER, cine_records()).closed
        sock = socket.create_connection(first.address, timeout=CLIENT_TIMEOUT_S)
        w = MessageWriter(sock.sendall)
        w.config_file("vne")
        w.header(T1_HEADER)
        for r in t1_records()[: len(TIS) + 1]:  # slice 0 complete: its VNE is being made
            w.image(r.to_ismrmrd())
        first.stop(signal.SIGKILL)
        sock.close()
    finally:
        first.stop(signal.SIGKILL)
    second = Served(store, tiny_model, "--threads", "1")
    try:
        started = time.monotonic()
        reply = second.send(T1_HEADER, t1_records())
        assert reply.closed and [v.slice for v in reply.records if v.series_index == 99] == [0, 1]
        assert time.monotonic() - started < CLIENT_TIMEOUT_S
    finally:
        second.stop()


# ---------------------------------------------------------------------------- start-up refusals, telemetry
def _serve_fails(tmp_path, *args: str) -> str:
    cmd = [sys.executable, "-c", CODE, "serve", "--port", "0", "--backend", "onnxruntime", *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_serve_refuses_a_vne_series_of_an_input_and_a_store_others_may_write_to(tmp_path):
    err = _serve_fails(tmp_path, "--store", str(tmp_path / "s"), "--property", "series_roles=3=t1map",
                       "--property", "vne_series_index=3")
    assert "vne_series_index 3 is the series of the t1map images" in err
    if os.getuid() == 0:
        loose = tmp_path / "loose"
        loose.mkdir()
        os.chown(loose, 65534, 65534)
        os.chmod(loose, 0o777)
        assert "belongs to another user and others may write to it" in _serve_fails(tmp_path, "--store", str(loose))


def test_onnx_runtime_writes_no_telemetry(tmp_path):
    code = "from vne_inline.infer import load_backend; print(load_backend('onnxruntime').name)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert done.stdout.strip() == "onnxruntime", done.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
