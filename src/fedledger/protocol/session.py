"""A member's working view of one task: its parameters, the unwrapped task key and the agreed spec.

Everything here is derived from the ledger and the store alone, so a process that restarts rebuilds
the same session and carries on where the chain says the task stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedledger.codec import decode_tensors
from fedledger.crypto import BlobContext, MemberIdentity, TaskKey
from fedledger.errors import VerificationError
from fedledger.ledger.types import TaskInfo
from fedledger.protocol.ports import LedgerPort, Sealer
from fedledger.protocol.spec import TaskSpec
from fedledger.store import BlobStore

ZERO_ADDRESS = "0x" + "00" * 20

KIND_SPEC = "spec"
KIND_MODEL = "model"
KIND_UPDATE = "update"


def key_wrap_context(chain_id: int, contract: str, spec_hash: bytes) -> bytes:
    """Binds a wrapped task key to one chain, one contract and one approved spec."""
    return chain_id.to_bytes(8, "big") + bytes.fromhex(contract.removeprefix("0x")) + spec_hash


def task_blob_context(chain_id: int, contract: str, task_id: int, round_: int, kind: str) -> BlobContext:
    """Context of a blob the whole task shares (spec, global models): no single sender owns it.

    Spec and initial model are sealed before the task has an id, so they use task 0, round 0; the task's
    approved parameters pin their hashes, which is what binds them to the task.
    """
    return BlobContext(
        chain_id=chain_id, contract=contract, task_id=task_id, round=round_, sender=ZERO_ADDRESS, kind=kind
    )


@dataclass
class TaskSession:
    """One member's decrypted view of a task; cheap to rebuild from the chain."""

    task: TaskInfo
    key: TaskKey
    spec: TaskSpec
    chain_id: int
    contract: str
    _models: dict[bytes, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def task_id(self) -> int:
        return self.task.task_id

    def participant_index(self, member: str) -> int:
        lowered = [p.lower() for p in self.task.participants]
        return lowered.index(member.lower())

    def update_context(self, round_: int, sender: str) -> BlobContext:
        return BlobContext(
            chain_id=self.chain_id,
            contract=self.contract,
            task_id=self.task_id,
            round=round_,
            sender=sender,
            kind=KIND_UPDATE,
        )

    def model_context(self, round_: int) -> BlobContext:
        """Round 0 is the initial model, sealed before the task existed (task id 0)."""
        task_id = self.task_id if round_ > 0 else 0
        return task_blob_context(self.chain_id, self.contract, task_id, round_, KIND_MODEL)

    def global_model_hash(self, ledger: LedgerPort, round_: int) -> bytes:
        """Hash of the model that round ``round_`` trains from: M(round_-1)."""
        if round_ <= 1:
            return self.task.initial_model_hash
        model_hash = ledger.round_model(self.task_id, round_ - 1)
        if model_hash is None:
            raise VerificationError(
                f"task {self.task_id}: round {round_ - 1} has no finalised model on chain"
            )
        return model_hash

    def load_model(
        self, store: BlobStore, sealer: Sealer, model_hash: bytes, round_: int
    ) -> dict[str, np.ndarray]:
        """Fetch, verify (the store checks the hash), decrypt and decode the model of ``round_``."""
        cached = self._models.get(model_hash)
        if cached is not None:
            return cached
        blob = store.get(model_hash)
        plaintext = sealer.open(self.key, blob, self.model_context(round_))
        tensors = decode_tensors(plaintext)
        if len(self._models) >= 2:
            self._models.pop(next(iter(self._models)))
        self._models[model_hash] = tensors
        return tensors

    def global_model(
        self, ledger: LedgerPort, store: BlobStore, sealer: Sealer, round_: int
    ) -> dict[str, np.ndarray]:
        return self.load_model(store, sealer, self.global_model_hash(ledger, round_), round_ - 1)


def open_session(
    ledger: LedgerPort, store: BlobStore, sealer: Sealer, member: MemberIdentity, task_id: int
) -> TaskSession:
    """Unwrap this member's task key from the chain and read the agreed spec from the store."""
    task = ledger.task(task_id)
    contract = ledger.deployment.training_task
    wrapped = ledger.wrapped_key(task_id, member.address)
    key = sealer.unwrap_key(
        wrapped, member, context=key_wrap_context(ledger.chain_id, contract, task.spec_hash)
    )
    spec_blob = store.get(task.spec_hash)
    spec_ctx = task_blob_context(ledger.chain_id, contract, 0, 0, KIND_SPEC)
    spec = TaskSpec.from_bytes(sealer.open(key, spec_blob, spec_ctx))
    return TaskSession(task=task, key=key, spec=spec, chain_id=ledger.chain_id, contract=contract)
