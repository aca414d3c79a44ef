"""MRD v1 streaming framing (python-ismrmrd-server / FIRE / OpenRecon): read and write messages.

Every message starts with a little-endian uint16 id:

=====  ============  ==========================================================================
id     name          payload
=====  ============  ==========================================================================
1      CONFIG_FILE   1024 bytes, NUL-padded config name
2      CONFIG_TEXT   uint32 length + text
3      HEADER        uint32 length + ISMRMRD XML header
4      CLOSE         none
5      TEXT          uint32 length + text (JSON parameters from the client, log lines from the server)
1008   ACQUISITION   ismrmrd acquisition serialisation
1022   IMAGE         ismrmrd image serialisation (header, uint64 attribute length + meta XML, data)
1026   WAVEFORM      ismrmrd waveform serialisation
=====  ============  ==========================================================================

Strings are written NUL-terminated with the length counting the NUL; on reading, everything from the
first NUL is dropped (so a string without NUL is accepted too). Images, acquisitions and waveforms use
ismrmrd's own ``serialize_into`` / ``deserialize_from``; the reader only checks their fixed headers
first, so that a message's size is known, and bounded, before anything is allocated.

Text messages and an image's meta XML have their own, much smaller limits (an ISMRMRD header of a real
exam is under 100 KB): a longer one is refused from its length field, before it is read or parsed.

Reading errors are typed (:class:`TruncatedMessage`, :class:`OversizedMessage`,
:class:`MalformedMessage`, all :class:`ProtocolError`) and say in one line what was wrong.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from dataclasses import dataclass

import ismrmrd
from ismrmrd.acquisition import AcquisitionHeader
from ismrmrd.image import ImageHeader, dtype_mapping
from ismrmrd.serialization import ISMRMRDMessageID as MessageId
from ismrmrd.waveform import WaveformHeader

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_TEXT_BYTES",
    "DEFAULT_PORT",
    "CONFIG_FILE_BYTES",
    "Message",
    "MessageId",
    "MessageReader",
    "MessageWriter",
    "MalformedMessage",
    "OversizedMessage",
    "ProtocolError",
    "TruncatedMessage",
]

#: The usual MRD server port (python-ismrmrd-server, FIRE).
DEFAULT_PORT = 9002
#: Largest message accepted by default (a 256 x 256 x 8-channel complex128 image is 8 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20
#: Largest CONFIG_TEXT / HEADER / TEXT message and image meta XML accepted by default.
DEFAULT_MAX_TEXT_BYTES = 2**20
#: Fixed payload size of a CONFIG_FILE message.
CONFIG_FILE_BYTES = 1024
#: Largest single socket read; a message is received in chunks, never allocated from its claimed size.
_CHUNK = 2**20

_ID = struct.Struct("<H")
_LENGTH = struct.Struct("<I")
_TEXT_IDS = (MessageId.CONFIG_TEXT, MessageId.HEADER, MessageId.TEXT)

Payload = str | ismrmrd.Image | ismrmrd.Acquisition | ismrmrd.Waveform | None


class ProtocolError(Exception):
    """The byte stream does not follow the MRD v1 framing; the connection cannot continue."""


class TruncatedMessage(ProtocolError):
    """The stream ended inside a message."""


class OversizedMessage(ProtocolError):
    """A message claims more bytes than the reader's limit."""


class MalformedMessage(ProtocolError):
    """Unknown message id, or a header/attribute block that cannot be decoded."""


@dataclass(frozen=True)
class Message:
    """One message: `value` is the text (str), the ismrmrd object, or None for CLOSE."""

    id: MessageId
    value: Payload = None


# ---------------------------------------------------------------------------------------- reading
def _image_bytes(head: ImageHeader) -> int:
    dtype = dtype_mapping.get(head.data_type)
    if dtype is None:
        raise MalformedMessage(f"image with unknown data type {head.data_type}")
    nx, ny, nz = head.matrix_size
    # the uint64 attribute length follows the header; the attribute text is bounded when it is read
    return ctypes.sizeof(ctypes.c_uint64) + head.channels * nx * ny * nz * dtype.itemsize


def _acquisition_bytes(head: AcquisitionHeader) -> int:
    samples = head.number_of_samples
    return samples * head.trajectory_dimensions * 4 + samples * head.active_channels * 8


def _waveform_bytes(head: WaveformHeader) -> int:
    return head.channels * head.number_of_samples * 4


#: id -> (ismrmrd class, its fixed header struct, bytes that follow the header)
_OBJECTS = {
    MessageId.IMAGE: (ismrmrd.Image, ImageHeader, _image_bytes),
    MessageId.ACQUISITION: (ismrmrd.Acquisition, AcquisitionHeader, _acquisition_bytes),
    MessageId.WAVEFORM: (ismrmrd.Waveform, WaveformHeader, _waveform_bytes),
}


def _decode(raw: bytes) -> str:
    """Text up to the first NUL; undecodable bytes become U+FFFD (a non-XML header is tolerated later)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class MessageReader:
    """Reads messages from `recv` (``recv(n)`` returns up to n bytes, b'' at end of stream: ``socket.recv``,
    a raw or buffered file's ``read``). No message may exceed `max_message_bytes` (id excluded)."""

    def __init__(self, recv: Callable[[int], bytes], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_text_bytes: int | None = None) -> None:
        if max_message_bytes < CONFIG_FILE_BYTES:
            raise ValueError(f"max_message_bytes must be at least {CONFIG_FILE_BYTES}")
        self._recv = recv
        self.max_message_bytes = max_message_bytes
        #: Limit of a text message (CONFIG_TEXT, HEADER, TEXT) and of an image's meta XML.
        self.max_text_bytes = min(max_message_bytes, max_text_bytes or max_message_bytes)
        self._left = 0  # bytes the current message may still take

    def read(self) -> Message | None:
        """The next message, or None when the stream ends cleanly between two messages."""
        first = self._recv(_ID.size)
        if not first:
            return None
        self._left = _ID.size
        raw_id = _ID.unpack(first + self._exactly(_ID.size - len(first), "message id"))[0]
        self._left = self.max_message_bytes
        try:
            mid = MessageId(raw_id)
        except ValueError:
            raise MalformedMessage(f"unknown message id {raw_id}") from None
        if mid == MessageId.CLOSE:
            return Message(mid)
        if mid == MessageId.CONFIG_FILE:
            return Message(mid, _decode(self._exactly(CONFIG_FILE_BYTES, "CONFIG_FILE")))
        if mid in _TEXT_IDS:
            length = _LENGTH.unpack(self._exactly(_LENGTH.size, f"{mid.name} length"))[0]
            if length > self.max_text_bytes:
                raise OversizedMessage(f"{mid.name} of {length} bytes exceeds the limit of {self.max_text_bytes} "
                                       "bytes for text")
            return Message(mid, _decode(self._exactly(length, mid.name)))
        if mid in _OBJECTS:
            return Message(mid, self._read_object(mid))
        raise MalformedMessage(f"message id {raw_id} ({mid.name}) is not part of MRD v1 streaming")

    def _read_object(self, mid: MessageId) -> ismrmrd.Image | ismrmrd.Acquisition | ismrmrd.Waveform:
        cls, header_type, body_bytes = _OBJECTS[mid]
        head_raw = self._exactly(ctypes.sizeof(header_type), f"{mid.name} header")
        body = body_bytes(header_type.from_buffer_copy(head_raw))
        if body > self._left:
            raise OversizedMessage(
                f"{mid.name} of {body + len(head_raw)} bytes exceeds the limit of {self.max_message_bytes} bytes"
            )
        pending = [head_raw]
        reads = 0

        def read_exactly(n: int) -> bytes:  # replays the header already read, then reads on
            nonlocal reads
            reads += 1
            if mid == MessageId.IMAGE and reads == 3 and n > self.max_text_bytes:  # header, length, meta XML
                raise OversizedMessage(f"image meta of {n} bytes exceeds the limit of {self.max_text_bytes} bytes")
            return pending.pop() if pending else self._exactly(n, mid.name)

        try:
            return cls.deserialize_from(read_exactly)
        except (ProtocolError, OSError):  # framing errors, and the socket's own (timeouts, resets)
            raise
        except Exception as exc:  # ismrmrd raises assorted types for bad meta XML or shapes
            raise MalformedMessage(f"{mid.name} cannot be decoded: {type(exc).__name__}: {exc}") from exc

    def _exactly(self, n: int, what: str) -> bytes:
        if n > self._left:
            raise OversizedMessage(
                f"{what} of {n} bytes exceeds the limit of {self.max_message_bytes} bytes per message"
            )
        self._left -= n
        buf = bytearray()
        while len(buf) < n:
            chunk = self._recv(min(n - len(buf), _CHUNK))
            if not chunk:
                raise TruncatedMessage(f"stream ended inside {what} ({len(buf)} of {n} bytes)")
            buf += chunk
        return bytes(buf)


# ---------------------------------------------------------------------------------------- writing
class MessageWriter:
    """Writes messages through `send` (``socket.sendall`` or a file's ``write``); one call per message."""

    def __init__(self, send: Callable[[bytes], object]) -> None:
        self._send = send

    def config_file(self, name: str) -> None:
        raw = name.encode("utf-8")
        if len(raw) >= CONFIG_FILE_BYTES:
            raise ValueError(f"config name too long ({len(raw)} bytes, at most {CONFIG_FILE_BYTES - 1})")
        self._send(_ID.pack(MessageId.CONFIG_FILE) + raw.ljust(CONFIG_FILE_BYTES, b"\0"))

    def config_text(self, text: str) -> None:
        self._string(MessageId.CONFIG_TEXT, text)

    def header(self, xml: str) -> None:
        self._string(MessageId.HEADER, xml)

    def text(self, text: str) -> None:
        self._string(MessageId.TEXT, text)

    def close(self) -> None:
        self._send(_ID.pack(MessageId.CLOSE))

    def image(self, image: ismrmrd.Image) -> None:
        self._send(_ID.pack(MessageId.IMAGE) + image.to_bytes())

    def _string(self, mid: MessageId, text: str) -> None:
        raw = text.encode("utf-8") + b"\0"
        self._send(_ID.pack(mid) + _LENGTH.pack(len(raw)) + raw)
