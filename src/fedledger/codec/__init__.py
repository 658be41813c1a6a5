"""Tensors <-> bytes: deterministic safetensors encoding and hostile-input-safe decoding (numpy only)."""

from fedledger.codec.tensors import DTYPES, MAX_HEADER_BYTES, decode_metadata, decode_tensors, encode_tensors

__all__ = ["DTYPES", "MAX_HEADER_BYTES", "decode_metadata", "decode_tensors", "encode_tensors"]
