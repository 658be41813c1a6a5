"""Content addresses: SHA-256 of the stored bytes, committed on chain as ``bytes32``.

Anyone holding a blob can recompute its address, so the chain record alone is enough to prove that the
bytes a store hands back are the bytes a member committed.
"""

from __future__ import annotations

import hashlib
import re

from fedledger.errors import UsageError

#: Anything that exposes contiguous bytes without a copy.
BytesLike = bytes | bytearray | memoryview

#: Size in bytes of a content address (SHA-256 digest, ``bytes32`` on chain).
HASH_SIZE = 32

_HEX32 = re.compile(r"(?:0[xX])?([0-9a-fA-F]{64})")


def content_address(data: BytesLike) -> bytes:
    """Return the 32-byte SHA-256 of ``data``: the name under which a blob is stored and committed."""
    return hashlib.sha256(data).digest()


def to_hex(h: bytes) -> str:
    """Render bytes as the ``0x``-prefixed lower-case hex that chain tools and explorers show."""
    return "0x" + bytes(h).hex()


def from_hex(s: str) -> bytes:
    """Parse a 32-byte hash given as 64 hex digits (``0x`` prefix optional).

    Raises :class:`UsageError` naming the bad value, since these come from users and config files.
    """
    match = _HEX32.fullmatch(s.strip()) if isinstance(s, str) else None
    if match is None:
        shown = s if isinstance(s, str) and len(s) <= 80 else f"{str(s)[:77]}..."
        raise UsageError(f"not a 32-byte hex hash (expected 0x and 64 hex digits): {shown!r}")
    return bytes.fromhex(match.group(1))
