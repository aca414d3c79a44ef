"""The MRD v1 server over real loopback sockets: in-process (fake backend) and as `vne-inline serve` (tiny model).

Exams are the small hand-built cine / T1-mapping scans of test_pipeline (3 cine slices x 10 phases; 2 T1
slices, each 5 IR images + map), sent on separate connections as a scanner would.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_pipeline import (
    CINE_HEADER,
    N_PHASES,
    T1_HEADER,
    TIS,
    VNE_SERIES,
    FakeBackend,
    cine_records,
    header,
    t1_records,
    vnes,
)

from vne_inline.adapters.mrd_client import exchange, send_file
from vne_inline.adapters.mrd_protocol import DEFAULT_PORT, Message, MessageId, MessageReader, MessageWriter
from vne_inline.adapters.mrd_server import MrdServer, ServerLimits, session_properties
from vne_inline.io.mrd_file import read_file, write_file

TIMEOUT_S = 20.0
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running(store: Path, backend=None, **limits):
    limits = {"idle_timeout_s": TIMEOUT_S, "shutdown_timeout_s": 5.0, **limits}
    server = MrdServer({"store_dir": str(store)}, backend=backend or FakeBackend(), port=0,
                       limits=ServerLimits(**limits))
    with server:
        yield server


@pytest.fixture
def server(tmp_path):
    with running(tmp_path / "store") as s:
        yield s


def talk(address, write, timeout_s: float = TIMEOUT_S) -> list[Message]:
    """One connection: `write(writer, sendall)`, half-close, then every message until the server closes."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            write(MessageWriter(sock.sendall), sock.sendall)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close first (protocol errors); its reply is still readable
            pass
        reader, out = MessageReader(sock.recv), []
        try:
            while (msg := reader.read()) is not None:
                out.append(msg)
        except ConnectionResetError:
            pass
    return out


def scan(header_xml, records, config: str = "file", params: str | None = None):
    """A `talk` writer for one scan: config, header, optional TEXT parameters, images, CLOSE."""
    def write(w: MessageWriter, send) -> None:
        w.config_file("vne") if config == "file" else w.config_text("<vne/>")
        w.header(header_xml)
        if params is not None:
            w.text(params)
        for r in records:
            w.image(r.to_ismrmrd())
        w.close()
    return write


def images(msgs: list[Message]) -> list[ismrmrd.Image]:
    return [m.value for m in msgs if m.id == MessageId.IMAGE]


def texts(msgs: list[Message]) -> list[str]:
    return [m.value for m in msgs if m.id == MessageId.TEXT]


def vnes_of(msgs: list[Message]) -> list[ismrmrd.Image]:
    return [img for img in images(msgs) if img.image_series_index == VNE_SERIES]


def echoed(returned: list[ismrmrd.Image], sent) -> bool:
    """The non-VNE images that came back are the sent ones, in order, byte for byte."""
    back = [img.to_bytes() for img in returned if img.image_series_index != VNE_SERIES]
    return back == [r.to_ismrmrd().to_bytes() for r in sent]


def good_exchange_works(server: MrdServer) -> None:
    msgs = talk(server.address, scan(CINE_HEADER, cine_records()[:2]))
    assert len(images(msgs)) == 2 and msgs[-1].id == MessageId.CLOSE


# ---------------------------------------------------------------------------- exams
@pytest.mark.parametrize("order", ["cine first", "t1 first"])
def test_cine_file_and_t1_file_on_two_connections_give_a_vne_per_t1_slice(server, tmp_path, order):
    cine_h5 = tmp_path / "cine.h5"
    t1_h5 = tmp_path / "t1.h5"
    write_file(cine_h5, CINE_HEADER, cine_records())
    write_file(t1_h5, T1_HEADER, t1_records())
    files = [cine_h5, t1_h5] if order == "cine first" else [t1_h5, cine_h5]
    host, port = server.address
    replies = [send_file(f, tmp_path / f"out-{f.name}", host=host, port=port, timeout_s=TIMEOUT_S) for f in files]
    assert all(r.closed and r.error is None for r in replies)
    first, second = replies
    assert vnes(first.records) == [] and [v.slice for v in vnes(second.records)] == [0, 1]
    saved = read_file(tmp_path / f"out-{files[1].name}")
    assert len(saved.groups[f"image_{VNE_SERIES}"]) == 2
    sent = read_file(files[1]).records()
    assert [r.data.tobytes() for r in saved.records() if r.series_index != VNE_SERIES] == [r.data.tobytes() for r in sent]
    assert sum("VNE made" in t for t in second.texts) == 2 and second.texts[-1].startswith("DBG: VNE done")
    if order == "t1 first":
        assert sum(t.startswith("WRN: T1 slice") and "no cine match yet" in t for t in first.texts) == 2
    assert all(t[:4] in ("DBG:", "WRN:") for r in replies for t in r.texts)
    assert not any("SYNTH-PATIENT" in t for r in replies for t in r.texts)


def test_a_resent_t1_file_gets_its_vne_again_and_says_so(server, tmp_path):
    t1_h5 = tmp_path / "t1.h5"
    write_file(t1_h5, T1_HEADER, t1_records())
    host, port = server.address
    send_file(t1_h5, None, host=host, port=port, timeout_s=TIMEOUT_S)  # before its cine: both slices wait
    cine = exchange(CINE_HEADER, cine_records(), host=host, port=port, timeout_s=TIMEOUT_S)
    assert [v.slice for v in vnes(cine.records)] == [0, 1]
    again = send_file(t1_h5, None, host=host, port=port, timeout_s=TIMEOUT_S)
    assert [v.slice for v in vnes(again.records)] == [0, 1]
    assert sum(t.startswith("DBG: T1 slice") and "VNE made" in t for t in again.texts) == 2
    cine = exchange(CINE_HEADER, cine_records(), host=host, port=port, timeout_s=TIMEOUT_S)
    assert vnes(cine.records) == [] and not any("T1 slice" in t for t in cine.texts)


@pytest.mark.parametrize("config", ["file", "text"])
def test_config_as_file_or_text_and_header_with_or_without_nul(server, config):
    no_nul = CINE_HEADER.encode()
    def cine_without_nul(w, send):
        w.config_file("vne") if config == "file" else w.config_text("<vne/>")
        send(struct.pack("<HI", 3, len(no_nul)) + no_nul)
        for r in cine_records():
            w.image(r.to_ismrmrd())
        w.close()
    cine = talk(server.address, cine_without_nul)
    assert echoed(images(cine), cine_records()) and cine[-1].id == MessageId.CLOSE
    msgs = talk(server.address, scan(T1_HEADER, t1_records(), config=config))
    assert echoed(images(msgs), t1_records()) and len(vnes_of(msgs)) == 2 and msgs[-1].id == MessageId.CLOSE


def test_header_that_is_not_xml_is_tolerated_within_one_connection(server):
    both = cine_records() + t1_records()
    msgs = talk(server.address, scan("this is <not XML", both))
    assert echoed(images(msgs), both) and len(vnes_of(msgs)) == 2
    assert any(t.startswith("WRN: header is not ISMRMRD XML") for t in texts(msgs))
    later = talk(server.address, scan("still not XML", t1_records()))
    assert vnes_of(later) == [] and sum("no cine match yet" in t for t in texts(later)) == 2


def test_connection_closed_right_after_the_config_is_quiet(server, caplog):
    caplog.set_level(logging.DEBUG, logger="vne_inline")
    assert talk(server.address, lambda w, send: w.config_file("vne")) == []
    close = talk(server.address, lambda w, send: (w.config_text("<vne/>"), w.close()))
    assert [m.id for m in close] == [MessageId.CLOSE]
    assert talk(server.address, lambda w, send: None) == []
    good_exchange_works(server)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_json_parameters_set_session_properties_and_operator_ones_are_refused(server):
    talk(server.address, scan(CINE_HEADER, cine_records()))
    params = '{"version": "1.1.0", "parameters": {"vne_series_index": 120, "model": "/etc/x.onnx", ' \
             '"config": "vne", "sendOriginal": "True"}}'
    msgs = talk(server.address, scan(T1_HEADER, t1_records(), params=params))
    assert [img.image_series_index for img in images(msgs)].count(120) == 2
    lines = texts(msgs)
    assert "DBG: parameters applied: vne_series_index=120" in lines
    assert "WRN: parameter model is set by the server operator only; ignored" in lines
    assert "DBG: parameters not used by VNE: sendOriginal" in lines
    bad = talk(server.address, scan(T1_HEADER, t1_records()[:1], params='{"parameters": {"min_cosine": 5}}'))
    assert any(t.startswith("WRN: parameters not applied") and "min_cosine" in t for t in texts(bad))


@pytest.mark.parametrize(("text", "error"), [
    ("[1, 2]", "parameters must be a JSON object"),
    ("{oops", "parameters are not valid JSON (JSONDecodeError)"),
    ("[" * 200000, "parameters are not valid JSON (RecursionError)"),
    ('{"a": ' + "9" * 5000 + "}", "parameters are not valid JSON (ValueError)"),
    ('{"a": [[[[[[[[[1]]]]]]]]]}', "parameters nest deeper than 8 levels"),
])
def test_session_properties_refuse_what_is_not_a_small_json_object(text, error):
    with pytest.raises(ValueError) as info:
        session_properties(text)
    assert str(info.value) == error


def test_session_properties_parsing():
    assert session_properties('{"max_distance_mm": 3, "customconfig": ""}') == ({"max_distance_mm": "3"}, [])
    props, notes = session_properties('{"role_patterns": "^(a+)+$=cine", "max_grid": 4096}')
    assert props == {} and notes == ["WRN: parameter max_grid is set by the server operator only; ignored",
                                     "WRN: parameter role_patterns is set by the server operator only; ignored"]


def test_acquisitions_and_waveforms_are_dropped_with_one_warning_each(server):
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 8), np.complex64))
    wav = ismrmrd.Waveform.from_array(np.ones((1, 4), np.uint32))
    def write(w, send):
        w.config_file("vne")
        w.header(CINE_HEADER)
        for _ in range(3):
            send(struct.pack("<H", 1008) + acq.to_bytes())
        send(struct.pack("<H", 1026) + wav.to_bytes())
        w.image(cine_records()[0].to_ismrmrd())
        w.close()
    msgs = talk(server.address, write)
    assert len(images(msgs)) == 1 and msgs[-1].id == MessageId.CLOSE
    warnings = [t for t in texts(msgs) if "not processed by VNE" in t]
    assert len(warnings) == 2 and "acquisition" in warnings[0] and "waveform" in warnings[1]


# ---------------------------------------------------------------------------- errors and limits
def test_unusable_store_disables_vne_but_images_pass_through(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):  # refused at start-up ...
        running(blocker / "store").__enter__()
    store = tmp_path / "store"
    with running(store) as server:
        store.rmdir()
        store.write_text("")  # ... and when it breaks later, per connection
        msgs = talk(server.address, scan(T1_HEADER, t1_records()))
    assert echoed(images(msgs), t1_records()) and msgs[-1].id == MessageId.CLOSE
    assert texts(msgs)[0].startswith("ERR: VNE disabled for this connection, images pass through")


ONE_IMAGE = cine_records()[0].to_ismrmrd()


def _bad_dtype_image() -> bytes:
    head = ismrmrd.ImageHeader()
    head.data_type = 99
    return struct.pack("<H", 1022) + bytes(head) + struct.pack("<Q", 0)


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        (struct.pack("<HI", 5, 2**31), "exceeds the limit"),
        (struct.pack("<H", 1022) + bytes(ONE_IMAGE.getHead()) + struct.pack("<Q", 2**40), "exceeds the limit"),
        (struct.pack("<H", 777) + b"junk", "unknown message id 777"),
        (_bad_dtype_image(), "unknown data type 99"),
        (struct.pack("<HI", 3, 4) + b"<x/>", "unexpected HEADER"),
    ],
    ids=["oversized text", "oversized attributes", "unknown id", "bad data type", "second header"],
)
def test_bad_messages_get_err_and_close_and_the_server_goes_on(tmp_path, tail, error):
    with running(tmp_path / "store", max_message_bytes=2**20) as server:
        def write(w, send):
            w.config_file("vne")
            w.header(CINE_HEADER)
            w.image(ONE_IMAGE)
            send(tail)
        msgs = talk(server.address, write)
        assert len(images(msgs)) == 1 and msgs[-1].id == MessageId.CLOSE
        assert texts(msgs)[-1].startswith("ERR: ") and error in texts(msgs)[-1]
        good_exchange_works(server)


def test_data_before_the_config_is_an_error(server):
    msgs = talk(server.address, lambda w, send: w.image(ONE_IMAGE))
    assert texts(msgs) == ["ERR: expected CONFIG_FILE or CONFIG_TEXT first, got IMAGE; connection closed"]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with running(tmp_path_factory.mktemp("fuzz") / "store", max_message_bytes=2**16,
                 idle_timeout_s=5.0) as server:
        yield server


GOOD = b"".join([struct.pack("<H", 1) + b"vne".ljust(1024, b"\0"),
                 struct.pack("<HI", 3, len(CINE_HEADER) + 1) + CINE_HEADER.encode() + b"\0",
                 struct.pack("<H", 1022) + ONE_IMAGE.to_bytes(), struct.pack("<H", 4)])
PREFIX = GOOD[:GOOD.index(struct.pack("<H", 1022) + ONE_IMAGE.to_bytes())]
STREAMS = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=400).map(lambda b: PREFIX + b),
    st.integers(1, len(GOOD) - 1).map(lambda n: GOOD[:n]),
    st.tuples(st.sampled_from([2, 3, 5]), st.integers(2**16, 2**32 - 1)).map(
        lambda t: PREFIX + struct.pack("<HI", *t) + b"x" * 100),
    st.tuples(st.integers(0, len(GOOD) - 3), st.binary(min_size=1, max_size=8)).map(
        lambda t: GOOD[:t[0]] + t[1] + GOOD[t[0] + len(t[1]):]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=STREAMS)
def test_fuzzed_streams_never_hang_or_crash_the_server(fuzz_server, data):
    msgs = talk(fuzz_server.address, lambda w, send: send(data), timeout_s=10.0)
    errors = [t for t in texts(msgs) if t.startswith("ERR:")]
    event(f"reply: {errors[0].split(':')[1].split()[0] if errors else 'no ERR'}, "
          f"{'CLOSE' if msgs and msgs[-1].id == MessageId.CLOSE else 'no CLOSE'}")
    if errors:
        assert len(errors) == 1 and msgs[-1].id == MessageId.CLOSE
    assert fuzz_server._runner.is_alive()


def test_fuzz_server_still_answers_a_good_client(fuzz_server):
    good_exchange_works(fuzz_server)


# ---------------------------------------------------------------------------- concurrency and shutdown
def test_eight_concurrent_clients_lose_no_image(tmp_path):
    studies = [f"2.25.77{i}" for i in range(4)]
    jobs = [(header(n_phases=N_PHASES, uid=uid), cine_records()) for uid in studies] + \
           [(header(n_sets=len(TIS), uid=uid), t1_records()) for uid in studies]
    replies: list = [None] * len(jobs)
    backend = FakeBackend()
    with running(tmp_path / "store", backend=backend, max_clients=8) as server:
        start = threading.Barrier(len(jobs))

        def client(i):
            start.wait()
            replies[i] = exchange(jobs[i][0], jobs[i][1], *server.address, timeout_s=60.0)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(90.0)
        elapsed = time.perf_counter() - t0
    assert all(r is not None and r.closed and r.error is None for r in replies)
    for (_, sent), reply in zip(jobs, replies, strict=True):
        back = [r for r in reply.records if r.series_index != VNE_SERIES]
        assert len(back) == len(reply.records) - len(vnes(reply.records)) == len(sent)
        assert [b.data.tobytes() for b in back] == [s.data.tobytes() for s in sent]
    per_study = [len(vnes(replies[i].records)) + len(vnes(replies[i + 4].records)) for i in range(4)]
    assert per_study == [2, 2, 2, 2] and backend.calls == 8
    print(f"8 concurrent clients: {elapsed:.2f} s")


def test_clients_beyond_max_clients_wait_their_turn(tmp_path):
    with running(tmp_path / "store", max_clients=1) as server:
        results = [None] * 3

        def client(i):
            results[i] = exchange(CINE_HEADER, cine_records()[:5], *server.address, timeout_s=30.0)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40.0)
    assert all(r.closed and len(r.records) == 5 for r in results)


def test_stop_refuses_new_clients_and_lets_open_sessions_finish(tmp_path):
    with running(tmp_path / "store") as server:
        sock = socket.create_connection(server.address, timeout=TIMEOUT_S)
        w = MessageWriter(sock.sendall)
        w.config_file("vne")
        w.header(CINE_HEADER)
        records = cine_records()[:4]
        w.image(records[0].to_ismrmrd())
        server.stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(server.address, timeout=1).close()
                time.sleep(0.05)
            except ConnectionRefusedError:
                break
        else:
            pytest.fail("server still accepting after stop()")
        for r in records[1:]:
            w.image(r.to_ismrmrd())
        w.close()
        reader, msgs = MessageReader(sock.recv), []
        while (msg := reader.read()) is not None:
            msgs.append(msg)
        sock.close()
        assert echoed(images(msgs), records) and msgs[-1].id == MessageId.CLOSE
        server._runner.join(5.0)
        assert not server._runner.is_alive()


def test_sessions_still_open_after_the_shutdown_timeout_are_cut(tmp_path):
    with running(tmp_path / "store", shutdown_timeout_s=0.3) as server:
        sock = socket.create_connection(server.address, timeout=TIMEOUT_S)
        MessageWriter(sock.sendall).config_file("vne")
        t0 = time.monotonic()
        server.stop()
        server._runner.join(10.0)
        assert not server._runner.is_alive() and time.monotonic() - t0 < 5.0
        assert sock.recv(10) == b""
        sock.close()


# ---------------------------------------------------------------------------- the command
def _send_cli(args):
    from typer.testing import CliRunner

    from vne_inline.cli import server_cmds  # noqa: F401  (registers serve and send)
    from vne_inline.cli.app import app

    return CliRunner().invoke(app, ["send", *args], env={"COLUMNS": "200"})


def test_cli_send_exit_status_tells_whether_vne_was_made(server, tmp_path):
    cine_h5, t1_h5, raw = tmp_path / "cine.h5", tmp_path / "t1.h5", tmp_path / "meas.h5"
    write_file(cine_h5, CINE_HEADER, cine_records())
    write_file(t1_h5, T1_HEADER, t1_records())
    with ismrmrd.Dataset(str(raw), "dataset", create_if_needed=True) as ds:
        ds.append_acquisition(ismrmrd.Acquisition.from_array(np.zeros((1, 16), np.complex64)))
    with running(tmp_path / "empty-store") as fresh:  # no cine in its store
        alone = _send_cli([str(t1_h5), "--out", str(tmp_path / "a.h5"), "--port", str(fresh.address[1])])
    assert alone.exit_code == 3, alone.output
    assert "error: no VNE made from the T1-map slices sent: T1 slice 0: no VNE:" in alone.output
    port = ["--port", str(server.address[1])]
    assert _send_cli([str(cine_h5), "--out", str(tmp_path / "b.h5"), *port]).exit_code == 0
    made = _send_cli([str(t1_h5), "--out", str(tmp_path / "e.h5"), *port])
    assert made.exit_code == 0 and "(2 VNE)" in made.output, made.output
    refused = _send_cli([str(t1_h5), "--out", str(t1_h5), *port])
    assert refused.exit_code == 2 and "is the input file" in refused.output
    assert _send_cli([str(raw), "--out", str(tmp_path / "c.h5"), *port]).exit_code == 2
    dead = _send_cli([str(t1_h5), "--out", str(tmp_path / "d.h5"), "--port", "1", "--timeout", "2"])
    assert dead.exit_code == 1 and "send failed" in dead.output


def test_cli_port_default_matches_the_protocol():
    from vne_inline.cli.server_cmds import DEFAULT_PORT as CLI_PORT

    assert CLI_PORT == DEFAULT_PORT


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from vne_inline.model.generator import VNEGenerator, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_weights(VNEGenerator(FakeBackend().config), path)
    return path


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def _wait_for_port(proc: subprocess.Popen, lines: list[str], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        for line in list(lines):
            if m := re.search(r"listening on [\d.]+:(\d+)", line):
                return int(m.group(1))
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server did not start: {''.join(lines)[-2000:]}")


def test_vne_inline_serve_subprocess_and_sigterm(tmp_path, tiny_weights):
    cine_h5, t1_h5 = tmp_path / "cine.h5", tmp_path / "t1.h5"
    write_file(cine_h5, CINE_HEADER, cine_records())
    write_file(t1_h5, T1_HEADER, t1_records())
    code = "import vne_inline.cli.server_cmds; from vne_inline.cli.app import app; app(prog_name='vne-inline')"
    cmd = [sys.executable, "-c", code, "serve", "--port", "0", "--backend", "pytorch", "--model", str(tiny_weights),
           "--store", str(tmp_path / "store"), "--shutdown-timeout", "5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    collector = threading.Thread(target=_collect, args=(proc.stderr, lines), daemon=True)
    collector.start()
    try:
        port = _wait_for_port(proc, lines, 60.0)
        send_file(cine_h5, None, port=port, timeout_s=60.0)
        reply = send_file(t1_h5, tmp_path / "out.h5", port=port, timeout_s=60.0)
        assert reply.closed and [v.slice for v in vnes(reply.records)] == [0, 1]
        assert all(np.isfinite(v.pixels).all() for v in vnes(reply.records))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        collector.join(5.0)
        log = "".join(lines)
        assert "MRD server stopped" in log and "SYNTH-PATIENT" not in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
