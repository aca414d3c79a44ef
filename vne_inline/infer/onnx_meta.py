"""Read an ONNX file's model-level ``metadata_props`` without the `onnx` package.

Every runtime backend needs the :class:`ModelConfig` that :mod:`vne_inline.infer.export` stores in
the model under ``vne_config``; this reads it straight from the protobuf wire format (ModelProto
field 14, ``StringStringEntryProto{key = 1, value = 2}``), so no backend needs `onnx` installed.
"""

from __future__ import annotations

from pathlib import Path

from vne_inline.modelspec import CONFIG_KEY, ModelConfig

__all__ = ["read_metadata", "read_onnx_config"]

_METADATA_PROPS = 14  # ModelProto.metadata_props
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview):
    """(field number, wire type, value) of one message level; LEN values as memoryview slices."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            value, pos = data[pos : pos + size], pos + size
        elif wire == _LEN:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated protobuf message")
        yield number, wire, value


def read_metadata(path: str | Path) -> dict[str, str]:
    """The model-level ``metadata_props`` of an ONNX file as a dict; ValueError when it is not ONNX."""
    data = memoryview(Path(path).read_bytes())
    meta: dict[str, str] = {}
    try:
        for number, wire, value in _fields(data):
            if number == _METADATA_PROPS and wire == _LEN:
                entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == _LEN}
                meta[entry.get(1, "")] = entry.get(2, "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{Path(path).name}: not a readable ONNX file ({exc})") from exc
    return meta


def read_onnx_config(path: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` stored in an exported ONNX model; ValueError when absent or damaged."""
    meta = read_metadata(path)
    if CONFIG_KEY not in meta:
        raise ValueError(f"{Path(path).name}: no '{CONFIG_KEY}' metadata; export it with `vne-inline export`")
    return ModelConfig.from_json(meta[CONFIG_KEY])
