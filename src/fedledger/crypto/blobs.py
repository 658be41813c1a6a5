"""Sealed blobs: AES-256-GCM under the task key, bound to where the blob belongs.

Format::

    b"FLB1" || nonce (12) || ciphertext (len(plaintext)) || tag (16)

The associated data (:meth:`BlobContext.associated_data`) binds chain id, contract, task, round, sender
and kind, so a blob committed for round 3 by one member cannot be replayed as round 4, as another member's
update, or as a model: it simply fails to authenticate.

Two keys are derived from the task key with HKDF-SHA256, one to encrypt and one to derive deterministic
nonces, so the nonce MAC and the cipher never share key material.

Performance: sealing is on the hot path of every round (serialise + hash + encrypt of each update), and
for a large blob the cost is dominated by touching fresh memory, not by AES (several GB/s with AES-NI).
So the output is written exactly once, straight into the ``bytes`` object that is returned (no
``header + ciphertext`` concatenation, no zero-filled staging buffer), and on Linux that buffer asks for
transparent huge pages. The payload is fed to GCM in chunks, which also lifts the 2**31-1 byte per-call
limit of ``AESGCM``; the bytes produced are identical to one-shot AES-GCM.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.crypto.hashing import BytesLike
from fedledger.crypto.taskkey import TaskKey
from fedledger.errors import DecryptionError, UsageError

#: Leading bytes of every sealed blob (format version 1).
BLOB_MAGIC = b"FLB1"
NONCE_SIZE = 12
TAG_SIZE = 16
#: Bytes a sealed blob adds to its plaintext.
BLOB_OVERHEAD = len(BLOB_MAGIC) + NONCE_SIZE + TAG_SIZE
_HEADER_SIZE = len(BLOB_MAGIC) + NONCE_SIZE
#: GCM's limit for one message under one nonce is 2**39 - 256 bits; stay below it.
MAX_PLAINTEXT_SIZE = 2**36 - 32
#: Bytes handed to the GCM context per call (OpenSSL takes an ``int`` length). Tests shrink it.
_CHUNK_SIZE = 1 << 30
# GCM is a stream mode, but ``update_into`` insists the output buffer has block_size - 1 spare bytes.
_UPDATE_SLACK = 15

_AAD_DOMAIN = b"fedledger/blob-aad/v1"
_ENC_INFO = b"fedledger/blob/enc/v1"
_NONCE_INFO = b"fedledger/blob/nonce/v1"
_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{40}")
_UINT256_MAX = 2**256 - 1
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class BlobContext:
    """Where a blob belongs; sealed into its associated data so it cannot be moved elsewhere."""

    chain_id: int
    contract: str
    task_id: int
    round: int
    sender: str
    kind: str

    def __post_init__(self) -> None:
        for name in ("chain_id", "task_id", "round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT256_MAX:
                raise UsageError(f"blob context: {name} must be an integer in [0, 2**256), got {value!r}")
        for name in ("contract", "sender"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
                raise UsageError(f"blob context: {name} must be a 0x-prefixed 20-byte address, got {value!r}")
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            raise UsageError(
                f"blob context: kind must be 1-64 chars of [A-Za-z0-9_.-] (e.g. 'update'), got {self.kind!r}"
            )

    def associated_data(self) -> bytes:
        """Canonical AAD: fixed-width fields, then the length-prefixed kind last.

        Integers are 32-byte big-endian and addresses 20 raw bytes (so checksum case does not matter);
        with every field fixed-width except the final, length-prefixed one, two different contexts can
        never encode to the same bytes.
        """
        kind = self.kind.encode("ascii")
        return b"".join(
            (
                _AAD_DOMAIN,
                self.chain_id.to_bytes(32, "big"),
                bytes.fromhex(self.contract[2:]),
                self.task_id.to_bytes(32, "big"),
                self.round.to_bytes(32, "big"),
                bytes.fromhex(self.sender[2:]),
                struct.pack(">H", len(kind)),
                kind,
            )
        )

    def describe(self) -> str:
        """Short human description for error messages, e.g. ``update blob of round 3 from 0xAb…``."""
        return f"{self.kind} blob of task {self.task_id} round {self.round} from {self.sender}"


def _subkey(key: TaskKey, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key.secret)


# --- output buffers -------------------------------------------------------------------------------------

# Our own prototype (not ctypes.pythonapi's shared attribute, whose argtypes other code may set).
_PyBytes_FromStringAndSize = (
    ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
        ("PyBytes_FromStringAndSize", ctypes.pythonapi)
    )
    if sys.implementation.name == "cpython"
    else None
)


def _huge_page_size() -> int:
    """The transparent huge page size if the kernel grants them only on request (``madvise``), else 0."""
    if not sys.platform.startswith("linux"):
        return 0
    thp = Path("/sys/kernel/mm/transparent_hugepage")
    try:
        if "[madvise]" not in (thp / "enabled").read_text():
            return 0  # "always": every large mapping already gets them; "never": asking is pointless
        return int((thp / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 0


_HUGE_PAGE = _huge_page_size()
_MADV_HUGEPAGE = 14  # <asm-generic/mman-common.h>
_madvise = None
if _HUGE_PAGE:
    try:
        _madvise = ctypes.CDLL(None, use_errno=True).madvise
        _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _madvise = None


def _advise_huge_pages(address: int, size: int) -> None:
    """Ask for huge pages under a large, not yet touched output buffer (best effort, Linux only).

    Under a hypervisor each 4 KiB page fault and TLB miss is expensive; backing a fresh 400 MB blob with
    2 MiB pages roughly doubles seal and open throughput here. Only whole huge pages strictly inside the
    buffer are advised, and a refusal changes nothing but speed.
    """
    if _madvise is None or size < 4 * _HUGE_PAGE:
        return
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    end = (address + size) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        _madvise(start, end - start, _MADV_HUGEPAGE)


def _uninitialised_bytes(size: int) -> tuple[bytes, memoryview] | None:
    """Return a new, unfilled ``bytes`` of ``size`` and a writable view of it, or None if unsupported.

    ``PyBytes_FromStringAndSize(NULL, n)`` is the C-API way to get a bytes object that the caller fills
    before anyone else sees it; it saves a zero-fill and a full copy of every large blob. Sizes 0 and 1
    are shared singletons and must never be written, so they take the fallback.
    """
    if _PyBytes_FromStringAndSize is None or size < 2:
        return None
    out = _PyBytes_FromStringAndSize(None, size)
    assert type(out) is bytes and len(out) == size
    address = ctypes.cast(ctypes.c_char_p(out), ctypes.c_void_p).value
    assert address is not None
    _advise_huge_pages(address, size)
    return out, memoryview((ctypes.c_char * size).from_address(address)).cast("B")


class _OutputBuffer:
    """A ``bytes`` result of known size that is written once, in place, then handed out.

    The bytes object is never hashed, interned or shared before :meth:`finish`. Where an uninitialised
    bytes object is not available this falls back to a ``bytearray`` and one copy.
    """

    def __init__(self, size: int) -> None:
        self._bytes: bytes | None = None
        self._array: bytearray | None = None
        fast = _uninitialised_bytes(size)
        if fast is not None:
            self._bytes, self.view = fast
        else:
            self._array = bytearray(size)
            self.view = memoryview(self._array)

    def finish(self) -> bytes:
        self.view.release()
        if self._bytes is not None:
            return self._bytes
        assert self._array is not None
        return bytes(self._array)


# --- seal / open ----------------------------------------------------------------------------------------


def _deterministic_nonce(key: TaskKey, aad: bytes, plaintext: BytesLike) -> bytes:
    digest = hashlib.sha256(plaintext).digest()
    mac_input = struct.pack(">I", len(aad)) + aad + digest
    return hmac.new(_subkey(key, _NONCE_INFO), mac_input, hashlib.sha256).digest()[:NONCE_SIZE]


def seal(key: TaskKey, plaintext: BytesLike, ctx: BlobContext, *, deterministic: bool = False) -> bytes:
    """Encrypt ``plaintext`` for the blob store, bound to ``ctx``.

    Normally the nonce is 96 random bits. With ``deterministic=True`` it is
    ``HMAC-SHA256(nonce_key, AAD || SHA-256(plaintext))[:12]`` (SIV-style), so every honest aggregator
    that computes the same model under the same context produces byte-identical blobs and hence the same
    content address, which is what lets the contract compare their proposals.

    This is safe because the nonce is a PRF of exactly what AES-GCM is applied to: it repeats only when
    both the plaintext and the associated data repeat, and then the whole ciphertext repeats too, which
    reveals only that the two blobs are equal (a fact their equal content addresses show anyway). Two
    different (plaintext, AAD) pairs collide on a 96-bit nonce only with probability ~2**-96 per pair.
    The MAC key is HKDF-derived separately from the encryption key. Use it for shared results (models),
    not for private updates where hiding equality might matter.
    """
    data = memoryview(plaintext).cast("B")
    size = len(data)
    if size > MAX_PLAINTEXT_SIZE:
        raise UsageError(
            f"cannot seal {ctx.describe()}: {size} bytes exceeds the AES-GCM limit of "
            f"{MAX_PLAINTEXT_SIZE} bytes per blob; split the payload"
        )
    aad = ctx.associated_data()
    nonce = _deterministic_nonce(key, aad, plaintext) if deterministic else os.urandom(NONCE_SIZE)
    encryptor = Cipher(algorithms.AES(_subkey(key, _ENC_INFO)), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)

    out = _OutputBuffer(_HEADER_SIZE + size + TAG_SIZE)
    out.view[: len(BLOB_MAGIC)] = BLOB_MAGIC
    out.view[len(BLOB_MAGIC) : _HEADER_SIZE] = nonce
    body = out.view[_HEADER_SIZE:]
    try:
        for start in range(0, size, _CHUNK_SIZE):
            end = min(start + _CHUNK_SIZE, size)
            # The output slice runs TAG_SIZE (>= the slack OpenSSL asks for) bytes past the chunk; those
            # bytes are overwritten by the next chunk or by the tag.
            encryptor.update_into(data[start:end], body[start : end + TAG_SIZE])
        encryptor.finalize()
        body[size:] = encryptor.tag
    finally:
        body.release()
        data.release()
    return out.finish()


def open_blob(key: TaskKey, blob: BytesLike, ctx: BlobContext) -> bytes:
    """Decrypt a sealed blob, checking that it was sealed under ``key`` for exactly ``ctx``.

    Every failure is a :class:`DecryptionError` with one line naming the blob's kind, round and sender.
    """
    try:
        view = memoryview(blob).cast("B")
    except TypeError as exc:
        raise DecryptionError(f"{ctx.describe()} is not a byte string") from exc
    if len(view) < BLOB_OVERHEAD:
        raise DecryptionError(
            f"{ctx.describe()} is too short to be a sealed blob ({len(view)} < {BLOB_OVERHEAD} bytes)"
        )
    if view[: len(BLOB_MAGIC)] != BLOB_MAGIC:
        raise DecryptionError(f"{ctx.describe()} is not a fedledger sealed blob (bad magic)")
    nonce = bytes(view[len(BLOB_MAGIC) : _HEADER_SIZE])
    tag = bytes(view[-TAG_SIZE:])
    ciphertext = view[_HEADER_SIZE:-TAG_SIZE]
    size = len(ciphertext)
    decryptor = Cipher(algorithms.AES(_subkey(key, _ENC_INFO)), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(ctx.associated_data())

    out = _OutputBuffer(size)
    try:
        # Decrypt straight into the result except the last few bytes, which lack the spare room
        # update_into wants. The result only escapes once the tag has verified.
        direct = max(size - _UPDATE_SLACK, 0)
        for start in range(0, direct, _CHUNK_SIZE):
            end = min(start + _CHUNK_SIZE, direct)
            decryptor.update_into(ciphertext[start:end], out.view[start : end + _UPDATE_SLACK])
        out.view[direct:] = decryptor.update(ciphertext[direct:])
        decryptor.finalize()
    except InvalidTag:
        raise DecryptionError(
            f"{ctx.describe()} does not authenticate: wrong task key, sealed for another "
            "chain/contract/task/round/sender/kind, or altered"
        ) from None
    finally:
        ciphertext.release()
        view.release()
    return out.finish()
