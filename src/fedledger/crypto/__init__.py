"""Identities, task keys and sealed blobs: everything fedledger encrypts, signs or hashes.

Depends only on ``cryptography``, ``eth-account`` and :mod:`fedledger.errors`.
"""

from fedledger.crypto.blobs import (
    BLOB_MAGIC,
    BLOB_OVERHEAD,
    MAX_PLAINTEXT_SIZE,
    BlobContext,
    open_blob,
    seal,
)
from fedledger.crypto.hashing import HASH_SIZE, BytesLike, content_address, from_hex, to_hex
from fedledger.crypto.keystore import (
    MemberIdentity,
    load_keystore,
    new_identity,
    read_password,
    save_keystore,
)
from fedledger.crypto.taskkey import (
    TASK_KEY_SIZE,
    WRAPPED_KEY_SIZE,
    TaskKey,
    unwrap_task_key,
    wrap_task_key,
)

__all__ = [
    "BLOB_MAGIC",
    "BLOB_OVERHEAD",
    "HASH_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "TASK_KEY_SIZE",
    "WRAPPED_KEY_SIZE",
    "BlobContext",
    "BytesLike",
    "MemberIdentity",
    "TaskKey",
    "content_address",
    "from_hex",
    "load_keystore",
    "new_identity",
    "open_blob",
    "read_password",
    "save_keystore",
    "seal",
    "to_hex",
    "unwrap_task_key",
    "wrap_task_key",
]
