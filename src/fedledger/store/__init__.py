"""Content-addressed, append-only blob stores that verify every read against its SHA-256 address.

Depends only on :mod:`fedledger.errors` (and eth-account, for the HTTP store's request signatures).
The blob server, :mod:`fedledger.store.server`, is imported on demand: it pulls in aiohttp.
"""

from fedledger.store.base import ADDRESS_SIZE, BlobStore, BytesLike, check_address
from fedledger.store.http import HttpBlobStore
from fedledger.store.local import LocalBlobStore
from fedledger.store.memory import MemoryBlobStore

__all__ = [
    "ADDRESS_SIZE",
    "BlobStore",
    "BytesLike",
    "HttpBlobStore",
    "LocalBlobStore",
    "MemoryBlobStore",
    "check_address",
]
