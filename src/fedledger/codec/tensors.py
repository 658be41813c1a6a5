"""Tensors <-> safetensors bytes: the only format model updates take on disk and on the wire.

Encoding is deterministic (same tensors and metadata give the same bytes on every machine) because
aggregators compare hashes of what they produce. The bytes are exactly what ``safetensors.numpy.save``
writes (tensors sorted by dtype, then name, in both header and data; header padded with spaces
to 8 bytes), except that metadata keys are sorted: ``safetensors.serialize`` emits ``__metadata__`` in
hash-map order, which varies between processes when there is more than one entry. Writing the header
here also halves the copies (one ``bytes.join``), about 2x faster than ``safetensors.numpy.save``.

Decoding treats its input as hostile: it never unpickles, checks every header field itself (length,
JSON shape, dtype allow-list, shapes, offsets covering the data exactly once) and returns read-only numpy
views into the payload, so nothing is allocated beyond the header's parse, bounded by
``MAX_HEADER_BYTES``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedledger.errors import CodecError

__all__ = [
    "DTYPES",
    "MAX_HEADER_BYTES",
    "decode_metadata",
    "decode_tensors",
    "encode_tensors",
]

#: safetensors dtype tag -> little-endian numpy dtype. BF16 is left out: numpy has no bfloat16.
DTYPES: Mapping[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_TAG_BY_KIND: dict[tuple[str, int], str] = {(dt.kind, dt.itemsize): tag for tag, dt in DTYPES.items()}
# Position of each tag in safetensors' Dtype enum, whose descending order lays out the data (and keeps
# every tensor aligned: 8-byte types first, then 4, 2, 1).
_LAYOUT_RANK = {"BOOL": 0, "U8": 1, "I8": 2, "F16": 3, "I32": 4, "F32": 5, "F64": 6, "I64": 7}

#: Largest JSON header accepted (~100k tensors); bounds the memory a hostile header can make us spend.
MAX_HEADER_DEPTH = 3
MAX_HEADER_BYTES = 8 * 1024 * 1024
_MAX_NDIM = 32
_METADATA_KEY = "__metadata__"
_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


def _tag_of(name: str, array: np.ndarray) -> str:
    tag = _TAG_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if tag is None:
        allowed = ", ".join(str(dt) for dt in DTYPES.values())
        raise CodecError(f"tensor {name!r}: dtype {array.dtype} cannot be encoded (allowed: {allowed})")
    return tag


def encode_tensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise ``tensors`` (and optional text ``metadata``) to deterministic safetensors bytes.

    The result does not depend on the mapping's iteration order. Arrays are copied exactly once,
    into the output; non-contiguous or big-endian arrays get one extra conversion first.
    """
    if metadata is not None:
        for key, text in metadata.items():
            if not isinstance(key, str) or not isinstance(text, str):
                raise CodecError(f"metadata entry {key!r}: keys and values must be strings")
    entries: list[tuple[int, str, str, np.ndarray]] = []
    for name, value in tensors.items():
        if not isinstance(name, str) or name == _METADATA_KEY:
            raise CodecError(f"tensor name {name!r} is not allowed")
        array = np.asarray(value)
        tag = _tag_of(name, array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        entries.append((_LAYOUT_RANK[tag], name, tag, array))
    # safetensors' own layout: dtype rank descending, then name.
    entries.sort(key=lambda entry: (-entry[0], entry[1]))

    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA_KEY] = {key: metadata[key] for key in sorted(metadata)}
    offset = 0
    for _, name, tag, array in entries:
        end = offset + array.nbytes
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, end]}
        offset = end
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    parts: list[bytes | memoryview] = [struct.pack("<Q", len(header_bytes)), header_bytes]
    # ``reshape(-1)`` keeps 0-d arrays and views of contiguous data zero-copy; join does the only copy.
    parts.extend(array.reshape(-1).view(np.uint8).data for _, _, _, array in entries)
    return b"".join(parts)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise CodecError(f"not a safetensors payload: duplicate key {key!r} in header")
        result[key] = value
    return result


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


def _nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting outside JSON strings, found without recursion.

    Checked before ``json.loads`` because the C JSON scanner recurses per level: a header of a few
    hundred thousand brackets can exhaust the C stack of a worker thread and kill the process.
    """
    brackets = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = np.zeros(brackets.shape, dtype=np.int64)
    steps[np.isin(brackets, list(_OPENERS))] = 1
    steps[np.isin(brackets, list(_CLOSERS))] = -1
    return int(np.cumsum(steps).max()) if steps.size else 0


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_header(data: bytes | bytearray | memoryview) -> tuple[int, dict[str, Any]]:
    """Return (data start, header object) after checking the length prefix and the JSON's outer shape."""
    size = len(data)
    if size < 8:
        raise CodecError(f"not a safetensors payload: {size} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len > size - 8:
        raise CodecError(f"not a safetensors payload: header length {header_len} exceeds payload size {size}")
    if header_len > MAX_HEADER_BYTES:
        raise CodecError(
            f"not a safetensors payload: header length {header_len} exceeds the limit {MAX_HEADER_BYTES}"
        )
    if header_len < 2:
        raise CodecError(f"not a safetensors payload: header length {header_len} is too short")
    raw = bytes(data[8 : 8 + header_len])
    if raw[:1] != b"{":
        raise CodecError("not a safetensors payload: header is not a JSON object")
    depth = _nesting_depth(raw)
    if depth > MAX_HEADER_DEPTH:
        raise CodecError(
            f"not a safetensors payload: header nests {depth} levels deep (a valid one nests {MAX_HEADER_DEPTH})"
        )
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_reject_duplicates)
    except CodecError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CodecError(f"not a safetensors payload: header is not valid JSON ({reason})") from None
    if not isinstance(header, dict):
        raise CodecError("not a safetensors payload: header is not a JSON object")
    return 8 + header_len, header


def _check_metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CodecError("not a safetensors payload: __metadata__ must map strings to strings")
    return dict(value)


def _check_entry(name: str, entry: object) -> tuple[np.dtype[Any], tuple[int, ...], int, int]:
    if not isinstance(entry, dict) or set(entry) != _TENSOR_FIELDS:
        raise CodecError(
            f"tensor {name!r}: header entry must have exactly the fields dtype, shape, data_offsets"
        )
    tag = entry["dtype"]
    if not isinstance(tag, str) or tag not in DTYPES:
        raise CodecError(f"tensor {name!r}: dtype {tag!r} is not allowed (allowed: {', '.join(DTYPES)})")
    dtype = DTYPES[tag]
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(_is_index(d) for d in shape):
        raise CodecError(f"tensor {name!r}: shape must be a list of at most {_MAX_NDIM} non-negative ints")
    offsets = entry["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_index(o) for o in offsets):
        raise CodecError(f"tensor {name!r}: data_offsets must be two non-negative ints")
    start, end = offsets
    if end < start:
        raise CodecError(f"tensor {name!r}: data_offsets [{start}, {end}] end before they start")
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != end - start:
        raise CodecError(
            f"tensor {name!r}: shape {shape} of {tag} needs {count * dtype.itemsize} bytes "
            f"but data_offsets span {end - start}"
        )
    return dtype, tuple(shape), start, end


def _decode(
    data: bytes | bytearray | memoryview, max_bytes: int | None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"not a safetensors payload: expected bytes, got {type(data).__name__}")
    if isinstance(data, memoryview):
        data = data.cast("B") if data.c_contiguous else data.tobytes()
    if max_bytes is not None and len(data) > max_bytes:
        raise CodecError(f"payload of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    data_start, header = _parse_header(data)
    metadata: dict[str, str] = {}
    spans: list[tuple[int, int, str, np.dtype[Any], tuple[int, ...]]] = []
    for name, entry in header.items():
        if name == _METADATA_KEY:
            metadata = _check_metadata(entry)
            continue
        dtype, shape, start, end = _check_entry(name, entry)
        spans.append((start, end, name, dtype, shape))

    # The tensors must tile the data region exactly: no gaps, no overlap, nothing left over.
    spans.sort(key=lambda span: (span[0], span[1]))
    data_size = len(data) - data_start
    cursor = 0
    for start, end, name, _, _ in spans:
        if start != cursor:
            what = "overlaps the previous tensor" if start < cursor else f"leaves a gap at byte {cursor}"
            raise CodecError(f"tensor {name!r}: data_offsets [{start}, {end}] {what}")
        cursor = end
    if cursor != data_size:
        raise CodecError(
            f"not a safetensors payload: tensors cover {cursor} bytes but the data region holds {data_size}"
        )

    tensors: dict[str, np.ndarray] = {}
    for start, _end, name, dtype, shape in sorted(spans, key=lambda span: span[2]):
        count = (_end - start) // dtype.itemsize
        array = np.frombuffer(data, dtype=dtype, count=count, offset=data_start + start)
        if dtype.kind == "b" and count and int(array.view(np.uint8).max()) > 1:
            raise CodecError(f"tensor {name!r}: BOOL data holds bytes other than 0 and 1")
        if not array.flags.aligned:
            array = array.copy()
        try:
            array = array.reshape(shape)
        except ValueError as exc:
            raise CodecError(f"tensor {name!r}: shape {list(shape)} is not usable ({exc})") from None
        array.flags.writeable = False
        tensors[name] = array
    return tensors, metadata


def decode_tensors(data: bytes, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Decode untrusted safetensors bytes into read-only arrays (sorted by name); ``CodecError`` if bad.

    The arrays are views into ``data`` (no copy) and are read-only; copy one before changing it.
    ``max_bytes`` rejects larger payloads before anything is parsed.
    """
    tensors, _ = _decode(data, max_bytes)
    return tensors


def decode_metadata(data: bytes) -> dict[str, str]:
    """Return the text metadata of untrusted safetensors bytes after validating the whole payload."""
    _, metadata = _decode(data, None)
    return metadata
