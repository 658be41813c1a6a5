"""The blob store interface: content-addressed, append-only, and verified on every read.

A store is untrusted: it may lose, corrupt or swap bytes. So :meth:`BlobStore.get` always recomputes
SHA-256 and refuses anything that does not match the address the chain committed to. Backends (local
directory, memory, HTTP) only move bytes; hashing, verification and the I/O counters live here so every
backend behaves the same.
"""

from __future__ import annotations

import abc
import hashlib

from fedledger.errors import BlobCorruptError, BlobNotFoundError, UsageError

#: Anything that exposes contiguous bytes without a copy.
BytesLike = bytes | bytearray | memoryview

ADDRESS_SIZE = 32


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


def check_address(address: bytes) -> bytes:
    """Return ``address`` as bytes if it is a 32-byte SHA-256 digest, else raise :class:`UsageError`."""
    if not isinstance(address, bytes | bytearray) or len(address) != ADDRESS_SIZE:
        raise UsageError(f"a blob address must be 32 bytes (a SHA-256 digest), got {address!r:.80}")
    return bytes(address)


class BlobStore(abc.ABC):
    """Content-addressed blob storage. Subclasses implement the ``_read``/``_write``/``_exists`` hooks."""

    def __init__(self) -> None:
        #: Bytes actually written (a ``put`` of a blob already present writes nothing).
        self.bytes_written = 0
        #: Bytes returned by ``get``.
        self.bytes_read = 0

    # -- public API --------------------------------------------------------------------------------------

    def put(self, data: BytesLike) -> bytes:
        """Store ``data`` and return its content address (SHA-256). Idempotent: same bytes, same address."""
        address = hashlib.sha256(data).digest()
        if self._write(address, data):
            self.bytes_written += memoryview(data).nbytes
        return address

    def get(self, address: bytes) -> bytes:
        """Return the blob stored under ``address``, after checking its SHA-256 equals the address."""
        address = check_address(address)
        data = self._read(address)
        if data is None:
            raise BlobNotFoundError(f"blob {_hex(address)} not found in {self.where}")
        actual = hashlib.sha256(data).digest()
        if actual != address:
            raise BlobCorruptError(
                f"blob {_hex(address)} in {self.location(address)} is corrupt: "
                f"its bytes hash to {_hex(actual)}"
            )
        self.bytes_read += len(data)
        return data

    def has(self, address: bytes) -> bool:
        """Whether a blob is stored under ``address`` (without reading or verifying it)."""
        return self._exists(check_address(address))

    # -- backend hooks -----------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """A short description of the store for messages, e.g. its root directory."""

    def location(self, address: bytes) -> str:
        """Where one blob lives, for messages (a file path for file-backed stores)."""
        return self.where

    @abc.abstractmethod
    def _write(self, address: bytes, data: BytesLike) -> bool:
        """Store ``data`` under ``address`` unless already present; return whether bytes were written."""

    @abc.abstractmethod
    def _read(self, address: bytes) -> bytes | None:
        """Return the stored bytes, or None if there is no blob under ``address``."""

    @abc.abstractmethod
    def _exists(self, address: bytes) -> bool:
        """Whether a blob is stored under ``address``."""
