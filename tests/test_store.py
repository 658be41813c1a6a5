"""Blob stores: content addressing, verification on read, atomic and idempotent writes."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedledger.errors import BlobCorruptError, BlobNotFoundError, StoreError, UsageError
from fedledger.store import BlobStore, LocalBlobStore, MemoryBlobStore


@pytest.fixture(params=["local", "local-nofsync", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "memory":
        yield MemoryBlobStore()
    else:
        yield LocalBlobStore(tmp_path / "blobs", fsync=request.param == "local")


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_get_has(store: BlobStore) -> None:
    data = os.urandom(10_000)
    address = store.put(data)
    assert address == hashlib.sha256(data).digest()
    assert store.has(address)
    assert store.get(address) == data
    assert not store.has(hashlib.sha256(b"other").digest())
    assert store.bytes_written == len(data) and store.bytes_read == len(data)


def test_put_is_idempotent(store: BlobStore) -> None:
    data = b"the same bytes"
    first = store.put(data)
    second = store.put(bytearray(data))
    assert first == second
    assert store.bytes_written == len(data)  # the second put wrote nothing
    assert store.get(first) == data


def test_empty_and_buffer_blobs(store: BlobStore) -> None:
    assert store.get(store.put(b"")) == b""
    payload = bytearray(b"mutable")
    address = store.put(memoryview(payload))
    payload[0] = ord("M")  # the store must have kept its own copy
    assert store.get(address) == b"mutable"


def test_missing_blob(store: BlobStore) -> None:
    address = hashlib.sha256(b"never stored").digest()
    with pytest.raises(BlobNotFoundError) as info:
        store.get(address)
    assert f"blob 0x{address.hex()} not found in" in str(info.value)


def test_bad_address_is_a_usage_error(store: BlobStore) -> None:
    with pytest.raises(UsageError):
        store.get(b"\x00" * 31)
    with pytest.raises(UsageError):
        store.has("0x" + "00" * 32)  # type: ignore[arg-type]


def test_memory_store_verifies() -> None:
    store = MemoryBlobStore()
    address = store.put(b"honest")
    store._blobs[address] = b"swapped"
    with pytest.raises(BlobCorruptError, match=f"blob 0x{address.hex()}"):
        store.get(address)


def test_local_layout(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    address = store.put(b"layout")
    digits = address.hex()
    assert store.path_for(address) == tmp_path / digits[:2] / digits[2:]
    assert all_files(tmp_path) == [tmp_path / digits[:2] / digits[2:]]


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    address = store.put(b"some encrypted update")
    path = store.path_for(address)
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorruptError) as info:
        store.get(address)
    message = str(info.value)
    assert f"0x{address.hex()}" in message and str(path) in message and "corrupt" in message
    assert store.bytes_read == 0


def test_deleted_blob_is_not_found(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    address = store.put(b"soon gone")
    store.path_for(address).unlink()
    assert not store.has(address)
    with pytest.raises(BlobNotFoundError, match=str(tmp_path)):
        store.get(address)


def test_truncated_copy_is_repaired_by_put(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = b"a blob that got truncated by a careless copy"
    address = store.put(data)
    store.path_for(address).write_bytes(data[:10])
    assert store.put(data) == address
    assert store.get(address) == data


def test_existing_blob_is_not_rewritten(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    address = store.put(b"written once")
    path = store.path_for(address)
    before = path.stat()
    os.utime(path, ns=(1, 1))
    store.put(b"written once")
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == 1


def test_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)

    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    data = b"does not fit"
    with pytest.raises(StoreError) as info:
        store.put(data)
    address = hashlib.sha256(data).digest()
    message = str(info.value)
    assert str(store.path_for(address)) in message and "No space left on device" in message
    assert "\n" not in message
    assert all_files(tmp_path) == []  # no temp file, no final file
    assert store.bytes_written == 0
    monkeypatch.undo()
    with pytest.raises(BlobNotFoundError):
        store.get(address)


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    real_write = os.write
    calls = []

    def short_then_fail(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(memoryview(data)[:100]))  # a partial write, then the disk fills
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put(os.urandom(1000))
    assert calls == [1000, 900]
    assert all_files(tmp_path) == []


def test_target_is_a_directory(tmp_path: Path) -> None:
    """Works even as root, where a read-only chmod would not stop the write."""
    store = LocalBlobStore(tmp_path)
    data = b"blocked"
    address = hashlib.sha256(data).digest()
    store.path_for(address).mkdir(parents=True)
    with pytest.raises(StoreError, match=str(store.path_for(address))):
        store.put(data)
    assert all_files(tmp_path) == []
    with pytest.raises(StoreError, match="cannot read blob"):
        store.get(address)


def test_root_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "not-a-dir"
    root.write_bytes(b"")
    store = LocalBlobStore(root)
    with pytest.raises(StoreError, match="cannot write blob"):
        store.put(b"anything")


def test_large_blob_round_trip(tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024 + 3)
    store = LocalBlobStore(tmp_path, fsync=False)
    assert store.get(store.put(data)) == data
