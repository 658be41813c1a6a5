"""Content-addressed, append-only blob stores that verify every read against its SHA-256 address.

Depends only on :mod:`fedledger.errors`.
"""

from fedledger.store.base import ADDRESS_SIZE, BlobStore, BytesLike, check_address
from fedledger.store.local import LocalBlobStore
from fedledger.store.memory import MemoryBlobStore

__all__ = ["ADDRESS_SIZE", "BlobStore", "BytesLike", "LocalBlobStore", "MemoryBlobStore", "check_address"]
