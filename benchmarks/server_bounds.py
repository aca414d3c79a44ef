"""What hostile clients and faults cost `vne-inline serve`: one figure per case, each on a fresh server.

Every case starts `vne-inline serve` (ONNX Runtime, shipped weights) on a fresh store and does one
thing a client or a fault can do; most then time a good client (two cine images) sent meanwhile. A
case that does not finish within its timeout is reported as "> N s" and its server is killed. Uses
the synthetic exam of seed 0 for the cases that need real scans::

    python benchmarks/server_bounds.py [--threads 2] [--only description,header]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vne_inline.adapters.mrd_client import exchange
from vne_inline.adapters.mrd_protocol import MessageId, MessageReader, MessageWriter
from vne_inline.core.pipeline import CoreConfig
from vne_inline.geometry import plane_from_normal
from vne_inline.io import ImageRecord, study_key
from vne_inline.io.mrd_file import read_file
from vne_inline.synth.exam import generate_patient

VNE_SERIES = 99
SECRET = "DOE^JANE-8675309"


class Server:
    def __init__(self, store: Path, threads: int | None, home: Path) -> None:
        cmd = [sys.executable, "-m", "vne_inline.cli", "serve", "--port", "0", "--backend", "onnxruntime",
               "--store", str(store), *(["--threads", str(threads)] if threads else [])]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,  # noqa: SIM115
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(home)})
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            if m := re.search(r"listening on [\d.]+:(\d+)", "".join(self.lines)):
                self.port = int(m.group(1))
                return
            time.sleep(0.2)
        raise SystemExit("server did not start:\n" + "".join(self.lines[-20:]))

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.proc.stderr.close()


class Exam:
    """The synthetic exam's scans, re-keyed per study."""

    def __init__(self, folder: Path) -> None:
        d = generate_patient(folder, 0, 0).directory
        self.cine, self.t1 = read_file(d / "cine.h5"), read_file(d / "t1map.h5")

    def header(self, which: str, study: int) -> str:
        xml = (self.cine if which == "cine" else self.t1).header_xml
        return re.sub(r"<(studyInstanceUID|frameOfReferenceUID)>[^<]*</\1>",
                      lambda m: f"<{m[1]}>2.25.{study}.{len(m[1])}</{m[1]}>", xml)

    def records(self, which: str) -> list[ImageRecord]:
        return list((self.cine if which == "cine" else self.t1).records())


def timed(fn: Callable[[], object], timeout_s: float) -> tuple[float | None, object]:
    """(seconds, result) of fn() in a thread, or (None, None) when it takes longer than `timeout_s`."""
    out: dict = {}
    start = time.monotonic()
    thread = threading.Thread(target=lambda: out.update(r=fn()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    return (None, None) if thread.is_alive() else (time.monotonic() - start, out.get("r"))


def seconds(t: float | None, limit: float) -> str:
    return f"> {limit:g} s" if t is None else f"{t:.2f} s"


def good_client(port: int, exam: Exam, timeout_s: float) -> str:
    records = exam.records("cine")[:2]
    t, reply = timed(lambda: exchange(exam.header("cine", 1), records, port=port, timeout_s=timeout_s), timeout_s)
    return seconds(t if reply is not None and reply.closed else None, timeout_s)


def vne_count(reply) -> int:
    return sum(1 for r in reply.records if r.series_index == VNE_SERIES)


def hostile_then_good(port: int, exam: Exam, hostile: Callable[[], object], timeout_s: float = 30.0,
                      sent: threading.Event | None = None) -> str:
    """Start `hostile` in a thread; once it has sent its bytes (`sent`, else after 0.3 s), time a good client."""
    threading.Thread(target=hostile, daemon=True).start()
    if sent is None:
        time.sleep(0.3)
    else:
        sent.wait(120)
    return f"good client {good_client(port, exam, timeout_s)}"


def one_image(exam: Exam, description: str) -> ImageRecord:
    r = exam.records("cine")[0]
    return ImageRecord(data=r.data, head=r.head, meta={"GADGETRON_SeqDescription": description})


# ---------------------------------------------------------------------------- cases
def case_description(server: Server, exam: Exam, store: Path) -> str:
    return hostile_then_good(server.port, exam, lambda: exchange(
        exam.header("cine", 2), [one_image(exam, "MOLLI" * 100000)], port=server.port, timeout_s=60))


def case_pattern(server: Server, exam: Exam, store: Path) -> str:
    return hostile_then_good(server.port, exam, lambda: exchange(
        exam.header("cine", 2), [one_image(exam, "a" * 25 + "!")], port=server.port, timeout_s=60,
        parameters={"role_patterns": "^(a+)+$=cine"}))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def case_header(server: Server, exam: Exam, store: Path) -> str:
    sent, answered = threading.Event(), {}

    def send_big() -> None:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
                MessageWriter(sock.sendall).config_file("vne")
                n = 200 * 2**20
                sock.sendall(struct.pack("<HI", MessageId.HEADER, n))
                chunk = b"x" * 2**20  # one long XML token: the parser's worst case
                sock.sendall(b"<" + chunk[1:])
                for _ in range(n // len(chunk) - 1):
                    sock.sendall(chunk)
                sent.set()
                sock.recv(1)  # the server's first answer (or its close)
        except OSError:  # refused part-way, or no answer within the socket timeout
            pass
        sent.set()
        answered["s"] = time.monotonic() - started
    worker = threading.Thread(target=send_big, daemon=True)
    good = hostile_then_good(server.port, exam, worker.start, sent=sent)
    worker.join(65)
    cpu = _cpu_s(server.proc.pid)
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(10)
        stopped = "yes"
    except subprocess.TimeoutExpired:
        stopped = "no"
    return (f"{good}; hostile client answered after {seconds(answered.get('s'), 60)}; server CPU {cpu:.0f} s; "
            f"SIGTERM stops it within 10 s: {stopped}")


def case_big_t1(server: Server, exam: Exam, store: Path) -> str:
    t1_plane = exam.records("t1")[-1].geometry
    g = plane_from_normal(t1_plane.position, t1_plane.slice_dir, (300.0, 300.0, 8.0), (2048, 2048))
    cg = plane_from_normal(t1_plane.position, t1_plane.slice_dir, (300.0, 300.0, 8.0), (96, 96))
    rng = np.random.default_rng(0)
    cine = [ImageRecord.new(rng.uniform(100, 900, cg.shape).astype(np.uint16), cg, {"GADGETRON_DataRole": "Image"},
                            image_series_index=1, phase=p) for p in range(25)]
    big = [ImageRecord.new(rng.uniform(100, 900, g.shape).astype(np.uint16), g, {"GADGETRON_TI": f"{ti:g}"},
                           image_series_index=2, set=k) for k, ti in enumerate((100, 180, 260, 1100, 2100, 3100, 4100))]
    big.append(ImageRecord.new(np.full(g.shape, 1000.0, np.float32), g, {"GADGETRON_DataRole": "T1"},
                               image_series_index=3))
    exchange(exam.header("cine", 3), cine, port=server.port, timeout_s=60)
    before = server.peak_rss_mb()
    t, reply = timed(lambda: exchange(exam.header("t1", 3), big, port=server.port, timeout_s=300), 300)
    return (f"{seconds(t, 300)}, {vne_count(reply) if reply else '?'} VNE, peak RSS {server.peak_rss_mb():.0f} MB "
            f"(before {before:.0f} MB)")


def case_silent(server: Server, exam: Exam, store: Path) -> str:
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(8)]
    time.sleep(0.3)
    try:
        return f"9th client {good_client(server.port, exam, 60.0)}"
    finally:
        for s in socks:
            s.close()


def case_deep_text(server: Server, exam: Exam, store: Path) -> str:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        w = MessageWriter(sock.sendall)
        w.config_file("vne")
        w.header(exam.header("cine", 4))
        w.text("[" * 200000)
        w.image(exam.records("cine")[0].to_ismrmrd())
        w.close()
        reader, got = MessageReader(sock.recv), []
        try:
            while (msg := reader.read()) is not None:
                got.append(msg)
        except OSError:
            pass
    errs = [m.value[:60] for m in got if m.id == MessageId.TEXT and m.value.startswith("ERR")]
    return (f"{sum(m.id == MessageId.IMAGE for m in got)} image echoed, ERR: {errs[0] if errs else 'none'}, "
            f"CLOSE: {'yes' if got and got[-1].id == MessageId.CLOSE else 'no'}")


def case_kill9(server: Server, exam: Exam, store: Path) -> str:
    exchange(exam.header("cine", 5), exam.records("cine"), port=server.port, timeout_s=120)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        w = MessageWriter(sock.sendall)
        w.config_file("vne")
        w.header(exam.header("t1", 5))
        for r in exam.records("t1"):
            w.image(r.to_ismrmrd())
        time.sleep(0.15)  # the first slice's inference is under way
        server.proc.send_signal(signal.SIGKILL)
    server.kill()
    again = Server(store, ARGS.threads, store.parent)
    try:
        t, reply = timed(lambda: exchange(exam.header("t1", 5), exam.records("t1"), port=again.port,
                                          timeout_s=60), 60)
        return f"re-sent T1 scan: {vne_count(reply) if reply else '?'} of 3 VNE in {seconds(t, 60)}"
    finally:
        again.kill()


def _t1_scan(exam: Exam, study: int, port: int):
    return exchange(exam.header("t1", study), exam.records("t1"), port=port, timeout_s=120)


def case_truncated(server: Server, exam: Exam, store: Path) -> str:
    exchange(exam.header("cine", 6), exam.records("cine"), port=server.port, timeout_s=120)
    files = sorted(store.rglob("cine-*.npz"))
    victim = files[len(files) // 2]
    victim.write_bytes(victim.read_bytes()[:1000])
    reply = _t1_scan(exam, 6, server.port)
    quarantined = len(list((store / "quarantine").iterdir())) if (store / "quarantine").is_dir() else 0
    named = sum(victim.name in line for line in server.lines)
    return (f"{vne_count(reply)} of 3 VNE, {sum(t.startswith('WRN: T1 slice') for t in reply.texts)} slice reasons, "
            f"{quarantined} quarantined, {named} log lines name the file")


def case_nan(server: Server, exam: Exam, store: Path) -> str:
    exchange(exam.header("cine", 7), exam.records("cine"), port=server.port, timeout_s=120)
    records = exam.records("t1")
    maps = [r for r in records if r.meta.get("GADGETRON_DataRole") == "T1"]
    maps[1].head.position[0] = float("nan")
    reply = exchange(exam.header("t1", 7), records, port=server.port, timeout_s=120)
    return f"{vne_count(reply)} of 3 VNE, {sum(t.startswith('WRN: T1 slice') for t in reply.texts)} slice reasons"


def case_junk_cine(server: Server, exam: Exam, store: Path) -> str:
    base = [r for r in exam.records("cine") if r.phase < 3][:3]
    records = []
    for s in range(2000):
        for r in base:
            head = type(r.head).from_buffer_copy(bytes(r.head))
            head.slice = 100 + s
            records.append(ImageRecord(data=r.data, head=head, meta=dict(r.meta)))
    t, _ = timed(lambda: exchange(exam.header("cine", 8), records, port=server.port, timeout_s=600), 600)
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    return f"{seconds(t, 600)}, store {size / 1e6:.0f} MB, peak RSS {server.peak_rss_mb():.0f} MB"


def case_phi(server: Server, exam: Exam, store: Path) -> str:
    records = exam.records("t1")
    for r in records:
        r.meta.update({"PatientName": SECRET, "PatientID": SECRET + "-ID"})
    exchange(exam.header("t1", 9), records, port=server.port, timeout_s=120)  # no cine: waits in the store
    hits = [p.name for p in store.rglob("*") if p.is_file()
            if any(s in p.read_bytes() for s in (SECRET.encode(), SECRET.encode("utf-32-le")))]
    return f"{len(hits)} store files hold the name"


def case_root(server: Server, exam: Exam, store: Path) -> str:
    store.parent.joinpath("loose").mkdir()
    loose = store.parent / "loose"
    os.chmod(loose, 0o1777)
    victim = store.parent / "victim"
    victim.mkdir()
    (loose / study_key(exam.header("cine", 10))).symlink_to(victim)  # planted before the study's first scan
    again = Server(loose, ARGS.threads, store.parent)
    try:
        exchange(exam.header("cine", 10), exam.records("cine")[:30], port=again.port, timeout_s=120)
    finally:
        again.kill()
    return (f"store mode {oct(os.stat(loose).st_mode & 0o7777)}, {len(list(victim.iterdir()))} files written "
            f"through the link")


def case_telemetry(server: Server, exam: Exam, store: Path) -> str:
    exchange(exam.header("cine", 11), exam.records("cine")[:2], port=server.port, timeout_s=60)
    found = [p for p in (store.parent / ".cache").rglob("*") if p.is_file()] if (store.parent / ".cache").exists() else []
    try:
        CoreConfig.from_properties({"vne_series_index": "3", "series_roles": "3=t1map"})
        clash = "accepted"
    except ValueError:
        clash = "refused"
    return f"{len(found)} telemetry files under HOME; VNE series = an input series: {clash}"


CASES = {"description": case_description, "pattern": case_pattern, "header": case_header, "big_t1": case_big_t1,
         "silent": case_silent, "deep_text": case_deep_text, "kill9": case_kill9, "truncated": case_truncated,
         "nan": case_nan, "junk_cine": case_junk_cine, "phi": case_phi, "root": case_root,
         "telemetry": case_telemetry}


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default=",".join(CASES), help="Comma-separated cases.")
    ARGS = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vne-bounds-") as tmp:
        exam = Exam(Path(tmp) / "exam")
        print("| case | result |\n|---|---|", flush=True)
        for name in ARGS.only.split(","):
            folder = Path(tmp) / name
            folder.mkdir()
            store = folder / "store"
            server = Server(store, ARGS.threads, folder)
            try:
                result = CASES[name](server, exam, store)
            except Exception as exc:  # a case that breaks the client is a result too
                result = f"failed: {type(exc).__name__}: {str(exc)[:100]}"
            finally:
                server.kill()
            print(f"| {name} | {result} |", flush=True)


ARGS = argparse.Namespace(threads=None)

if __name__ == "__main__":
    main()
