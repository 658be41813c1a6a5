"""The exception hierarchy every layer raises from.

Each error carries one line a user can act on: which file, field, member, round or blob is wrong.
The CLI prints ``str(error)`` and exits with ``exit_code``; it never shows a traceback for these.
"""

from __future__ import annotations


class FedledgerError(Exception):
    """Base of every error fedledger raises on purpose."""

    exit_code: int = 1


class UsageError(FedledgerError):
    """The user asked for something that cannot work as given (bad config, missing file, wrong path)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file is invalid; the message names the file and the field."""


class KeystoreError(UsageError):
    """A keystore is missing, malformed or its password is wrong."""


class VerificationError(FedledgerError):
    """Something recorded does not check out (hash, signature, decryption, aggregate)."""


class CodecError(VerificationError):
    """Bytes that should hold tensors do not decode as a valid safetensors payload."""


class DecryptionError(VerificationError):
    """A blob does not decrypt under the expected key and associated data."""


class StoreError(FedledgerError):
    """The blob store failed to read or write."""


class BlobNotFoundError(StoreError):
    """No blob with the requested content address exists in the store."""


class BlobCorruptError(StoreError, VerificationError):
    """A stored blob's bytes no longer match its content address."""


class LedgerError(FedledgerError):
    """The chain could not be reached or answered with an error."""


class TransactionRevertedError(LedgerError):
    """A transaction was mined but reverted; ``reason`` holds the contract's message."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason
