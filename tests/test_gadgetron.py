"""The Gadgetron gadget over real sockets with the real `gadgetron` package, this test playing Gadgetron 4.x.

Execute mode: like Gadgetron's External node, the test listens on a port, starts
``python -m gadgetron PORT vne_inline.gadgetron handle`` (which connects out to it), sends CONFIG (the
``<configuration>`` element as pugixml saves it), HEADER, the images and CLOSE, and reads the replies
until CLOSE. Connect mode: the test connects to ``vne-inline gadgetron-worker`` the same way. Every
scan is its own connection (and, in execute mode, its own process); the store directory is shared
through the ``store_dir`` property. The exams are the hand-built ones of ``test_pipeline``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from xml.sax.saxutils import quoteattr

import ismrmrd
import numpy as np
import pytest
from gadgetron.external.writers import write_array
from gadgetron.types.image_array import ImageArray, read_image_array, write_image_array
from test_pipeline import (  # the shared exam builders
    CINE_HEADER,
    PATIENT_ID,
    STUDY_UID,
    T1_HEADER,
    TIS,
    VNE_SERIES,
    cine_records,
    header,
    t1_records,
)

from vne_inline import gadgetron as gadget
from vne_inline.core.pipeline import PROPERTIES, CoreConfig
from vne_inline.geometry import plane_from_normal
from vne_inline.io import ImageRecord

ID = struct.Struct("<H")
U32 = struct.Struct("<I")
CONFIG, HEADER, CLOSE, IMAGE, IMAGE_ARRAY, ACQUISITION = 2, 3, 4, 1022, 1024, 1008
TIMEOUT_S = 90.0
MODEL_NAME = "tiny-gadgetron-test"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "gadgetron_config"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random generator exported to ONNX (the real export path; about 15 s once per session)."""
    torch = pytest.importorskip("torch")
    from vne_inline.infer.export import export_onnx
    from vne_inline.model.generator import VNEGenerator
    from vne_inline.modelspec import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(n_cine_frames=4, n_ir_images=3, base_width=4, depth=2, fusion_width=8, name=MODEL_NAME)
    return export_onnx(VNEGenerator(config), tmp_path_factory.mktemp("model") / "tiny.onnx")


def shipped_config(name: str) -> ET.Element:
    """The root of a stream configuration in gadgetron_config/."""
    return ET.parse(CONFIG_DIR / name).getroot()


def shipped_properties(name: str) -> dict[str, str]:
    """The <property> elements of the shipped configuration's external step, as its module reads them."""
    return gadget.properties(shipped_config(name).find("stream/external/configuration"))


def props(tmp_path: Path, model: Path, **extra) -> dict[str, str]:
    """The shipped execute-mode properties with this test's model, backend and store."""
    return {**shipped_properties("vne_inline_execute.xml"), "model": str(model), "backend": "onnxruntime",
            "threads": "1", "store_dir": str(tmp_path / "store"), "vne_series_index": str(VNE_SERIES),
            **{k: str(v) for k, v in extra.items()}}


# ---------------------------------------------------------------------------- Gadgetron's side of the wire
def config_message(properties: dict[str, str]) -> bytes:
    """CONFIG as Gadgetron sends it: the <configuration> node saved by pugixml, uint32 length first."""
    lines = "".join(f"\t<property name={quoteattr(k)} value={quoteattr(v)} />\n" for k, v in properties.items())
    xml = f'<?xml version="1.0"?>\n<configuration>\n{lines}</configuration>\n'.encode()
    return ID.pack(CONFIG) + U32.pack(len(xml)) + xml


def header_message(xml: str) -> bytes:
    data = xml.encode()
    return ID.pack(HEADER) + U32.pack(len(data)) + data


def image_message(record: ImageRecord) -> bytes:
    return ID.pack(IMAGE) + record.to_ismrmrd().to_bytes()


def array_message(array: ImageArray) -> bytes:
    out = io.BytesIO()
    write_image_array(out, array)  # writes the id itself
    return out.getvalue()


class _Exact:
    """Exact reads from a socket (EOFError when it closes early)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("external module closed the connection before CLOSE")
            buf += chunk
        return bytes(buf)


def exchange(sock: socket.socket, config: bytes, header_xml: str, messages: list[bytes]) -> list[object]:
    """Send a whole scan from a thread (as Gadgetron does, concurrently with reading) and read every
    reply up to CLOSE."""
    sock.settimeout(TIMEOUT_S)
    failures: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(config + header_message(header_xml) + b"".join(messages) + ID.pack(CLOSE))
        except OSError as exc:
            failures.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reader, replies = _Exact(sock), []
    while True:
        (mid,) = ID.unpack(reader.read(2))
        if mid == CLOSE:
            break
        if mid == IMAGE:
            replies.append(ismrmrd.Image.deserialize_from(reader.read))
        elif mid == IMAGE_ARRAY:
            replies.append(read_image_array(reader))
        elif mid == ACQUISITION:
            replies.append(ismrmrd.Acquisition.deserialize_from(reader.read))
        else:
            raise AssertionError(f"unexpected message id {mid}")
    sender.join(TIMEOUT_S)
    assert not failures, failures
    return replies


@dataclass
class Scan:
    header: str
    messages: list[bytes]
    sent: list[object]  # what each message carries (ImageRecord, ImageArray or Acquisition)


def scan(header_xml: str, items: list) -> Scan:
    writers = {ImageRecord: image_message, ImageArray: array_message,
               ismrmrd.Acquisition: lambda a: ID.pack(ACQUISITION) + a.to_bytes()}
    return Scan(header_xml, [writers[type(i)](i) for i in items], items)


@contextlib.contextmanager
def external_module(tmp_path: Path) -> Iterator[tuple[socket.socket, subprocess.Popen, Path]]:
    """Start the external module as Gadgetron does (it connects out to our port); yields the accepted
    socket, the process and its log file; the process is killed if it outlives the block."""
    log_path = tmp_path / f"external-{time.monotonic_ns()}.log"
    with socket.create_server(("127.0.0.1", 0)) as server, open(log_path, "w") as log_file:
        server.settimeout(TIMEOUT_S)
        env = {**os.environ, "GADGETRON_EXTERNAL_LOG_LEVEL": "INFO"}
        process = subprocess.Popen(
            [sys.executable, "-m", "gadgetron", str(server.getsockname()[1]), "vne_inline.gadgetron", "handle"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            sock, _ = server.accept()
            with sock:
                yield sock, process, log_path
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_execute(tmp_path: Path, properties: dict[str, str], one_scan: Scan) -> tuple[list[object], str]:
    """One connection in execute mode: a fresh `python -m gadgetron` process, as Gadgetron starts it."""
    with external_module(tmp_path) as (sock, process, log_path):
        replies = exchange(sock, config_message(properties), one_scan.header, one_scan.messages)
        assert process.wait(TIMEOUT_S) == 0
    return replies, log_path.read_text()


# ---------------------------------------------------------------------------- checks
def as_bytes(item) -> bytes:
    return item.to_ismrmrd().to_bytes() if isinstance(item, ImageRecord) else item.to_bytes()


def same_array(a: ImageArray, b: ImageArray) -> bool:
    return (np.array_equal(a.data, b.data) and a.meta == b.meta
            and [bytes(h) for h in np.asarray(a.headers).flat] == [bytes(h) for h in np.asarray(b.headers).flat])


def split(replies: list[object]) -> tuple[list[object], list[ImageRecord]]:
    """(pass-through replies in order, VNE images)."""
    def is_vne(r) -> bool:
        return isinstance(r, ismrmrd.Image) and r.getHead().image_series_index == VNE_SERIES

    return [r for r in replies if not is_vne(r)], [ImageRecord.from_ismrmrd(r) for r in replies if is_vne(r)]


def assert_all_back(passed: list[object], sent: list[object]) -> None:
    """Every input came back unchanged, in order (images byte for byte, arrays field by field)."""
    assert len(passed) == len(sent)
    for got, want in zip(passed, sent, strict=True):
        if isinstance(want, ImageArray):
            assert isinstance(got, ImageArray) and same_array(got, want)
        else:
            assert as_bytes(got) == as_bytes(want)


def assert_vne_on_t1_maps(vnes: list[ImageRecord], t1: list[ImageRecord]) -> None:
    """One VNE per T1 slice, with the map's geometry and indices and the documented meta."""
    maps = {r.slice: r for r in t1 if r.meta.get("GADGETRON_DataRole") == "T1"}
    assert sorted(v.slice for v in vnes) == sorted(maps)
    for v in vnes:
        m = maps[v.slice]
        for name in ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view"):
            np.testing.assert_allclose(getattr(v.head, name)[:], getattr(m.head, name)[:], atol=1e-5)
        assert v.pixels.shape == m.pixels.shape and v.data.dtype == np.float32 and np.isfinite(v.data).all()
        assert v.image_type == ismrmrd.IMTYPE_MAGNITUDE and v.series_index == VNE_SERIES
        assert v.meta["GADGETRON_DataRole"] == "VNE" and v.meta["DataRole"] == "VNE"
        assert v.meta["GADGETRON_SeqDescription"] == "ShMOLLI_T1MAP_VNE"
        assert v.meta["GADGETRON_ImageProcessingHistory"][-1] == "VNE"
        assert "VNE" in v.meta["GADGETRON_ImageComment"] and MODEL_NAME in v.meta["GADGETRON_ImageComment"]
        assert {"GADGETRON_WindowCenter", "GADGETRON_WindowWidth", "WindowCenter", "WindowWidth"} <= set(v.meta)


def assert_no_patient_data(log_text: str) -> None:
    assert PATIENT_ID not in log_text and STUDY_UID not in log_text


CINE = scan(CINE_HEADER, cine_records())
T1 = scan(T1_HEADER, t1_records())


# ---------------------------------------------------------------------------- execute mode
def test_cine_then_t1_on_separate_connections_gives_one_vne_per_t1_slice(tmp_path, tiny_model):
    p = props(tmp_path, tiny_model)
    replies, log1 = run_execute(tmp_path, p, CINE)
    passed, vnes = split(replies)
    assert_all_back(passed, CINE.sent)
    assert not vnes
    replies, log2 = run_execute(tmp_path, p, T1)
    passed, vnes = split(replies)
    assert_all_back(passed, T1.sent)
    assert_vne_on_t1_maps(vnes, T1.sent)
    # each VNE follows its own T1 map (made while streaming, not held back to the end)
    for v in vnes:
        after_map = [i for i, r in enumerate(replies) if isinstance(r, ismrmrd.Image)
                     and r.meta.get("GADGETRON_DataRole") == "T1" and r.getHead().slice == v.slice][0] + 1
        assert ImageRecord.from_ismrmrd(replies[after_map]).series_index == VNE_SERIES
    assert "VNE made" in log2 and "connection done" in log2
    assert_no_patient_data(log1 + log2)


def test_t1_then_cine_gives_the_vne_on_the_cine_connection(tmp_path, tiny_model):
    p = props(tmp_path, tiny_model)
    replies, _ = run_execute(tmp_path, p, T1)
    passed, vnes = split(replies)
    assert_all_back(passed, T1.sent)
    assert not vnes
    replies, log = run_execute(tmp_path, p, CINE)
    passed, vnes = split(replies)
    assert_all_back(passed, CINE.sent)
    assert_vne_on_t1_maps(vnes, T1.sent)
    assert_no_patient_data(log)


def test_missing_cine_passes_everything_without_vne(tmp_path, tiny_model):
    replies, log = run_execute(tmp_path, props(tmp_path, tiny_model), T1)
    passed, vnes = split(replies)
    assert_all_back(passed, T1.sent)
    assert not vnes
    assert "no cine match yet" in log


def both_scans_in_one(records_cine: list[ImageRecord], records_t1: list[ImageRecord]) -> Scan:
    """Cine and T1 mapping on one connection (the header announces the IR sets): VNE comes at close."""
    return scan(header(n_phases=1, n_sets=len(TIS)), records_cine + records_t1)


def test_corrupt_model_file_passes_everything(tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x07 this is not an ONNX model " * 50)
    one = both_scans_in_one(cine_records(), t1_records())
    replies, log = run_execute(tmp_path, props(tmp_path, bad), one)
    passed, vnes = split(replies)
    assert_all_back(passed, one.sent)
    assert not vnes
    assert "backend unavailable" in log


def test_unknown_property_disables_vne_but_passes_everything(tmp_path, tiny_model):
    one = both_scans_in_one(cine_records(), t1_records())
    replies, log = run_execute(tmp_path, props(tmp_path, tiny_model, bogus_option="1"), one)
    passed, vnes = split(replies)
    assert_all_back(passed, one.sent)
    assert not vnes
    assert "VNE disabled for this connection" in log and "bogus_option" in log


def test_nan_and_wrong_shape_inputs_pass_through(tmp_path, tiny_model):
    cine = cine_records()
    for r in cine:  # cine slice 0: NaN in one frame; cine slice 2: one frame on a smaller grid
        if r.slice == 0 and r.phase == 3:
            r.data = r.data.astype(np.float32)
            r.data[0, 0, 4, 4] = np.nan
    odd = next(r for r in cine if r.slice == 2 and r.phase == 5)
    odd.data = np.ascontiguousarray(odd.data[..., :-4])  # the header follows the data on the wire
    t1 = t1_records()
    t1[len(TIS)].data[:] = np.nan  # slice 0's T1 map: all NaN
    for r in t1[len(TIS) + 1: 2 * len(TIS) + 1]:  # slice 1's IR images: a smaller matrix than the map's
        r.data = np.ascontiguousarray(r.data[..., :-6, :])
    other = ImageRecord.new(np.ones((2, 3, 8, 6), np.complex64), plane_from_normal(
        np.zeros(3), np.array([0.0, 0.0, 1.0]), (6.0, 8.0, 5.0), (6, 8)), image_series_index=7)  # 2 channels, 3-D
    one = both_scans_in_one(cine, t1 + [other])
    replies, log = run_execute(tmp_path, props(tmp_path, tiny_model), one)
    passed, vnes = split(replies)
    assert_all_back(passed, one.sent)
    assert not vnes
    assert "T1 slice 0: no VNE: bad input" in log and "T1 slice 1: no VNE: incomplete T1 slice" in log
    assert "connection done" in log and "Traceback" not in log


def t1_as_image_arrays(records: list[ImageRecord]) -> list[ImageArray]:
    """Each T1 slice as Gadgetron's mapping chain has it before ImageArraySplit: an array of its IR images
    (N = set) and one of its map, complex64 (RO, E1, E2, CHA, N, S, LOC), MAGNITUDE image type."""
    out = []
    for s in sorted({r.slice for r in records}):
        for group in ([r for r in records if r.slice == s and "GADGETRON_TI" in r.meta],
                      [r for r in records if r.slice == s and r.meta.get("GADGETRON_DataRole") == "T1"]):
            if not group:
                continue
            data = np.stack([r.data.transpose(3, 2, 1, 0) for r in group], axis=-1)[..., None, None]
            headers = np.empty((len(group), 1, 1), dtype=object)
            for n, r in enumerate(group):
                headers[n, 0, 0] = r.to_ismrmrd().getHead()
            meta = [ismrmrd.Meta(r.meta).serialize() for r in group]
            out.append(ImageArray(data=data.astype(np.complex64), headers=headers, meta=meta))
    return out


def test_image_arrays_pass_back_unchanged_and_feed_the_core(tmp_path, tiny_model):
    arrays = t1_as_image_arrays(t1_records())
    acquisition = ismrmrd.Acquisition.from_array(np.ones((2, 16), np.complex64))
    one = scan(header(n_phases=1, n_sets=len(TIS)), cine_records() + arrays + [acquisition])
    replies, log = run_execute(tmp_path, props(tmp_path, tiny_model), one)
    passed, vnes = split(replies)
    assert_all_back(passed, one.sent)
    assert_vne_on_t1_maps(vnes, t1_records())


def test_module_exits_when_gadgetron_drops_the_connection_mid_scan(tmp_path, tiny_model):
    with external_module(tmp_path) as (sock, process, log_path):
        config = config_message(props(tmp_path, tiny_model))
        sock.sendall(config + header_message(T1_HEADER) + b"".join(T1.messages[:3]))
        sock.shutdown(socket.SHUT_WR)  # end of stream without CLOSE; replies can still arrive
        process.wait(TIMEOUT_S)  # gadgetron 1.4.1 alone would spin on empty reads here forever
    assert "closed the connection" in log_path.read_text()


# ---------------------------------------------------------------------------- in-process details
def test_shipped_configs_are_v2_streams_with_every_property():
    for name, action, attributes in (("vne_inline_execute.xml", "execute",
                                      {"name": "vne_inline.gadgetron", "target": "handle", "type": "python"}),
                                     ("vne_inline_connect.xml", "connect", {"address": "127.0.0.1", "port": "18000"})):
        root = shipped_config(name)
        assert root.tag == "configuration" and root.findtext("version") == "2"
        assert root.find(f"stream/external/{action}").attrib == attributes
        assert set(shipped_properties(name)) == set(PROPERTIES)
        CoreConfig.from_properties(shipped_properties(name))


def test_properties_read_v2_and_legacy_forms_and_drop_gadgetron_keys():
    config = ET.fromstring('<configuration><property name="model" value=" /m.onnx "/>'
                           '<property><name>expiry_h</name><value>12</value></property>'
                           '<property name="python_module" value="vne_inline.gadgetron"/></configuration>')
    assert gadget.properties(config) == {"model": "/m.onnx", "expiry_h": "12"}
    assert gadget.properties(None) == {}


def test_non_complex64_array_goes_back_as_images():
    """gadgetron 1.4.1's array writer cannot write float32 data under numpy 2; the gadget sends images."""
    records = [r for r in t1_records() if r.slice == 0 and "GADGETRON_TI" in r.meta]
    (array,) = t1_as_image_arrays(records)
    array.data = np.abs(array.data).astype(np.float32)
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(ValueError):
            write_array(io.BytesIO(), array.data, np.complex64)
    sent: list[object] = []
    connection = SimpleNamespace(config=None, raw_bytes=SimpleNamespace(header=None), send=sent.append,
                                 socket=SimpleNamespace(socket=None))
    gadget._handle_array(connection, None, array)
    assert [type(s) for s in sent] == [ismrmrd.Image] * len(records)
    for got, want in zip(sent, records, strict=True):
        np.testing.assert_array_equal(got.data, want.data.astype(np.float32))
        assert got.meta["GADGETRON_TI"] == want.meta["GADGETRON_TI"]
        assert got.getHead().slice == want.slice and got.getHead().set == want.set


# ---------------------------------------------------------------------------- connect mode (worker)
WORKER_CMD = [sys.executable, "-c", "from vne_inline.cli import app; app()", "gadgetron-worker"]


def test_worker_serves_connections_with_the_model_loaded_once_and_stops_on_sigterm(tmp_path, tiny_model):
    p = props(tmp_path, tiny_model)
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log_file:
        worker = subprocess.Popen(WORKER_CMD + ["--port", "0", "--model", p["model"], "--backend", "onnxruntime",
                                                "--threads", "1", "--store", p["store_dir"]],
                                  stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (port := re.search(r"worker listening on \S+ port (\d+)", log_path.read_text())):
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        address = ("127.0.0.1", int(port.group(1)))
        with socket.create_connection(address, timeout=TIMEOUT_S) as sock:  # Gadgetron gone mid-scan
            sock.sendall(config_message({}) + header_message(CINE.header) + b"".join(CINE.messages[:3]))
        results = []
        for one in (CINE, T1):  # Gadgetron's <connect>: connect, send the configuration, header, data, CLOSE
            with socket.create_connection(address, timeout=TIMEOUT_S) as sock:
                config = config_message(shipped_properties("vne_inline_connect.xml"))  # all empty: the worker's
                results.append(split(exchange(sock, config, one.header, one.messages)))
        (cine_back, cine_vnes), (t1_back, t1_vnes) = results
        assert_all_back(cine_back, CINE.sent)
        assert not cine_vnes
        assert_all_back(t1_back, T1.sent)
        assert_vne_on_t1_maps(t1_vnes, T1.sent)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(TIMEOUT_S) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    log = log_path.read_text()
    assert len(re.findall(r"VNE backend \S+ loaded", log)) == 1, log
    assert log.count("connection done") == 2 and "worker stopped" in log
    assert log.count("connection ended with an error") == 1
    assert_no_patient_data(log)


@pytest.mark.parametrize("problem", ["missing model", "unwritable store"])
def test_worker_that_cannot_make_vne_refuses_to_start_with_one_line(tmp_path, tiny_model, problem):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    model, store = ((tmp_path / "missing.onnx", tmp_path / "store") if problem == "missing model"
                    else (Path(tiny_model), blocker / "store"))
    run = subprocess.run(WORKER_CMD + ["--port", "0", "--model", str(model), "--backend", "onnxruntime",
                                       "--store", str(store)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot start the worker: "), run.stderr
    assert ("missing.onnx" if problem == "missing model" else f"slice store {store}") in errors[0]
    assert "Traceback" not in run.stderr + run.stdout and "listening" not in run.stderr
