"""Plain, immutable values the ledger client returns; no web3 objects leak past the client."""

from __future__ import annotations

import json
from collections.abc import Sequence
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

    SETUP = 0  # participant batches still being added; round 1 opens after the last one
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


#: Participants one task may have (TrainingTask.vy MAX_PARTICIPANTS).
MAX_PARTICIPANTS = 1024
#: Participants per createTask / addParticipants transaction (at most TrainingTask.vy MAX_BATCH).
PARTICIPANT_BATCH = 128
WRAPPED_KEY_MAX = 92
ZERO32 = b"\x00" * 32

_PARAMS_TYPES = (
    "bytes32",
    "bytes32",
    "uint256",
    "uint256",
    "bytes32",
    "uint256",
    "uint256",
    "uint256",
    "uint256",
)
_BATCH_TYPES = ("address[]", "bytes[]", "bytes32")


@dataclass(frozen=True)
class ParticipantBatch:
    """One createTask / addParticipants slice of a task's participants, chained to the next by hash."""

    first: int
    participants: tuple[str, ...]
    wrapped_keys: tuple[bytes, ...]
    next_commitment: bytes  # commitment of the batches after this one (zero for the last)

    def commitment(self) -> bytes:
        """keccak256(abi.encode(participants, wrappedKeys, next)), what the contract checks."""
        return keccak(
            abi_encode(
                list(_BATCH_TYPES), [list(self.participants), list(self.wrapped_keys), self.next_commitment]
            )
        )


def words_of(mask: int, count: int) -> list[int]:
    """A participant bitmap as ``count`` 256-bit words, least significant first (the contracts' form)."""
    return [(mask >> (256 * w)) & (2**256 - 1) for w in range(count)]


def mask_of_words(words: Sequence[int]) -> int:
    """The inverse of :func:`words_of`: one Python int, bit i for participant i."""
    return sum(int(w) << (256 * i) for i, w in enumerate(words))


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
        if any(len(k) > WRAPPED_KEY_MAX for k in self.wrapped_keys):
            raise UsageError(f"TaskParams.wrapped_keys entries must be at most {WRAPPED_KEY_MAX} bytes")
        if len(self.wrapped_keys) != len(self.participants):
            raise UsageError(
                f"TaskParams has {len(self.participants)} participants but {len(self.wrapped_keys)} wrapped keys"
            )
        if len(self.participants) > MAX_PARTICIPANTS:
            raise UsageError(
                f"a task has at most {MAX_PARTICIPANTS} participants, got {len(self.participants)}"
            )

    def batches(self) -> list[ParticipantBatch]:
        """The participants in PARTICIPANT_BATCH slices, each committing to the ones after it."""
        n = len(self.participants)
        starts = list(range(0, n, PARTICIPANT_BATCH)) or [0]
        out: list[ParticipantBatch] = []
        following = ZERO32
        for start in reversed(starts):
            end = start + PARTICIPANT_BATCH
            batch = ParticipantBatch(start, self.participants[start:end], self.wrapped_keys[start:end], following)
            following = batch.commitment()
            out.append(batch)
        return out[::-1]

    def abi_values(self) -> tuple[Any, ...]:
        """Arguments of createTask, in order (the first participant batch)."""
        first = self.batches()[0]
        return (
            bytes(self.spec_hash),
            bytes(self.initial_model_hash),
            self.num_rounds,
            len(self.participants),
            self.committee_size,
            self.min_updates,
            self.quorum,
            self.round_duration,
            list(first.participants),
            list(first.wrapped_keys),
            first.next_commitment,
        )

    def params_hash(self) -> bytes:
        """keccak256(abi.encode(...)) exactly as TrainingTask.createTask computes it: the participants
        and their wrapped keys enter through the commitment of the first batch, which chains the rest."""
        values = (
            bytes(self.spec_hash),
            bytes(self.initial_model_hash),
            self.num_rounds,
            len(self.participants),
            self.batches()[0].commitment(),
            self.committee_size,
            self.min_updates,
            self.quorum,
            self.round_duration,
        )
        return keccak(abi_encode(list(_PARAMS_TYPES), list(values)))


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
