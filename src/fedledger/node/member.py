"""One member's long-running process: follow the chain, act on every task this member takes part in.

The process holds no state the chain does not: killed at any moment and restarted, it reads where each
task stands and carries on. The contract refuses a second submission or proposal anyway; the actors
do not even try, because they check the chain first.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fedledger.crypto import MemberIdentity, load_keystore, read_password
from fedledger.errors import FedledgerError, LedgerError, StoreError, UsageError
from fedledger.learning import Dataset, load_dataset, partition_dirichlet, partition_iid
from fedledger.ledger import Ledger
from fedledger.ledger.connect import check_deployment, connect_chain, load_deployment
from fedledger.ledger.types import Phase, Role, TaskInfo
from fedledger.node.config import MemberNodeConfig
from fedledger.protocol.actors import Actor, Aggregator, Trainer, Validator
from fedledger.protocol.ports import AeadSealer
from fedledger.protocol.timing import RoundTimer
from fedledger.store import BlobStore, LocalBlobStore

log = logging.getLogger(__name__)


def connect_ledger(rpc_url: str, deployment_file: Path) -> Ledger:
    """Connect (retrying while the node may be starting) and refuse a deployment of another chain."""
    deployment = load_deployment(deployment_file)
    w3 = connect_chain(rpc_url)
    check_deployment(w3, rpc_url, deployment, deployment_file)
    return Ledger(w3, deployment)


def load_member_data(config: MemberNodeConfig) -> tuple[Dataset, Dataset]:
    """This member's training data (its shard, when trialling on a shared public dataset) and test data."""
    data = config.data
    train, test = load_dataset(
        data.dataset,
        path=data.path,
        label_column=data.label_column,
        test_fraction=data.test_fraction,
        seed=data.seed,
    )
    if data.shard_count > 1:
        if data.shard_index >= data.shard_count:
            raise UsageError(
                f"data.shard_index {data.shard_index} must be below data.shard_count {data.shard_count}"
            )
        if data.partition == "iid":
            parts = partition_iid(train.labels, data.shard_count, seed=data.seed)
        else:
            parts = partition_dirichlet(
                train.labels, data.shard_count, alpha=data.alpha, seed=data.seed, min_size=data.min_samples
            )
        train = train.subset(parts[data.shard_index], name=f"{train.name}/shard-{data.shard_index}")
    return train, test


@dataclass
class _TaskActors:
    info: TaskInfo
    roles: int
    actors: list[Actor] = field(default_factory=list)


class MemberNode:
    """Runs this member's actors for every task it participates in, from the chain alone."""

    def __init__(
        self,
        identity: MemberIdentity,
        ledger: Ledger,
        store: BlobStore,
        train: Dataset,
        test: Dataset,
        *,
        poll_seconds: float = 1.0,
        device: str = "cpu",
        only_tasks: list[int] | None = None,
    ) -> None:
        self.identity = identity
        self.ledger = ledger
        self.store = store
        self.train = train
        self.test = test
        self.poll_seconds = poll_seconds
        self.device = device
        self.only_tasks = set(only_tasks or [])
        self.timer = RoundTimer()
        self._tasks: dict[int, _TaskActors] = {}
        self._known_tasks = 0

    @classmethod
    def from_config(cls, config: MemberNodeConfig) -> MemberNode:
        password = read_password(password_file=config.member.password_file)
        identity = load_keystore(config.member.keystore, password)
        ledger = connect_ledger(config.chain.rpc_url, config.chain.deployment)
        member = ledger.member(identity.address)
        if member is None or not member.active:
            raise UsageError(
                f"{config.member.keystore}: account {identity.address} is not an active member of the "
                f"consortium at {ledger.deployment.consortium}"
            )
        store: BlobStore
        if config.store.url is not None:
            from fedledger.store.http import HttpBlobStore

            store = HttpBlobStore(
                config.store.url,
                identity,
                chain_id=ledger.chain_id,
                contract=ledger.deployment.training_task,
                ca_file=config.store.ca_file,
            )
        else:
            assert config.store.dir is not None
            store = LocalBlobStore(config.store.dir)
        train, test = load_member_data(config)
        return cls(
            identity,
            ledger,
            store,
            train,
            test,
            poll_seconds=config.node.poll_seconds,
            device=config.node.device,
            only_tasks=config.node.tasks,
        )

    def _refresh_tasks(self) -> None:
        count = self.ledger.task_count()
        me = self.identity.address.lower()
        for task_id in range(self._known_tasks + 1, count + 1):
            info = self.ledger.task(task_id)
            if self.only_tasks and task_id not in self.only_tasks:
                continue
            if me in (p.lower() for p in info.participants):
                self._tasks[task_id] = _TaskActors(info=info, roles=-1)
                log.info("%s: following task %d (%d rounds)", self.identity.name, task_id, info.num_rounds)
        self._known_tasks = count

    def _actors_for(self, task_id: int) -> list[Actor]:
        """Actors matching this member's current roles on chain (roles can change by governance)."""
        entry = self._tasks[task_id]
        member = self.ledger.member(self.identity.address)
        roles = member.roles if member is not None and member.active else 0
        if roles != entry.roles:
            sealer = AeadSealer()
            actors: list[Actor] = []
            if roles & Role.TRAINER:
                actors.append(
                    Trainer(
                        self.identity,
                        self.ledger,
                        self.store,
                        sealer,
                        self.timer,
                        data=self.train,
                        device=self.device,
                    )
                )
            if roles & Role.AGGREGATOR:
                actors.append(
                    Aggregator(self.identity, self.ledger, self.store, sealer, self.timer, device=self.device)
                )
            if roles & Role.VALIDATOR:
                actors.append(
                    Validator(
                        self.identity,
                        self.ledger,
                        self.store,
                        sealer,
                        self.timer,
                        data=self.test,
                        device=self.device,
                    )
                )
            entry.actors = actors
            entry.roles = roles
        return entry.actors

    def task_finished(self, task_id: int) -> bool:
        """Done for this member: the task is complete and none of its actors has work left."""
        return self.ledger.task_state(task_id).phase == Phase.DONE and not any(
            actor.step(task_id) for actor in self._actors_for(task_id)
        )

    def step(self) -> bool:
        """One pass over every followed task; True if any actor did something."""
        self._refresh_tasks()
        progressed = False
        for task_id in sorted(self._tasks):
            for actor in self._actors_for(task_id):
                for _ in range(64):
                    if not actor.step(task_id):
                        break
                    progressed = True
        return progressed

    def run(self, *, exit_when_done: bool = False, stop: threading.Event | None = None) -> None:
        """Follow the chain until stopped (or, with ``exit_when_done``, until every followed task is done)."""
        stop = stop or threading.Event()
        backoff = self.poll_seconds
        while not stop.is_set():
            try:
                progressed = self.step()
                if exit_when_done and self._tasks and all(self.task_finished(t) for t in self._tasks):
                    log.info("%s: every followed task is complete", self.identity.name)
                    return
                backoff = self.poll_seconds
            except (LedgerError, StoreError) as exc:
                # The network or the store may come back: keep the process alive and retry.
                log.warning("%s: %s; retrying in %.1fs", self.identity.name, exc, backoff)
                progressed = False
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            except FedledgerError:
                raise
            if not progressed:
                stop.wait(self.poll_seconds)
