"""An in-memory blob store: for tests and the "security off" baseline, where disk I/O would blur timings."""

from __future__ import annotations

import threading

from fedledger.store.base import BlobStore, BytesLike


class MemoryBlobStore(BlobStore):
    """Blobs in a dict. ``get`` still verifies, so tests exercise the same checks as real stores."""

    def __init__(self) -> None:
        super().__init__()
        self._blobs: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return "the in-memory blob store"

    def _write(self, address: bytes, data: BytesLike) -> bool:
        with self._lock:
            if address in self._blobs:
                return False
            # bytes() is free for bytes and a private copy for mutable buffers the caller may reuse.
            self._blobs[address] = bytes(data)
            return True

    def _read(self, address: bytes) -> bytes | None:
        return self._blobs.get(address)

    def _exists(self, address: bytes) -> bool:
        return address in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)
