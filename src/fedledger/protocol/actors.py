"""The three actors of the round protocol: trainer, aggregator, validator.

Each actor talks to the others only through the ledger and the blob store. ``step`` looks at what the
chain says now and does at most one piece of work, so an actor can be driven by an in-process simulation
loop or by a long-running member process, killed at any moment, and restarted: it never repeats what
the chain already records (one submission, one proposal and one metric per round).
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
from torch import nn

from fedledger.codec import encode_tensors
from fedledger.crypto import MemberIdentity
from fedledger.errors import TransactionRevertedError
from fedledger.learning import (
    Dataset,
    TrainConfig,
    TrainResult,
    build_model,
    dataset_fingerprint,
    evaluate,
    load_numpy_state,
    state_to_numpy,
    train_local,
)
from fedledger.ledger.types import Phase, Submission
from fedledger.protocol.ports import LedgerPort, Sealer
from fedledger.protocol.rounds import NothingToAggregateError, RoundAggregate, aggregate_round
from fedledger.protocol.session import TaskSession, open_session
from fedledger.protocol.timing import RoundTimer
from fedledger.protocol.training import InlineTraining, LocalTraining, draws_random_numbers
from fedledger.store import BlobStore

log = logging.getLogger(__name__)

_TrainJob = Callable[[], tuple[dict[str, np.ndarray], TrainResult]]


def _job_key(session: TaskSession, round_: int, data: Dataset, participant_index: int) -> tuple[int, ...]:
    """What determines a local training job: task, round (so the global model), member and data."""
    return (session.task_id, round_, participant_index, id(data))


def derive_seed(task_seed: int, participant_index: int, round_: int) -> int:
    """A per-participant, per-round seed: independent shuffles across members, and the same model
    from the same config whatever keys the members hold (so secured and unsecured runs agree)."""
    digest = hashlib.sha256(f"{task_seed}:{participant_index}:{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class Actor(ABC):
    """Shared plumbing: identity, ledger, store, sealer, timing and a lazily opened session per task."""

    def __init__(
        self,
        identity: MemberIdentity,
        ledger: LedgerPort,
        store: BlobStore,
        sealer: Sealer,
        timer: RoundTimer | None = None,
        *,
        device: str = "cpu",
    ) -> None:
        self.identity = identity
        self.ledger = ledger
        self.store = store
        self.sealer = sealer
        self.timer = timer or RoundTimer()
        self.device = device
        self._sessions: dict[int, TaskSession] = {}

    @property
    def name(self) -> str:
        return self.identity.name

    def now(self) -> int:
        """Chain time, never behind the wall clock: on a node that mines only on demand (anvil) the
        latest block can be old, while the next block, which the contract judges, is stamped now."""
        return max(self.ledger.now(), int(time.time()))

    @abstractmethod
    def step(self, task_id: int) -> bool:
        """Do at most one piece of work the chain's current state calls for; True if something was done."""

    def session(self, task_id: int) -> TaskSession:
        session = self._sessions.get(task_id)
        if session is None:
            with self.timer.measure(0, "crypto"):
                session = open_session(self.ledger, self.store, self.sealer, self.identity, task_id)
            self._sessions[task_id] = session
        return session

    def global_model(self, session: TaskSession, round_: int) -> dict[str, np.ndarray]:
        with self.timer.measure(round_, "store"):
            return session.global_model(self.ledger, self.store, self.sealer, round_)


class Trainer(Actor):
    """Trains on local data from the round's global model and commits one encrypted update.

    The work is split into small steps (``local_update``, ``encode_update``, ``seal_update``,
    ``store_update``, ``submit``) so a simulation can play a hostile member by overriding one of them;
    an honest member runs them unchanged. A transaction the contract refuses is recorded in
    ``refused`` (by (task, round); round 0 is the dataset registration) and never retried in a loop.

    Local training runs on ``training``: inline by default; a simulation passes a shared
    :class:`ParallelTraining` and calls :meth:`prefetch` on every trainer before their turns.
    """

    #: Whether this trainer's update starts from training on its own data (so it is worth prefetching).
    trains_own_data = True

    def __init__(
        self,
        identity: MemberIdentity,
        ledger: LedgerPort,
        store: BlobStore,
        sealer: Sealer,
        timer: RoundTimer | None = None,
        *,
        data: Dataset,
        device: str = "cpu",
        training: LocalTraining | None = None,
    ) -> None:
        super().__init__(identity, ledger, store, sealer, timer, device=device)
        self.data = data
        self.training = training or InlineTraining()
        self._registered: set[int] = set()
        self.last_loss = float("nan")
        #: (task id, round) -> revert reason of a transaction the contract refused.
        self.refused: dict[tuple[int, int], str] = {}

    def _due_round(self, task_id: int) -> tuple[TaskSession, int] | None:
        """The session and round this trainer should train for now, or None if it has nothing to do."""
        if (task_id, 0) in self.refused:
            return None
        session = self.session(task_id)
        state = self.ledger.task_state(task_id)
        if state.phase != Phase.TRAINING:
            return None
        if (task_id, state.round) in self.refused:
            return None
        index = session.participant_index(self.identity.address)
        if (state.submitted_mask >> index) & 1:
            return None
        if self.now() > state.deadline:
            return None
        return session, state.round

    def step(self, task_id: int) -> bool:
        due = self._due_round(task_id)
        if due is None:
            return False
        if task_id not in self._registered:
            self._register_dataset(task_id)
            return True
        self._train_and_submit(*due)
        return True

    def prefetch(self, task_id: int) -> None:
        """Start this round's local training on ``training`` if this trainer is due to train."""
        if not self.trains_own_data:
            return
        due = self._due_round(task_id)
        if due is None:
            return
        session, round_ = due
        index = session.participant_index(self.identity.address)
        if self.training.started(_job_key(session, round_, self.data, index)):
            return
        key, job = self._training_job(session, round_, self.data, index)
        if job is not None:
            self.training.prefetch(key, job)

    def _register_dataset(self, task_id: int) -> None:
        if self.ledger.dataset(task_id, self.identity.address) is None:
            fingerprint = dataset_fingerprint(self.data)
            with self.timer.measure(0, "ledger"):
                try:
                    self.ledger.register_dataset(
                        self.identity.account,
                        task_id,
                        fingerprint.num_samples,
                        list(fingerprint.label_histogram),
                        fingerprint.merkle_root,
                    )
                except TransactionRevertedError as exc:
                    log.warning("%s: dataset registration not accepted: %s", self.name, exc.reason)
                    self.refused[(task_id, 0)] = exc.reason
                    return
        self._registered.add(task_id)

    def _train_and_submit(self, session: TaskSession, round_: int) -> None:
        delta, num_samples = self.local_update(session, round_)
        with self.timer.measure(round_, "crypto"):
            blob = self.seal_update(session, round_, self.encode_update(delta))
        with self.timer.measure(round_, "store"):
            blob_hash = self.store_update(blob)
        self.submit(session, round_, blob_hash, num_samples)

    def train_config(self, session: TaskSession) -> TrainConfig:
        training = session.spec.training
        return TrainConfig(
            epochs=training.epochs,
            batch_size=training.batch_size,
            lr=training.lr,
            optimizer=training.optimizer,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
            fedprox_mu=training.fedprox_mu,
            device=self.device,
        )

    def train_delta(
        self, session: TaskSession, round_: int, data: Dataset, participant_index: int
    ) -> tuple[dict[str, np.ndarray], int]:
        """Train on ``data`` from the round's global model, seeded by participant and round."""
        global_state = self.global_model(session, round_)
        with self.timer.measure(round_, "train"):
            # A prefetched job's result if there is one; else train here, with the RNG isolated.
            local_state, result = self.training.run(
                _job_key(session, round_, data, participant_index),
                lambda: self._train(session, round_, data, participant_index, isolate_rng=True),
            )
            self.last_loss = result.mean_loss
            delta = {name: local_state[name] - global_state[name] for name in sorted(global_state)}
        return delta, result.num_samples

    def _training_job(
        self, session: TaskSession, round_: int, data: Dataset, participant_index: int
    ) -> tuple[tuple[int, ...], _TrainJob | None]:
        """The job key and a job safe to run on any thread (None if the model draws random numbers)."""
        key = _job_key(session, round_, data, participant_index)
        model = self._build(session, round_)  # here: building draws the initial weights from the RNG
        if draws_random_numbers(model):
            return key, None

        def job() -> tuple[dict[str, np.ndarray], TrainResult]:
            return self._train(session, round_, data, participant_index, isolate_rng=False, model=model)

        return key, job

    def _build(self, session: TaskSession, round_: int) -> nn.Module:
        spec = session.spec
        model = build_model(spec.model.name, **spec.model.kwargs)
        load_numpy_state(model, self.global_model(session, round_))
        return model

    def _train(
        self,
        session: TaskSession,
        round_: int,
        data: Dataset,
        participant_index: int,
        *,
        isolate_rng: bool,
        model: nn.Module | None = None,
    ) -> tuple[dict[str, np.ndarray], TrainResult]:
        if model is None:
            model = self._build(session, round_)
        seed = derive_seed(session.spec.seed, participant_index, round_)
        result = train_local(model, data, self.train_config(session), seed=seed, isolate_rng=isolate_rng)
        return state_to_numpy(model), result

    def local_update(self, session: TaskSession, round_: int) -> tuple[dict[str, np.ndarray], int]:
        """This member's model delta for ``round_`` and the sample count it commits."""
        return self.train_delta(session, round_, self.data, session.participant_index(self.identity.address))

    def encode_update(self, delta: dict[str, np.ndarray]) -> bytes:
        return encode_tensors(delta)

    def seal_update(self, session: TaskSession, round_: int, plaintext: bytes) -> bytes:
        return self.sealer.seal(session.key, plaintext, session.update_context(round_, self.identity.address))

    def store_update(self, blob: bytes) -> bytes:
        """Write the sealed update to the store; always before its hash is committed on chain."""
        return self.store.put(blob)

    def submit(self, session: TaskSession, round_: int, blob_hash: bytes, num_samples: int) -> bool:
        """Commit ``blob_hash`` for ``round_``; False (and recorded in ``refused``) if the contract refuses."""
        with self.timer.measure(round_, "ledger"):
            try:
                self.ledger.submit_update(
                    self.identity.account, session.task_id, round_, blob_hash, num_samples
                )
            except TransactionRevertedError as exc:
                log.warning("%s: update for round %d not accepted: %s", self.name, round_, exc.reason)
                self.refused[(session.task_id, round_)] = exc.reason
                return False
        log.info(
            "%s: task %d round %d: submitted update %s (%d samples, loss %.4f)",
            self.name,
            session.task_id,
            round_,
            blob_hash.hex()[:12],
            num_samples,
            self.last_loss,
        )
        return True


class Aggregator(Actor):
    """On the round's committee: recomputes the aggregate from the record and proposes its hash."""

    def step(self, task_id: int) -> bool:
        session = self.session(task_id)
        state = self.ledger.task_state(task_id)
        if state.phase == Phase.DONE:
            return False
        round_ = state.round
        me = self.identity.address
        with self.timer.measure(round_, "ledger"):
            committee = self.ledger.committee(task_id, round_)
            if me.lower() not in (c.lower() for c in committee):
                return False
            if self.ledger.proposal_of(task_id, round_, me) is not None:
                return False
        if state.phase == Phase.TRAINING:
            if self.now() <= state.deadline:
                return False
            if state.num_submitted < session.task.min_updates:
                with self.timer.measure(round_, "ledger"):
                    try:
                        self.ledger.reopen_round(self.identity.account, task_id)
                    except TransactionRevertedError:
                        return False
                return True
        global_state = self.global_model(session, round_)
        with self.timer.measure(round_, "ledger"):
            submissions = self.ledger.submissions(task_id, round_)
        with self.timer.measure(round_, "aggregate"):
            try:
                aggregate = self.aggregate(session, round_, submissions, global_state)
            except NothingToAggregateError as exc:
                log.error("%s: %s", self.name, exc)
                return False
        with self.timer.measure(round_, "store"):
            self.store.put(aggregate.blob)
        with self.timer.measure(round_, "ledger"):
            try:
                self.ledger.propose_aggregate(
                    self.identity.account,
                    task_id,
                    round_,
                    aggregate.model_hash,
                    aggregate.included,
                    list(aggregate.reasons),
                )
            except TransactionRevertedError as exc:
                log.warning("%s: proposal for round %d not accepted: %s", self.name, round_, exc.reason)
                return False
        log.info(
            "%s: task %d round %d: proposed model %s (%d included, %d excluded)",
            self.name,
            task_id,
            round_,
            aggregate.model_hash.hex()[:12],
            bin(aggregate.included).count("1"),
            len(aggregate.exclusions),
        )
        return True

    def aggregate(
        self,
        session: TaskSession,
        round_: int,
        submissions: list[Submission],
        global_state: dict[str, np.ndarray],
    ) -> RoundAggregate:
        """The round's deterministic aggregate: every honest committee member computes the same bytes."""
        return aggregate_round(session, self.store, self.sealer, round_, submissions, global_state)


class Validator(Actor):
    """Evaluates each finalised global model on its held-out data and posts the metrics on chain."""

    def __init__(
        self,
        identity: MemberIdentity,
        ledger: LedgerPort,
        store: BlobStore,
        sealer: Sealer,
        timer: RoundTimer | None = None,
        *,
        data: Dataset,
        device: str = "cpu",
    ) -> None:
        super().__init__(identity, ledger, store, sealer, timer, device=device)
        self.data = data
        self._posted: dict[int, set[int]] = {}

    def _already_posted(self, task_id: int) -> set[int]:
        posted = self._posted.get(task_id)
        if posted is None:
            posted = set()
            me = self.identity.address.lower()
            start = self.ledger.deployment.deploy_block
            for event in self.ledger.events(from_block=start):
                if (
                    event.name == "MetricsPosted"
                    and event.args["taskId"] == task_id
                    and str(event.args["validator"]).lower() == me
                ):
                    posted.add(int(event.args["round"]))
            self._posted[task_id] = posted
        return posted

    def step(self, task_id: int) -> bool:
        session = self.session(task_id)
        state = self.ledger.task_state(task_id)
        last_final = session.task.num_rounds if state.phase == Phase.DONE else state.round - 1
        posted = self._already_posted(task_id)
        pending = [r for r in range(1, last_final + 1) if r not in posted]
        if not pending:
            return False
        round_ = pending[0]
        model_hash = self.ledger.round_model(task_id, round_)
        assert model_hash is not None
        with self.timer.measure(round_, "store"):
            tensors = session.load_model(self.store, self.sealer, model_hash, round_)
        with self.timer.measure(round_, "evaluate"):
            model = build_model(session.spec.model.name, **session.spec.model.kwargs)
            load_numpy_state(model, tensors)
            result = evaluate(model, self.data, device=self.device)
        with self.timer.measure(round_, "ledger"):
            try:
                self.ledger.post_metrics(
                    self.identity.account, task_id, round_, result.accuracy, result.loss, result.num_examples
                )
            except TransactionRevertedError as exc:
                log.warning("%s: metrics for round %d not accepted: %s", self.name, round_, exc.reason)
        posted.add(round_)
        return True
