"""The security-off baseline: the same round protocol held in Python memory, with no chain.

It exists only so benchmarks can measure what the chain, the cryptography and the store cost: the
actors run unchanged against it. It checks nothing a hostile member could abuse and must never be
used for a real consortium.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from fedledger.ledger.types import (
    Deployment,
    LedgerEvent,
    Phase,
    Role,
    Submission,
    TaskInfo,
    TaskParams,
    TaskState,
    TxResult,
)

_NO_TX = TxResult(tx_hash="0x", block_number=0, gas_used=0)


@dataclass
class _Round:
    opened_at: int
    submissions: dict[str, Submission] = field(default_factory=dict)
    votes: dict[tuple[bytes, int, tuple[int, ...]], int] = field(default_factory=dict)
    proposals: dict[str, bytes] = field(default_factory=dict)
    model: bytes | None = None
    included: int = 0


class InMemoryLedger:
    """A plain-Python stand-in for the contracts (one task), used only with security switched off."""

    def __init__(self, *, chain_id: int, members: dict[str, int]) -> None:
        self._chain_id = chain_id
        self._roles = {address.lower(): roles for address, roles in members.items()}
        self._clock_offset = 0
        self._events: list[LedgerEvent] = []
        self._task: TaskInfo | None = None
        self._params: TaskParams | None = None
        self._rounds: dict[int, _Round] = {}
        self._current = 1
        self._phase = Phase.TRAINING
        self._datasets: dict[str, tuple[int, bytes]] = {}
        self._index: dict[str, int] = {}  # participant (lowercase) -> index
        self.tx_count = 0

    @property
    def deployment(self) -> Deployment:
        zero = "0x" + "00" * 20
        return Deployment(chain_id=self._chain_id, consortium=zero, training_task=zero, deploy_block=0)

    @property
    def chain_id(self) -> int:
        return self._chain_id

    def now(self) -> int:
        return int(time.time()) + self._clock_offset

    def advance_time(self, seconds: int) -> None:
        self._clock_offset += seconds

    def _emit(self, name: str, **args: object) -> TxResult:
        self.tx_count += 1
        self._events.append(
            LedgerEvent(
                contract="TrainingTask",
                name=name,
                args=dict(args),
                block_number=len(self._events),
                tx_hash="0x",
                log_index=0,
            )
        )
        return _NO_TX

    # governance is a formality here: one task, created at once
    def propose_task(self, admin: LocalAccount, params: TaskParams) -> int:
        self._params = params
        return 1

    def approve(self, admin: LocalAccount, proposal_id: int) -> TxResult:
        return _NO_TX

    def create_task(self, sender: LocalAccount, params: TaskParams) -> int:
        aggregators = tuple(p for p in params.participants if self._roles[p.lower()] & Role.AGGREGATOR)
        trainer_mask = sum(
            1 << i for i, p in enumerate(params.participants) if self._roles[p.lower()] & Role.TRAINER
        )
        trainers = bin(trainer_mask).count("1")
        self._task = TaskInfo(
            task_id=1,
            spec_hash=params.spec_hash,
            initial_model_hash=params.initial_model_hash,
            num_rounds=params.num_rounds,
            participants=params.participants,
            aggregators=aggregators,
            committee_size=params.committee_size,
            min_updates=params.min_updates,
            quorum=params.quorum,
            round_duration=params.round_duration,
            num_trainers=trainers,
            creator=sender.address,
            trainer_mask=trainer_mask,
        )
        self._params = params
        self._index = {p.lower(): i for i, p in enumerate(params.participants)}
        self._rounds[1] = _Round(opened_at=self.now())
        self._emit("TaskCreated", taskId=1)
        return 1

    def _info(self) -> TaskInfo:
        assert self._task is not None, "no task created"
        return self._task

    def task(self, task_id: int) -> TaskInfo:
        return self._info()

    def task_state(self, task_id: int) -> TaskState:
        info = self._info()
        current = self._rounds[self._current]
        mask = 0
        for member in current.submissions:
            mask |= 1 << self._index[member]
        return TaskState(
            task_id=task_id,
            round=self._current,
            phase=self._phase,
            opened_at=current.opened_at,
            deadline=current.opened_at + info.round_duration,
            submitted_mask=mask,
            num_submitted=len(current.submissions),
        )

    def committee(self, task_id: int, round_: int) -> tuple[str, ...]:
        info = self._info()
        n = len(info.aggregators)
        start = ((round_ - 1) * info.committee_size) % n
        return tuple(info.aggregators[(start + i) % n] for i in range(info.committee_size))

    def submissions(self, task_id: int, round_: int) -> list[Submission]:
        info = self._info()
        subs = self._rounds[round_].submissions
        return [subs[p.lower()] for p in info.participants if p.lower() in subs]

    def round_model(self, task_id: int, round_: int) -> bytes | None:
        record = self._rounds.get(round_)
        return record.model if record else None

    def proposal_of(self, task_id: int, round_: int, aggregator: str) -> bytes | None:
        record = self._rounds.get(round_)
        return record.proposals.get(aggregator.lower()) if record else None

    def wrapped_key(self, task_id: int, member: str) -> bytes:
        self._info()
        assert self._params is not None
        return self._params.wrapped_keys[self._index[member.lower()]]

    def dataset(self, task_id: int, member: str) -> tuple[int, bytes] | None:
        return self._datasets.get(member.lower())

    def events(self, from_block: int = 0, to_block: int | None = None) -> list[LedgerEvent]:
        """Events in order; each event is its own "block" here (block_number = its position)."""
        last = len(self._events) - 1 if to_block is None else to_block
        return [e for e in self._events if from_block <= e.block_number <= last]

    def register_dataset(
        self,
        sender: LocalAccount,
        task_id: int,
        num_samples: int,
        label_histogram: Sequence[int],
        merkle_root: bytes,
    ) -> TxResult:
        self._datasets[sender.address.lower()] = (num_samples, merkle_root)
        return self._emit("DatasetRegistered", taskId=task_id, member=sender.address, numSamples=num_samples)

    def submit_update(
        self, sender: LocalAccount, task_id: int, round_: int, blob_hash: bytes, num_samples: int
    ) -> TxResult:
        self._rounds[round_].submissions[sender.address.lower()] = Submission(
            member=sender.address, blob_hash=blob_hash, num_samples=num_samples
        )
        if len(self._rounds[round_].submissions) == self._info().num_trainers:
            self._phase = Phase.AGGREGATING
        return self._emit(
            "UpdateSubmitted", taskId=task_id, round=round_, member=sender.address, numSamples=num_samples
        )

    def propose_aggregate(
        self,
        sender: LocalAccount,
        task_id: int,
        round_: int,
        model_hash: bytes,
        included: int,
        reasons: Sequence[int],
    ) -> TxResult:
        info = self._info()
        record = self._rounds[round_]
        self._phase = Phase.AGGREGATING
        key = (model_hash, included, tuple(reasons))
        record.votes[key] = record.votes.get(key, 0) + 1
        record.proposals[sender.address.lower()] = model_hash
        self._emit(
            "AggregateProposed",
            taskId=task_id,
            round=round_,
            aggregator=sender.address,
            modelHash=model_hash,
            included=included,
            reasons=list(reasons),
        )
        if record.votes[key] == info.quorum:
            record.model = model_hash
            record.included = included
            self._emit(
                "RoundFinalized", taskId=task_id, round=round_, modelHash=model_hash, included=included
            )
            if round_ == info.num_rounds:
                self._phase = Phase.DONE
            else:
                self._current = round_ + 1
                self._phase = Phase.TRAINING
                self._rounds[self._current] = _Round(opened_at=self.now())
        return _NO_TX

    def reopen_round(self, sender: LocalAccount, task_id: int) -> TxResult:
        self._rounds[self._current].opened_at = self.now()
        return self._emit("RoundReopened", taskId=task_id, round=self._current)

    def post_metrics(
        self,
        sender: LocalAccount,
        task_id: int,
        round_: int,
        accuracy: float,
        loss: float,
        num_examples: int,
    ) -> TxResult:
        return self._emit(
            "MetricsPosted",
            taskId=task_id,
            round=round_,
            validator=sender.address,
            accuracyPpm=round(accuracy * 1e6),
            lossPpm=round(loss * 1e6),
            numExamples=num_examples,
        )
