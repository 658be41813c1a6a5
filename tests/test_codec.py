"""Codec: deterministic encoding, compatibility with safetensors, and hostile-input decoding."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedledger.codec import MAX_HEADER_BYTES, decode_metadata, decode_tensors, encode_tensors
from fedledger.errors import CodecError


def _sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "layer.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "layer.bias": rng.standard_normal(4).astype(np.float32),
        "counts": np.arange(5, dtype=np.int64),
        "half": np.ones(3, dtype=np.float16),
        "double": np.linspace(0, 1, 7),
        "mask": np.array([True, False, True]),
        "bytes": np.arange(3, dtype=np.uint8),
        "signed": np.array([-1, 2], dtype=np.int8),
        "i32": np.array([7], dtype=np.int32),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def _payload(header: dict[str, Any], data: bytes, pad: bool = True) -> bytes:
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def test_round_trip_preserves_values_dtypes_and_sorts_names() -> None:
    tensors = _sample()
    decoded = decode_tensors(encode_tensors(tensors))
    assert list(decoded) == sorted(tensors)
    for name, array in tensors.items():
        assert decoded[name].dtype == array.dtype
        assert decoded[name].shape == array.shape
        np.testing.assert_array_equal(decoded[name], array)
        assert not decoded[name].flags.writeable


def test_encoding_is_deterministic_and_order_independent() -> None:
    tensors = _sample()
    metadata = {f"key{i}": str(i) for i in range(12)}
    first = encode_tensors(tensors, metadata)
    reordered = dict(reversed(list(tensors.items())))
    assert encode_tensors(reordered, dict(reversed(list(metadata.items())))) == first
    assert encode_tensors(tensors, metadata) == first
    assert decode_metadata(first) == metadata


def test_bytes_match_safetensors_and_it_reads_them() -> None:
    tensors = _sample()
    ours = encode_tensors(tensors, {"round": "3"})
    assert ours == st_save(tensors, metadata={"round": "3"})
    theirs = st_load(ours)
    for name, array in tensors.items():
        np.testing.assert_array_equal(theirs[name], array)


def test_non_contiguous_and_big_endian_inputs() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = {"t": base.T, "be": np.arange(3, dtype=">f8")}
    decoded = decode_tensors(encode_tensors(tensors))
    np.testing.assert_array_equal(decoded["t"], base.T)
    np.testing.assert_array_equal(decoded["be"], [0.0, 1.0, 2.0])
    assert decoded["be"].dtype == np.dtype("<f8")


@pytest.mark.parametrize("bad", [np.zeros(2, dtype=np.complex64), np.zeros(2, dtype=np.uint16)])
def test_encode_rejects_unsupported_dtype(bad: np.ndarray) -> None:
    with pytest.raises(CodecError, match="cannot be encoded"):
        encode_tensors({"x": bad})


def test_encode_rejects_reserved_name_and_bad_metadata() -> None:
    with pytest.raises(CodecError):
        encode_tensors({"__metadata__": np.zeros(1, np.float32)})
    with pytest.raises(CodecError):
        encode_tensors({"x": np.zeros(1, np.float32)}, {"k": 1})  # type: ignore[dict-item]


def test_max_bytes() -> None:
    payload = encode_tensors({"x": np.zeros(100, np.float32)})
    assert decode_tensors(payload, max_bytes=len(payload))["x"].shape == (100,)
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_tensors(payload, max_bytes=len(payload) - 1)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "shorter than the 8-byte"),
        (struct.pack("<Q", 123456789) + b"{}" * 16, "header length 123456789 exceeds payload size 40"),
        (struct.pack("<Q", 4) + b"[1] ", "not a JSON object"),
        (struct.pack("<Q", 4) + b"{\xff} ", "not valid JSON"),
        (struct.pack("<Q", 8) + b'{"a":1} ', "exactly the fields"),
        (struct.pack("<Q", 0), "too short"),
    ],
)
def test_malformed_headers(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_tensors(payload)


def _entry(dtype: str = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"x": _entry(dtype="BF16", offsets=(0, 4))}, bytes(4), "not allowed"),
        ({"x": _entry(dtype="U64", shape=(1,))}, bytes(8), "not allowed"),
        ({"x": _entry(shape=(-2,))}, bytes(8), "non-negative"),
        ({"x": _entry(shape=(True, 2))}, bytes(8), "non-negative"),
        ({"x": _entry(shape=[1] * 40, offsets=(0, 4))}, bytes(4), "at most"),
        ({"x": _entry(offsets=(0, 12))}, bytes(12), "needs 8 bytes"),
        ({"x": _entry(offsets=(8, 0))}, bytes(8), "end before"),
        ({"x": _entry(offsets=(0, 8))}, bytes(4), "cover 8 bytes"),
        ({"x": _entry(offsets=(0, 8))}, bytes(12), "cover 8 bytes"),
        ({"x": _entry(), "y": _entry(offsets=(4, 12))}, bytes(12), "overlaps"),
        ({"x": _entry(offsets=(4, 12))}, bytes(12), "gap at byte 0"),
        ({"x": {**_entry(), "extra": 1}}, bytes(8), "exactly the fields"),
        ({"__metadata__": {"k": 1}, "x": _entry()}, bytes(8), "__metadata__"),
        ({"x": _entry(dtype="BOOL", shape=(2,), offsets=(0, 2))}, b"\x01\x07", "BOOL data"),
        ({"x": _entry(shape=(2**62, 2**62, 0), offsets=(0, 0))}, b"", "not usable"),
    ],
)
def test_malformed_entries(header: dict[str, Any], data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_tensors(_payload(header, data))


def test_duplicate_keys_and_deep_nesting_and_huge_numbers() -> None:
    raw = b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{}}'
    with pytest.raises(CodecError, match="duplicate key"):
        decode_tensors(struct.pack("<Q", len(raw)) + raw + bytes(4))
    deep = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(CodecError):
        decode_tensors(struct.pack("<Q", len(deep)) + deep)
    huge = b'{"x":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}'
    with pytest.raises(CodecError):
        decode_tensors(struct.pack("<Q", len(huge)) + huge + bytes(4))


def test_header_limit() -> None:
    raw = b"{" + b" " * MAX_HEADER_BYTES + b"}"
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode_tensors(struct.pack("<Q", len(raw)) + raw)


def test_unpadded_header_gives_aligned_copies() -> None:
    data = np.arange(3, dtype=np.float64).tobytes()
    payload = _payload({"x": _entry(dtype="F64", shape=(3,), offsets=(0, 24))}, data, pad=False)
    decoded = decode_tensors(payload)["x"]
    np.testing.assert_array_equal(decoded, [0.0, 1.0, 2.0])
    assert decoded.flags.aligned


def test_accepts_bytearray_and_memoryview() -> None:
    payload = encode_tensors({"x": np.arange(4, dtype=np.float32)})
    for view in (bytearray(payload), memoryview(payload)):
        np.testing.assert_array_equal(decode_tensors(view)["x"], np.arange(4))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected bytes"):
        decode_tensors("text")  # type: ignore[arg-type]


def _decode_or_codec_error(payload: bytes) -> None:
    try:
        tensors = decode_tensors(payload, max_bytes=1 << 20)
        decode_metadata(payload)
    except CodecError as exc:
        assert "\n" not in str(exc)
        return
    for array in tensors.values():
        assert isinstance(array, np.ndarray)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_VALID = encode_tensors(
    {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}, {"m": "x"}
)


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(payload: bytes) -> None:
    _decode_or_codec_error(payload)


@FUZZ
@given(st.binary(max_size=256))
def test_fuzz_arbitrary_header_text(header: bytes) -> None:
    _decode_or_codec_error(struct.pack("<Q", len(header)) + header + bytes(64))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_valid_payload(mutations: list[tuple[int, int]]) -> None:
    payload = bytearray(_VALID)
    for index, value in mutations:
        payload[index] = value
    _decode_or_codec_error(bytes(payload))


@FUZZ
@given(st.integers(0, len(_VALID)), st.binary(max_size=16))
def test_fuzz_truncated_or_extended(cut: int, tail: bytes) -> None:
    _decode_or_codec_error(_VALID[:cut] + tail)


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F64", "F16", "I64", "I32", "I8", "U8", "BOOL", "BF16", "X"]),
        "shape": st.lists(st.integers(-2, 5), max_size=4),
        "data_offsets": st.lists(st.integers(-2, 80), min_size=0, max_size=3),
    }
)


@FUZZ
@given(
    st.dictionaries(st.text(max_size=8), st.one_of(_entries, _json), max_size=4),
    st.binary(max_size=80),
)
def test_fuzz_structured_headers(header: dict[str, Any], data: bytes) -> None:
    _decode_or_codec_error(_payload(header, data, pad=len(data) % 2 == 0))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda name: name != "__metadata__"),
        st.tuples(
            st.sampled_from(["<f4", "<f8", "<f2", "<i8", "<i4", "i1", "u1", "?"]),
            st.lists(st.integers(0, 4), max_size=3),
        ),
        max_size=5,
    ),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_round_trip_property(spec: dict[str, tuple[str, list[int]]], metadata: dict[str, str]) -> None:
    rng = np.random.default_rng(1)
    tensors = {name: rng.integers(0, 2, size=shape).astype(dtype) for name, (dtype, shape) in spec.items()}
    payload = encode_tensors(tensors, metadata)
    decoded = decode_tensors(payload)
    assert list(decoded) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(decoded[name], array)
        assert decoded[name].dtype == array.dtype
    assert decode_metadata(payload) == metadata
    assert encode_tensors(decoded, metadata) == payload
