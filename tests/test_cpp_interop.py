"""Files the C++ ISMRMRD library reads as Python ismrmrd does: a synthetic exam and a replay output, read by
a small reader compiled against libismrmrd (Debian libismrmrd-dev, what Gadgetron's tools link), compared
header field by header field, meta key by meta key and data byte by byte with Python ismrmrd's view."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from test_pipeline import FakeBackend

from vne_inline.cli.inline_cmds import run_replay
from vne_inline.io.mrd_file import write_file
from vne_inline.io.records import ImageRecord
from vne_inline.modelspec import ModelConfig
from vne_inline.synth.exam import generate_patient

READER = Path(__file__).parent / "cpp" / "ismrmrd_dump.cpp"
COMPILER = shutil.which("g++") or shutil.which("c++")


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    """The C++ reader, compiled against libismrmrd (`.ci/run` installs libismrmrd-dev)."""
    if COMPILER is None:
        pytest.skip("no C++ compiler (g++ or c++) on this machine")
    binary = tmp_path_factory.mktemp("cpp") / "ismrmrd_dump"
    build = subprocess.run([COMPILER, "-std=c++11", "-O1", "-o", str(binary), str(READER),
                            "-I/usr/include/hdf5/serial", "-lismrmrd"], capture_output=True, text=True)
    assert build.returncode == 0, f"cannot build the C++ reader (apt-get install libismrmrd-dev):\n{build.stderr}"
    return binary


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Path:
    return generate_patient(tmp_path_factory.mktemp("synth"), seed=11, index=0).directory


def cpp_view(reader: Path, path: Path, out: Path) -> tuple[str, list[dict], bytes]:
    """What libismrmrd sees: the XML header, per image {header field: values, "meta": {key: [values]}},
    and every image's data bytes in file order."""
    with h5py.File(path, "r") as h5:
        groups = [name for name, item in h5["dataset"].items() if isinstance(item, h5py.Group)]
    out.mkdir()
    run = subprocess.run([str(reader), str(path), str(out), *groups], capture_output=True, text=True)  # a fresh process
    assert run.returncode == 0, run.stderr
    images: list[dict] = []
    for line in (out / "images.txt").read_text(encoding="utf-8").splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "IMAGE":
            images.append({"meta": {}})
        elif tag == "H":
            name, *values = rest.split(" ")
            images[-1][name] = [float.fromhex(v) if "0x" in v else int(v) for v in values]
        elif tag == "A":
            images[-1]["attribute_string_len"] = [int(rest)]
        elif tag == "M":
            key, *values = rest.split("\t")
            images[-1]["meta"][key] = values
    return (out / "header.xml").read_text(encoding="utf-8"), images, (out / "data.bin").read_bytes()


def python_view(path: Path) -> tuple[str, list[dict], bytes]:
    """The same, read with Python ismrmrd."""
    with h5py.File(path, "r") as h5:
        groups = [name for name, item in h5["dataset"].items() if isinstance(item, h5py.Group)]
    images, data = [], []
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:
        try:
            xml = ds.read_xml_header()
        except LookupError:  # a file without header: libismrmrd reads an empty one
            xml = b""
        for group in groups:
            for i in range(ds.number_of_images(group)):
                image = ds.read_image(group, i)
                head = image.getHead()
                fields = {}
                for name, _ in ismrmrd.ImageHeader._fields_:
                    value = getattr(head, name)
                    values = list(value) if hasattr(value, "__len__") else [value]
                    fields[name] = [float(np.float32(v)) if isinstance(v, float) else int(v) for v in values]
                fields["meta"] = {k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in image.meta.items()}
                images.append(fields)
                data.append(image.data.tobytes())
    return xml.decode("utf-8") if isinstance(xml, bytes) else xml, images, b"".join(data)


def assert_same_view(reader: Path, path: Path, out: Path) -> int:
    cpp_xml, cpp_images, cpp_data = cpp_view(reader, path, out)
    py_xml, py_images, py_data = python_view(path)
    assert cpp_xml == py_xml
    assert len(cpp_images) == len(py_images) > 0
    for i, (cpp, py) in enumerate(zip(cpp_images, py_images, strict=True)):
        assert set(cpp) == set(py), f"{path.name} image {i}: header fields differ"
        for name in py:
            assert cpp[name] == py[name], f"{path.name} image {i}: {name} {cpp[name]} (C++) != {py[name]} (Python)"
        assert py["meta"], f"{path.name} image {i}: no meta"
    assert cpp_data == py_data
    return len(py_images)


def test_synthetic_exam_reads_the_same_in_cpp(reader, exam, tmp_path):
    for name in ("cine.h5", "t1map.h5", "lge.h5"):
        assert_same_view(reader, exam / name, tmp_path / name)


def test_replay_output_with_vne_reads_the_same_in_cpp(reader, exam, tmp_path):
    backend = FakeBackend(config=ModelConfig(name="fake-test"))
    results = run_replay([exam / "cine.h5", exam / "t1map.h5"], tmp_path / "replay.h5", {}, None, backend=backend)
    made = sum(r.made for result in results for r in result.reports)
    assert made > 0
    n = assert_same_view(reader, tmp_path / "replay.h5", tmp_path / "view")
    cpp_images = cpp_view(reader, tmp_path / "replay.h5", tmp_path / "again")[1]
    vne = [image for image in cpp_images if image["meta"].get("GADGETRON_DataRole") == ["VNE"]]
    assert len(vne) == made and n > made


def test_non_ascii_meta_and_complex_data_read_the_same_in_cpp(reader, tmp_path):
    head = ismrmrd.ImageHeader()
    head.version = 1
    head.field_of_view[:] = (200.0, 160.0, 8.0)
    head.read_dir[:], head.phase_dir[:], head.slice_dir[:] = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(2, 1, 6, 5)) + 1j * rng.normal(size=(2, 1, 6, 5))).astype(np.complex64)
    record = ImageRecord(data=data, head=head, meta={"GADGETRON_ImageComment": "T1 µs <&> é", "multi": ["1", "2.5"]})
    write_file(tmp_path / "x.h5", None, [record, record])
    assert assert_same_view(reader, tmp_path / "x.h5", tmp_path / "view") == 2
