"""The narrow interfaces the actors need from the layers below.

Actors depend on these protocols, not on concrete backends, so the same actor code runs on the embedded
chain, on any JSON-RPC node, and (for the security-off baseline) on an in-memory ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from eth_account.signers.local import LocalAccount

from fedledger.crypto import (
    BlobContext,
    MemberIdentity,
    TaskKey,
    open_blob,
    seal,
    unwrap_task_key,
    wrap_task_key,
)
from fedledger.ledger.types import Deployment, LedgerEvent, Submission, TaskInfo, TaskState, TxResult


class LedgerPort(Protocol):
    """What a trainer, aggregator or validator reads from and writes to the ledger."""

    @property
    def deployment(self) -> Deployment: ...

    @property
    def chain_id(self) -> int: ...

    def now(self) -> int: ...

    def task(self, task_id: int) -> TaskInfo: ...

    def task_state(self, task_id: int) -> TaskState: ...

    def committee(self, task_id: int, round_: int) -> tuple[str, ...]: ...

    def submissions(self, task_id: int, round_: int) -> list[Submission]: ...

    def round_model(self, task_id: int, round_: int) -> bytes | None: ...

    def proposal_of(self, task_id: int, round_: int, aggregator: str) -> bytes | None: ...

    def wrapped_key(self, task_id: int, member: str) -> bytes: ...

    def dataset(self, task_id: int, member: str) -> tuple[int, bytes] | None: ...

    def register_dataset(
        self,
        sender: LocalAccount,
        task_id: int,
        num_samples: int,
        label_histogram: Sequence[int],
        merkle_root: bytes,
    ) -> TxResult: ...

    def submit_update(
        self, sender: LocalAccount, task_id: int, round_: int, blob_hash: bytes, num_samples: int
    ) -> TxResult: ...

    def propose_aggregate(
        self,
        sender: LocalAccount,
        task_id: int,
        round_: int,
        model_hash: bytes,
        included: int,
        reasons: Sequence[int],
    ) -> TxResult: ...

    def reopen_round(self, sender: LocalAccount, task_id: int) -> TxResult: ...

    def events(self, from_block: int = 0, to_block: int | None = None) -> list[LedgerEvent]: ...

    def post_metrics(
        self,
        sender: LocalAccount,
        task_id: int,
        round_: int,
        accuracy: float,
        loss: float,
        num_examples: int,
    ) -> TxResult: ...


class Sealer(Protocol):
    """Seals and opens blobs; AES-256-GCM normally, identity for the security-off baseline."""

    def seal(
        self, key: TaskKey, plaintext: bytes, ctx: BlobContext, *, deterministic: bool = False
    ) -> bytes: ...

    def open(self, key: TaskKey, blob: bytes, ctx: BlobContext) -> bytes: ...

    def wrap_key(self, key: TaskKey, recipient_public: bytes, *, context: bytes) -> bytes: ...

    def unwrap_key(self, wrapped: bytes, member: MemberIdentity, *, context: bytes) -> TaskKey: ...


class AeadSealer:
    """AES-256-GCM with the blob's context as associated data (the only sealer of a secured run)."""

    def seal(self, key: TaskKey, plaintext: bytes, ctx: BlobContext, *, deterministic: bool = False) -> bytes:
        return seal(key, plaintext, ctx, deterministic=deterministic)

    def open(self, key: TaskKey, blob: bytes, ctx: BlobContext) -> bytes:
        return open_blob(key, blob, ctx)

    def wrap_key(self, key: TaskKey, recipient_public: bytes, *, context: bytes) -> bytes:
        return wrap_task_key(key, recipient_public, context=context)

    def unwrap_key(self, wrapped: bytes, member: MemberIdentity, *, context: bytes) -> TaskKey:
        return unwrap_task_key(wrapped, member.x25519_private(), context=context)


class PlaintextSealer:
    """No encryption: only for measuring what security costs (``security.enabled = false``)."""

    def seal(self, key: TaskKey, plaintext: bytes, ctx: BlobContext, *, deterministic: bool = False) -> bytes:
        return plaintext

    def open(self, key: TaskKey, blob: bytes, ctx: BlobContext) -> bytes:
        return blob

    def wrap_key(self, key: TaskKey, recipient_public: bytes, *, context: bytes) -> bytes:
        return key.secret

    def unwrap_key(self, wrapped: bytes, member: MemberIdentity, *, context: bytes) -> TaskKey:
        return TaskKey(wrapped)
