"""Per-task symmetric keys, wrapped for each member with X25519 + HKDF-SHA256 + AES-256-GCM.

A task has one random 256-bit key that encrypts every blob of the task. The task creator wraps it once
per member under that member's registered X25519 public key and records the wrapped copies on chain,
so the store and the network only ever see ciphertext and a member needs nothing but its own keystore.

Wrapped format (``WRAPPED_KEY_SIZE`` = 92 bytes, stored on chain as ``Bytes[92]``)::

    ephemeral_public (32) || nonce (12) || AES-256-GCM(task key) (32) || tag (16)

The wrapping key is HKDF-SHA256 over the ephemeral-static X25519 secret, with the ephemeral and the
recipient public keys as salt and ``context`` (chain id, contract, task id) in ``info``. A wrapped key
therefore opens only for its recipient and only under the context it was made for: copying it into
another task or onto another chain makes it fail instead of silently sharing a key.
"""

from __future__ import annotations

import hmac
import os
import secrets
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.errors import DecryptionError, UsageError

#: Size of a task key in bytes (AES-256).
TASK_KEY_SIZE = 32
#: Size of a raw X25519 public key in bytes.
X25519_PUBLIC_SIZE = 32
_NONCE_SIZE = 12
_TAG_SIZE = 16
#: Size of a wrapped task key: ephemeral public key (32) + nonce (12) + ciphertext (32) + tag (16).
WRAPPED_KEY_SIZE = X25519_PUBLIC_SIZE + _NONCE_SIZE + TASK_KEY_SIZE + _TAG_SIZE
assert WRAPPED_KEY_SIZE == 92

_WRAP_INFO = b"fedledger/taskkey-wrap/v1"
_UNWRAP_FAILED = "task key does not unwrap with this member's key"


@dataclass(frozen=True, eq=False)
class TaskKey:
    """A 256-bit symmetric key shared by the members of one task. Its repr never shows the key."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != TASK_KEY_SIZE:
            raise UsageError(f"a task key must be exactly {TASK_KEY_SIZE} bytes")

    @classmethod
    def generate(cls) -> TaskKey:
        """Draw a fresh key from the OS CSPRNG."""
        return cls(secrets.token_bytes(TASK_KEY_SIZE))

    def __eq__(self, other: object) -> bool:
        # Constant-time, so comparing keys never leaks how many leading bytes matched.
        if not isinstance(other, TaskKey):
            return NotImplemented
        return hmac.compare_digest(self.secret, other.secret)

    __hash__ = None  # type: ignore[assignment]  # secrets are not dictionary keys

    def __repr__(self) -> str:
        return "TaskKey(<hidden>)"


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _wrapping_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes, context: bytes) -> bytes:
    """Derive the one-time AES key; every input that must match on unwrap goes into salt or info."""
    info = _WRAP_INFO + struct.pack(">I", len(context)) + context
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral_public + recipient_public, info=info)
    return hkdf.derive(shared)


def wrap_task_key(key: TaskKey, recipient_public: bytes, *, context: bytes) -> bytes:
    """Encrypt ``key`` for the holder of the X25519 key ``recipient_public``; returns 92 bytes.

    ``context`` should name where the wrapped key will live (chain id, contract, task id) so it cannot be
    reused elsewhere. A fresh ephemeral key per call means wrapping the same key twice gives unrelated
    outputs, and the context is also passed as associated data for defence in depth.
    """
    if not isinstance(recipient_public, bytes) or len(recipient_public) != X25519_PUBLIC_SIZE:
        raise UsageError(f"a member's encryption public key must be {X25519_PUBLIC_SIZE} raw bytes")
    try:
        recipient = X25519PublicKey.from_public_bytes(recipient_public)
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(recipient)
    except ValueError as exc:  # low-order point: the shared secret would be all zeros
        raise UsageError("a member's encryption public key is not a valid X25519 key") from exc
    ephemeral_public = _raw_public(ephemeral.public_key())
    aes_key = _wrapping_key(shared, ephemeral_public, recipient_public, context)
    nonce = os.urandom(_NONCE_SIZE)
    sealed = AESGCM(aes_key).encrypt(nonce, key.secret, context)
    wrapped = ephemeral_public + nonce + sealed
    assert len(wrapped) == WRAPPED_KEY_SIZE
    return wrapped


def unwrap_task_key(wrapped: bytes, recipient: X25519PrivateKey, *, context: bytes) -> TaskKey:
    """Recover a task key wrapped for ``recipient`` under exactly this ``context``.

    Any failure (wrong length, wrong member, wrong context, altered bytes) raises the same
    :class:`DecryptionError`, so the error never hints at which part was wrong.
    """
    if not isinstance(wrapped, bytes | bytearray | memoryview) or len(wrapped) != WRAPPED_KEY_SIZE:
        raise DecryptionError(_UNWRAP_FAILED)
    wrapped = bytes(wrapped)
    ephemeral_public = wrapped[:X25519_PUBLIC_SIZE]
    nonce = wrapped[X25519_PUBLIC_SIZE : X25519_PUBLIC_SIZE + _NONCE_SIZE]
    sealed = wrapped[X25519_PUBLIC_SIZE + _NONCE_SIZE :]
    recipient_public = _raw_public(recipient.public_key())
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        aes_key = _wrapping_key(shared, ephemeral_public, recipient_public, context)
        secret = AESGCM(aes_key).decrypt(nonce, sealed, context)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError(_UNWRAP_FAILED) from exc
    return TaskKey(secret)
