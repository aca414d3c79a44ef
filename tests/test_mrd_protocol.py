"""MRD v1 framing: round trips, NUL handling, and typed errors for truncated, oversized and garbage input."""

from __future__ import annotations

import io
import itertools
import struct

import ismrmrd
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vne_inline.adapters.mrd_protocol import (
    CONFIG_FILE_BYTES,
    MalformedMessage,
    MessageId,
    MessageReader,
    MessageWriter,
    OversizedMessage,
    ProtocolError,
    TruncatedMessage,
)

LIMIT = 64 * 1024


def image(shape=(3, 4), dtype=np.float32, meta=None) -> ismrmrd.Image:
    img = ismrmrd.Image.from_array(np.arange(np.prod(shape), dtype=dtype).reshape(shape), transpose=False)
    img.image_series_index = 7
    img.meta = meta or {"GADGETRON_DataRole": "T1", "List": ["a", "b"]}
    return img


def stream(write) -> bytes:
    buf = io.BytesIO()
    write(MessageWriter(buf.write))
    return buf.getvalue()


def reader(data: bytes, limit: int = LIMIT, step: int | None = None) -> MessageReader:
    """A reader over `data`; `step` caps every read (a socket delivering a few bytes at a time)."""
    src = io.BytesIO(data)
    return MessageReader((lambda n: src.read(min(n, step))) if step else src.read, limit)


def read_all(r: MessageReader) -> list:
    out = []
    while (msg := r.read()) is not None:
        out.append(msg)
    return out


KINDS = (
    lambda w: w.config_file("vne"),
    lambda w: w.config_text("<config/>"),
    lambda w: w.header("<ismrmrdHeader/>"),
    lambda w: w.text('{"parameters": {}}'),
    lambda w: w.image(image()),
    lambda w: w.close(),
)


def every_kind(w: MessageWriter) -> None:
    for kind in KINDS:
        kind(w)


@pytest.mark.parametrize("step", [None, 1, 7])
def test_every_message_kind_round_trips_however_the_bytes_arrive(step):
    msgs = read_all(reader(stream(every_kind), step=step))
    assert [m.id for m in msgs] == [MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.HEADER, MessageId.TEXT,
                                    MessageId.IMAGE, MessageId.CLOSE]
    assert [m.value for m in msgs[:4]] == ["vne", "<config/>", "<ismrmrdHeader/>", '{"parameters": {}}']
    got, sent = msgs[4].value, image()
    assert np.array_equal(got.data, sent.data) and got.data.dtype == np.float32
    assert got.image_series_index == 7 and got.meta["GADGETRON_DataRole"] == "T1" and got.meta["List"] == ["a", "b"]
    assert msgs[5].value is None


def test_strings_are_nul_terminated_and_counted_and_read_with_or_without_nul():
    raw = stream(lambda w: w.text("héllo"))
    assert raw == struct.pack("<HI", 5, 7) + "héllo".encode() + b"\0"
    without_nul = struct.pack("<HI", 3, 5) + b"<x/>!"
    assert reader(without_nul).read().value == "<x/>!"
    config = stream(lambda w: w.config_file("abc"))
    assert len(config) == 2 + CONFIG_FILE_BYTES and reader(config).read().value == "abc"
    with pytest.raises(ValueError, match="too long"):
        stream(lambda w: w.config_file("x" * CONFIG_FILE_BYTES))


def test_acquisitions_and_waveforms_are_read_with_ismrmrd():
    acq = ismrmrd.Acquisition.from_array(np.ones((2, 8), np.complex64))
    wav = ismrmrd.Waveform.from_array(np.ones((2, 5), np.uint32))
    data = struct.pack("<H", 1008) + acq.to_bytes() + struct.pack("<H", 1026) + wav.to_bytes()
    a, w = read_all(reader(data))
    assert a.id == MessageId.ACQUISITION and a.value.data.shape == (2, 8)
    assert w.id == MessageId.WAVEFORM and w.value.data.shape == (2, 5)


def test_a_stream_cut_anywhere_inside_a_message_is_truncated():
    parts = [stream(kind) for kind in KINDS]
    data = b"".join(parts)
    boundaries = set(itertools.accumulate(len(p) for p in parts))
    for cut in range(1, len(data)):
        if cut in boundaries:
            assert len(read_all(reader(data[:cut]))) == sorted(boundaries).index(cut) + 1
        else:
            with pytest.raises(TruncatedMessage):
                read_all(reader(data[:cut]))


def test_oversized_messages_are_refused_before_reading_or_allocating():
    with pytest.raises(OversizedMessage, match="exceeds"):
        reader(struct.pack("<HI", 5, 0xFFFFFFFF)).read()
    big = image(shape=(8, 4000))  # 128 kB of data > 64 kB limit
    with pytest.raises(OversizedMessage):
        reader(stream(lambda w: w.image(big))).read()
    head = ismrmrd.ImageHeader()
    head.data_type, head.channels = ismrmrd.DATATYPE_CXDOUBLE, 65535
    head.matrix_size[:] = (65535, 65535, 65535)  # 4.5e19 bytes claimed
    with pytest.raises(OversizedMessage):
        reader(struct.pack("<H", 1022) + bytes(head)).read()
    small = ismrmrd.ImageHeader()
    small.data_type = ismrmrd.DATATYPE_FLOAT
    attribute_bomb = struct.pack("<H", 1022) + bytes(small) + struct.pack("<Q", 2**63)
    with pytest.raises(OversizedMessage):
        reader(attribute_bomb).read()
    acq = ismrmrd.AcquisitionHeader()
    acq.number_of_samples, acq.active_channels = 65535, 65535
    with pytest.raises(OversizedMessage):
        reader(struct.pack("<H", 1008) + bytes(acq)).read()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (struct.pack("<H", 999), "unknown message id 999"),
        (struct.pack("<H", 1030), "not part of MRD v1"),
        (struct.pack("<H", 1022) + bytes(ismrmrd.ImageHeader()) + struct.pack("<Q", 0), "unknown data type 0"),
    ],
)
def test_garbage_is_malformed(data, match):
    with pytest.raises(MalformedMessage, match=match):
        reader(data).read()


def test_undecodable_image_meta_is_malformed():
    raw = bytearray(stream(lambda w: w.image(image(meta={"A": "1"}))))
    start = raw.index(b"<ismrmrdMeta>")
    raw[start:start + 5] = b"<<<<<"
    with pytest.raises(MalformedMessage, match="IMAGE cannot be decoded"):
        reader(bytes(raw)).read()


def test_a_header_that_is_not_utf8_or_xml_is_still_read_as_text():
    msg = reader(struct.pack("<HI", 3, 4) + b"\xff\xfeab").read()
    assert msg.id == MessageId.HEADER and msg.value.endswith("ab")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_any_byte_stream_gives_messages_or_a_protocol_error(data, step):
    r = reader(data, step=step)
    try:
        read_all(r)
    except ProtocolError:
        pass
