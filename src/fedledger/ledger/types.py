"""Plain, immutable values the ledger client returns; no web3 objects leak past the client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from fedledger.errors import UsageError


class Role(IntFlag):
    """Member roles, the same bitmask the contracts use."""

    TRAINER = 1
    AGGREGATOR = 2
    VALIDATOR = 4


class Phase(IntEnum):
    """Phase of a task's current round (TrainingTask.vy)."""

    TRAINING = 1
    AGGREGATING = 2
    DONE = 3


class ProposalKind(IntEnum):
    """Kinds of governance proposal (Consortium.vy)."""

    ADD_MEMBER = 1
    REMOVE_MEMBER = 2
    SET_ROLES = 3
    ROTATE_KEY = 4
    APPROVE_TASK = 5


@dataclass(frozen=True)
class MemberInfo:
    address: str
    name: str
    roles: Role
    enc_key: bytes
    active: bool


@dataclass(frozen=True)
class ProposalInfo:
    proposal_id: int
    kind: ProposalKind
    proposer: str
    target: str
    name: str
    roles: Role
    enc_key: bytes
    params_hash: bytes
    approvals: int
    executed: bool


_PARAMS_TYPES = (
    "bytes32",
    "bytes32",
    "uint256",
    "address[]",
    "bytes[]",
    "uint256",
    "uint256",
    "uint256",
    "uint256",
)


@dataclass(frozen=True)
class TaskParams:
    """Everything the admins approve about a task; its hash is what the Consortium records."""

    spec_hash: bytes
    initial_model_hash: bytes
    num_rounds: int
    participants: tuple[str, ...]
    wrapped_keys: tuple[bytes, ...]
    committee_size: int
    min_updates: int
    quorum: int
    round_duration: int

    def __post_init__(self) -> None:
        # Normalise so the off-chain hash always matches what the contract computes.
        object.__setattr__(self, "participants", tuple(to_checksum_address(p) for p in self.participants))
        object.__setattr__(self, "wrapped_keys", tuple(bytes(k) for k in self.wrapped_keys))
        for label, h in (("spec_hash", self.spec_hash), ("initial_model_hash", self.initial_model_hash)):
            if len(h) != 32:
                raise UsageError(f"TaskParams.{label} must be 32 bytes, got {len(h)}")
        if any(len(k) > 92 for k in self.wrapped_keys):
            raise UsageError("TaskParams.wrapped_keys entries must be at most 92 bytes")

    def abi_values(self) -> tuple[Any, ...]:
        """Arguments of createTask, in order."""
        return (
            bytes(self.spec_hash),
            bytes(self.initial_model_hash),
            self.num_rounds,
            list(self.participants),
            list(self.wrapped_keys),
            self.committee_size,
            self.min_updates,
            self.quorum,
            self.round_duration,
        )

    def params_hash(self) -> bytes:
        """keccak256(abi.encode(...)) exactly as TrainingTask.createTask computes it."""
        return keccak(abi_encode(list(_PARAMS_TYPES), list(self.abi_values())))


@dataclass(frozen=True)
class TaskInfo:
    task_id: int
    spec_hash: bytes
    initial_model_hash: bytes
    num_rounds: int
    participants: tuple[str, ...]
    aggregators: tuple[str, ...]
    committee_size: int
    min_updates: int
    quorum: int
    round_duration: int
    num_trainers: int
    creator: str
    trainer_mask: int = 0

    @property
    def trainers(self) -> tuple[str, ...]:
        return tuple(p for i, p in enumerate(self.participants) if self.trainer_mask >> i & 1)


@dataclass(frozen=True)
class TaskState:
    task_id: int
    round: int
    phase: Phase
    opened_at: int
    deadline: int
    submitted_mask: int
    num_submitted: int


@dataclass(frozen=True)
class Submission:
    member: str
    blob_hash: bytes
    num_samples: int


@dataclass(frozen=True)
class LedgerEvent:
    """A decoded contract log; ``args`` holds bytes as bytes and checksummed addresses."""

    contract: str
    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[LedgerEvent, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live; written to the run directory so every process finds the same chain."""

    chain_id: int
    consortium: str
    training_task: str
    deploy_block: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "chain_id": self.chain_id,
                "consortium": self.consortium,
                "training_task": self.training_task,
                "deploy_block": self.deploy_block,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        try:
            d = json.loads(text)
            return cls(
                chain_id=int(d["chain_id"]),
                consortium=to_checksum_address(d["consortium"]),
                training_task=to_checksum_address(d["training_task"]),
                deploy_block=int(d["deploy_block"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"invalid deployment JSON: {e}") from e
