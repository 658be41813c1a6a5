"""Run a whole consortium in one process: every member's actors on one embedded chain and one store.

The actors are the same classes a member process runs; they share nothing but the ledger and the
store. The simulation only decides who gets a turn, plays members that are offline, and, when nobody
can act because a deadline has not passed yet, moves the embedded chain's clock past it instead of
sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3

from fedledger.aggregation import ExclusionReason
from fedledger.crypto import (
    MemberIdentity,
    content_address,
    load_keystore,
    new_identity,
    read_password,
    save_keystore,
    to_hex,
)
from fedledger.errors import FedledgerError, KeystoreError, UsageError
from fedledger.learning import (
    Dataset,
    load_dataset,
    partition_dirichlet,
    partition_iid,
)
from fedledger.ledger import Ledger
from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider
from fedledger.ledger.contracts import load_artifact
from fedledger.ledger.types import LedgerEvent, Phase, TaskInfo
from fedledger.protocol.actors import Actor, Aggregator, Trainer, Validator
from fedledger.protocol.ports import AeadSealer, LedgerPort, PlaintextSealer, Sealer
from fedledger.protocol.session import (
    TaskSession,
    open_session,
)
from fedledger.protocol.setup import RoundRules, prepare_task
from fedledger.protocol.spec import TaskSpec
from fedledger.protocol.timing import RoundTimer
from fedledger.protocol.training import InlineTraining, LocalTraining, ParallelTraining
from fedledger.sim.adversary import link_colluders, make_trainer
from fedledger.sim.baseline import InMemoryLedger
from fedledger.sim.config import RunConfig, parse_config
from fedledger.sim.rundir import RunDirectory, write_atomic, write_json
from fedledger.store import BlobStore, LocalBlobStore, MemoryBlobStore

log = logging.getLogger(__name__)

GENESIS_BALANCE_WEI = 10**24


@dataclass(frozen=True)
class RoundReport:
    """What the progress display shows after each round."""

    round: int
    num_rounds: int
    test_accuracy: float | None
    test_loss: float | None
    included: int
    excluded: int
    seconds: dict[str, float]
    wall_seconds: float


@dataclass
class MemberRuntime:
    """One simulated member: its identity and the actors it runs."""

    identity: MemberIdentity
    roles: tuple[str, ...]
    drop_out_rounds: frozenset[int]
    actors: list[Actor] = field(default_factory=list)


def split_data(config: RunConfig) -> tuple[dict[str, Dataset], Dataset]:
    """Load the dataset and give each trainer its part; deterministic in the task seed."""
    data = config.data
    path = data.path
    if data.dataset == "fashion_mnist" and path is None:
        path = "/usr/share/datasets/fashion-mnist"
    train, test = load_dataset(
        data.dataset,
        path=Path(path) if path else None,
        label_column=data.label_column,
        test_fraction=data.test_fraction,
        seed=config.task.seed,
    )
    trainers = config.trainers
    if data.partition == "iid":
        parts = partition_iid(train.labels, len(trainers), seed=config.task.seed)
    else:
        parts = partition_dirichlet(
            train.labels, len(trainers), alpha=data.alpha, seed=config.task.seed, min_size=data.min_samples
        )
    shards = {}
    for member, indices in zip(trainers, parts, strict=True):
        shards[member.name] = Dataset(
            features=train.features[indices],
            labels=train.labels[indices],
            num_classes=train.num_classes,
            name=f"{train.name}/{member.name}",
        )
    return shards, test


def task_spec(config: RunConfig, num_classes: int) -> TaskSpec:
    return TaskSpec(
        name=config.task.name,
        seed=config.task.seed,
        dataset=config.data.dataset,
        num_classes=num_classes,
        model=config.model,
        training=config.training,
        aggregation=config.aggregation,
    )


def training_engine(config: RunConfig) -> LocalTraining:
    """Where the simulated trainers' local training runs: ``train_workers`` threads, or inline if 1."""
    if config.train_workers == 1:
        return InlineTraining()
    return ParallelTraining(config.train_workers)


class Simulation:
    """A consortium in one process. Build with :meth:`create` or :meth:`resume`, then :meth:`run`."""

    def __init__(
        self,
        config: RunConfig,
        run: RunDirectory | None,
        ledger: LedgerPort,
        store: BlobStore,
        sealer: Sealer,
        members: list[MemberRuntime],
        task_id: int,
        *,
        chain: EmbeddedChain | None = None,
        timer: RoundTimer,
        training: LocalTraining,
        setup_seconds: float = 0.0,
    ) -> None:
        self.config = config
        self.run_dir = run
        self.ledger = ledger
        self.store = store
        self.sealer = sealer
        self.members = members
        self.task_id = task_id
        self.chain = chain
        self.timer = timer
        self.setup_seconds = setup_seconds
        self.time_advanced = 0
        self.training = training
        self._prefetched: tuple[int, int] | None = None
        self._event_log: list[LedgerEvent] = []
        self._events_from = ledger.deployment.deploy_block

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create(cls, config: RunConfig, out: Path | None) -> Simulation:
        """Set up a new run: keys, chain, contracts, governance approval of the task, data."""
        started = time.perf_counter()
        timer = RoundTimer()
        shards, test = split_data(config)
        identities = {m.name: new_identity(m.name) for m in config.members}
        spec = task_spec(config, test.num_classes)
        if config.security.enabled:
            if out is None:
                raise UsageError("a secured run needs a run directory (--out)")
            run = RunDirectory.create(out)
            write_json(run.config_file, config.model_dump(mode="json"))
            password = cls._new_password(run)
            for name, identity in identities.items():
                save_keystore(run.keys / f"{name}.json", identity, password, light=True)
            alloc = {identity.address: GENESIS_BALANCE_WEI for identity in identities.values()}
            chain = EmbeddedChain.create(run.chain, config.chain.chain_id, alloc)
            w3 = Web3(EmbeddedProvider(chain))
            admins = [identities[m.name] for m in config.admins]
            ledger: LedgerPort = Ledger.deploy(
                w3,
                admins[0].account,
                admins=[a.address for a in admins],
                threshold=config.protocol.admin_threshold,
                members=[
                    (identities[m.name].address, m.name, m.role_bits, identities[m.name].enc_public_key)
                    for m in config.members
                ],
            )
            store: BlobStore = LocalBlobStore(run.blobs)
            sealer: Sealer = AeadSealer()
        else:
            run = None
            chain = None
            admins = [identities[m.name] for m in config.admins]
            ledger = InMemoryLedger(
                chain_id=config.chain.chain_id,
                members={identities[m.name].address: m.role_bits for m in config.members},
            )
            store = MemoryBlobStore()
            sealer = PlaintextSealer()
        task_id = cls._create_task(config, ledger, store, sealer, spec, identities, admins)
        if run is not None:
            cls._write_deployment(run, config, ledger, identities, task_id)
        training = training_engine(config)
        members = cls._runtimes(config, identities, ledger, store, sealer, timer, training, shards, test)
        return cls(
            config,
            run,
            ledger,
            store,
            sealer,
            members,
            task_id,
            chain=chain,
            timer=timer,
            training=training,
            setup_seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _new_password(run: RunDirectory) -> str:
        """Simulated members share one keystore password: FEDLEDGER_PASSWORD, else a random one on disk."""
        password = os.environ.get("FEDLEDGER_PASSWORD")
        if not password:
            password = secrets.token_urlsafe(24)
            write_atomic(run.password_file, password.encode())
            os.chmod(run.password_file, 0o600)
        return password

    @staticmethod
    def _create_task(
        config: RunConfig,
        ledger: LedgerPort,
        store: BlobStore,
        sealer: Sealer,
        spec: TaskSpec,
        identities: dict[str, MemberIdentity],
        admins: list[MemberIdentity],
    ) -> int:
        """Seal spec and initial model, wrap the task key per member, and pass the M-of-N approval."""
        params = prepare_task(
            chain_id=ledger.chain_id,
            contract=ledger.deployment.training_task,
            store=store,
            sealer=sealer,
            spec=spec,
            participants=[
                (identities[m.name].address, identities[m.name].enc_public_key) for m in config.members
            ],
            rules=RoundRules(
                num_rounds=config.task.rounds,
                committee_size=config.protocol.committee_size,
                min_updates=config.min_updates,
                quorum=config.protocol.quorum,
                round_duration=config.protocol.round_duration,
            ),
        )
        assert isinstance(ledger, Ledger | InMemoryLedger)
        proposal = ledger.propose_task(admins[0].account, params)
        for admin in admins[1 : config.protocol.admin_threshold]:
            ledger.approve(admin.account, proposal)
        return ledger.create_task(admins[0].account, params)

    @staticmethod
    def _write_deployment(
        run: RunDirectory,
        config: RunConfig,
        ledger: LedgerPort,
        identities: dict[str, MemberIdentity],
        task_id: int,
    ) -> None:
        deployment = ledger.deployment
        abi_files = {}
        for name in ("Consortium", "TrainingTask"):
            path = run.abi / f"{name}.json"
            write_json(path, load_artifact(name).abi)
            abi_files[name] = str(path.relative_to(run.root))
        write_json(
            run.deployment_file,
            {
                "chain_id": deployment.chain_id,
                "consortium": deployment.consortium,
                "training_task": deployment.training_task,
                "deploy_block": deployment.deploy_block,
                "task_id": task_id,
                "abi": abi_files,
                "chain": {"backend": "embedded", "path": "chain"},
                "store": {"backend": "local", "path": "blobs"},
                "members": [
                    {
                        "name": m.name,
                        "address": identities[m.name].address,
                        "roles": list(m.roles),
                        "keystore": f"keys/{m.name}.json",
                    }
                    for m in config.members
                ],
            },
        )

    @staticmethod
    def _runtimes(
        config: RunConfig,
        identities: dict[str, MemberIdentity],
        ledger: LedgerPort,
        store: BlobStore,
        sealer: Sealer,
        timer: RoundTimer,
        training: LocalTraining,
        shards: dict[str, Dataset],
        test: Dataset,
    ) -> list[MemberRuntime]:
        members = []
        for m in config.members:
            identity = identities[m.name]
            runtime = MemberRuntime(identity, tuple(m.roles), frozenset(m.drop_out_rounds))
            if "trainer" in m.roles:
                runtime.actors.append(
                    make_trainer(
                        m.attack,
                        identity,
                        ledger,
                        store,
                        sealer,
                        timer,
                        data=shards[m.name],
                        device=config.device,
                        training=training,
                    )
                )
            if "aggregator" in m.roles:
                runtime.actors.append(
                    Aggregator(identity, ledger, store, sealer, timer, device=config.device)
                )
            if "validator" in m.roles:
                runtime.actors.append(
                    Validator(identity, ledger, store, sealer, timer, data=test, device=config.device)
                )
            members.append(runtime)
        link_colluders([a for m in members for a in m.actors if isinstance(a, Trainer)])
        return members

    @classmethod
    def resume(cls, root: Path) -> Simulation:
        """Reopen a run directory and carry on from where the chain says the task stands."""
        started = time.perf_counter()
        cls._check_setup_completed(root)
        run = RunDirectory.open(root)
        try:
            raw = json.loads(run.config_file.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{run.config_file}: unreadable ({exc})") from None
        config = parse_config(raw, str(run.config_file))
        deployment = run.deployment()
        task_id = run.task_id()
        password = cls.password_for(run)
        identities = {}
        for record in run.members():
            identities[record.name] = load_keystore(run.root / record.keystore, password)
        chain = EmbeddedChain.open(run.chain)
        if chain.chain_id != deployment.chain_id:
            raise UsageError(
                f"{run.deployment_file}: chain id {deployment.chain_id} but {run.chain} holds chain {chain.chain_id}"
            )
        ledger = Ledger(Web3(EmbeddedProvider(chain)), deployment)
        store = LocalBlobStore(run.blobs)
        timer = RoundTimer()
        shards, test = split_data(config)
        training = training_engine(config)
        members = cls._runtimes(
            config, identities, ledger, store, AeadSealer(), timer, training, shards, test
        )
        return cls(
            config,
            run,
            ledger,
            store,
            AeadSealer(),
            members,
            task_id,
            chain=chain,
            timer=timer,
            training=training,
            setup_seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _check_setup_completed(root: Path) -> None:
        """deployment.json is written last in set-up: without it (a crash during set-up) there is no task
        to resume, only a half-made directory, and the clear thing to do is to start again."""
        run = RunDirectory(root)
        if not root.is_dir() or run.deployment_file.exists():
            return
        started = [p.name for p in (run.config_file, run.keys, run.blobs, run.chain, run.abi) if p.exists()]
        if started:
            raise UsageError(
                f"{root}: setup did not complete (no deployment.json; found {', '.join(started)}); "
                f"remove {root} and start again"
            )

    @staticmethod
    def password_for(run: RunDirectory, password_file: Path | None = None) -> str:
        """The simulated members' keystore password: a file if given, FEDLEDGER_PASSWORD, or keys/.password."""
        if password_file is not None or os.environ.get("FEDLEDGER_PASSWORD"):
            return read_password(password_file=password_file)
        if run.password_file.is_file():
            return run.password_file.read_text().strip()
        raise KeystoreError(
            f"{run.keys}: no keystore password: set FEDLEDGER_PASSWORD or pass --password-file"
        )

    # ------------------------------------------------------------------ the loop

    def _advance_clock(self, target: int) -> None:
        """Nobody can act until ``target``: jump the simulated chain's clock instead of sleeping."""
        now = self.ledger.now()
        seconds = max(1, target - now + 1)
        if self.chain is not None:
            self.chain.rpc("evm_increaseTime", [seconds])
            self.chain.rpc("evm_mine", [])
        else:
            assert isinstance(self.ledger, InMemoryLedger)
            self.ledger.advance_time(seconds)
        self.time_advanced += seconds

    def _offline(self, member: MemberRuntime) -> bool:
        """Whether ``member`` drops out of the current round (its trainer does not act)."""
        if not member.drop_out_rounds:
            return False
        state = self.ledger.task_state(self.task_id)
        return state.phase != Phase.DONE and state.round in member.drop_out_rounds

    def _prefetch(self) -> None:
        """Start the local training of every trainer due to train, before any of them takes its turn.

        Called at the start of a sweep and after each proposal, it does the work once per round: a
        round can open in the middle of a sweep (when an aggregator's proposal finalises the previous one).
        """
        state = self.ledger.task_state(self.task_id)
        if state.phase != Phase.TRAINING:
            return
        current = (self.task_id, state.round)
        if current == self._prefetched:
            return
        self._prefetched = current
        self.training.forget(lambda key: isinstance(key, tuple) and tuple(key[:2]) >= current)
        due = [
            actor
            for member in self.members
            if not self._offline(member)
            for actor in member.actors
            if isinstance(actor, Trainer)
        ]
        # Largest shard first: no big job is left to run alone at the end of the round.
        for trainer in sorted(due, key=lambda t: len(t.data), reverse=True):
            trainer.prefetch(self.task_id)

    def _sweep(self) -> bool:
        """Give every actor one turn; a member offline in the current round skips its trainer."""
        progressed = False
        parallel = isinstance(self.training, ParallelTraining)
        if parallel:
            self._prefetch()
        for member in self.members:
            for actor in member.actors:
                if isinstance(actor, Trainer) and self._offline(member):
                    continue
                if actor.step(self.task_id):
                    progressed = True
                    if parallel and isinstance(actor, Aggregator):
                        self._prefetch()  # only a proposal can finalise a round and open the next
        return progressed

    def run(self, on_round: Callable[[RoundReport], None] | None = None) -> dict[str, Any]:
        """Drive every actor until the task is done and every validator has posted; write the outputs."""
        with self.training.running():
            return self._run(on_round)

    def _run(self, on_round: Callable[[RoundReport], None] | None) -> dict[str, Any]:
        started = time.perf_counter()
        num_rounds = self.ledger.task(self.task_id).num_rounds
        reported = self._finalised_rounds()
        round_started = time.perf_counter()
        stalls = 0
        while True:
            progressed = self._sweep()
            finalised = self._finalised_rounds()
            for round_ in range(reported + 1, finalised + 1):
                if on_round is not None and self._metrics_complete(round_):
                    on_round(self._round_report(round_, num_rounds, time.perf_counter() - round_started))
                    round_started = time.perf_counter()
                    reported = round_
            if progressed:
                stalls = 0
                continue
            state = self.ledger.task_state(self.task_id)
            if state.phase == Phase.DONE:
                break
            stalls += 1
            if stalls > 3:
                raise FedledgerError(
                    f"task {self.task_id} stalled in round {state.round} ({state.phase.name.lower()}): "
                    "no member can act even after the deadline passed"
                )
            self._advance_clock(state.deadline)
        summary = self._summary(time.perf_counter() - started)
        self._write_outputs(summary)
        return summary

    def _finalised_rounds(self) -> int:
        state = self.ledger.task_state(self.task_id)
        if state.phase == Phase.DONE:
            return self.ledger.task(self.task_id).num_rounds
        return state.round - 1

    def _metrics_complete(self, round_: int) -> bool:
        validators = sum(1 for m in self.members if "validator" in m.roles)
        posted = sum(1 for e in self._events() if e.name == "MetricsPosted" and e.args["round"] == round_)
        return posted >= validators

    def _events(self) -> list[LedgerEvent]:
        """Every event of the deployment so far, read incrementally: blocks are atomic, so the events
        of blocks after the last one seen are all that can be new (re-reading all of them after each
        turn of the loop made the reports cost grow with the rounds)."""
        start = self._events_from
        new = self.ledger.events(from_block=start)
        if new:
            self._event_log.extend(new)
            self._events_from = max(e.block_number for e in new) + 1
        return self._event_log

    def _round_report(self, round_: int, num_rounds: int, wall: float) -> RoundReport:
        record = self._rounds().get(round_, {})
        return RoundReport(
            round=round_,
            num_rounds=num_rounds,
            test_accuracy=record.get("test_accuracy"),
            test_loss=record.get("test_loss"),
            included=len(record.get("included", [])),
            excluded=len(record.get("excluded", [])),
            seconds=self.timer.round_seconds(round_),
            wall_seconds=wall,
        )

    def _rounds(self) -> dict[int, dict[str, Any]]:
        trainers = {m.identity.address.lower() for m in self.members if "trainer" in m.roles}
        return rounds_from_events(self._events(), self.ledger.task(self.task_id), self._names(), trainers)

    def _names(self) -> dict[str, str]:
        return {m.identity.address.lower(): m.identity.name for m in self.members}

    # ------------------------------------------------------------------ outputs

    def final_session(self) -> TaskSession:
        admin = self.members[0].identity
        return open_session(self.ledger, self.store, self.sealer, admin, self.task_id)

    def _summary(self, wall_seconds: float) -> dict[str, Any]:
        rounds = self._rounds()
        per_round = []
        for round_ in sorted(rounds):
            record = rounds[round_]
            record["seconds"] = {k: round(v, 4) for k, v in self.timer.round_seconds(round_).items()}
            per_round.append(record)
        totals = {k: round(v, 4) for k, v in self.timer.totals().items()}
        chain_stats = self._chain_stats()
        final = per_round[-1] if per_round else {}
        return {
            "task_id": self.task_id,
            "task": self.config.task.name,
            "security": self.config.security.enabled,
            "chain_id": self.ledger.chain_id,
            "contracts": {
                "consortium": self.ledger.deployment.consortium,
                "training_task": self.ledger.deployment.training_task,
            },
            "rounds": per_round,
            "final": {
                "round": final.get("round"),
                "model_hash": final.get("model_hash"),
                "test_accuracy": final.get("test_accuracy"),
                "test_loss": final.get("test_loss"),
            },
            "totals": {
                "wall_seconds": round(wall_seconds, 3),
                "setup_seconds": round(self.setup_seconds, 3),
                "seconds": totals,
                "simulated_clock_advance_seconds": self.time_advanced,
                **chain_stats,
            },
        }

    def _chain_stats(self) -> dict[str, int]:
        if self.chain is None:
            assert isinstance(self.ledger, InMemoryLedger)
            return {"transactions": self.ledger.tx_count, "gas_used": 0, "blocks": 0}
        latest = int(self.chain.rpc("eth_blockNumber", []), 16)
        transactions = 0
        gas = 0
        for number in range(1, latest + 1):
            block = self.chain.rpc("eth_getBlockByNumber", [hex(number), False])
            transactions += len(block["transactions"])
            gas += int(block["gasUsed"], 16)
        return {"transactions": transactions, "gas_used": gas, "blocks": latest}

    def _write_outputs(self, summary: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        session = self.final_session()
        num_rounds = session.task.num_rounds
        model_hash = self.ledger.round_model(self.task_id, num_rounds)
        assert model_hash is not None
        blob = self.store.get(model_hash)
        plaintext = self.sealer.open(session.key, blob, session.model_context(num_rounds))
        write_atomic(self.run_dir.model_file, plaintext)
        summary["final"]["model_file"] = self.run_dir.model_file.name
        summary["final"]["model_sha256"] = to_hex(content_address(plaintext))
        write_json(self.run_dir.summary_file, summary)

    def close(self) -> None:
        self.training.close()
        if self.chain is not None:
            self.chain.close()


def rounds_from_events(
    events: list[LedgerEvent],
    task: TaskInfo,
    names: dict[str, str],
    trainers: set[str],
) -> dict[int, dict[str, Any]]:
    """Per-round facts as the chain records them: final hash, who was in, who was out and why, metrics.

    ``trainers`` holds the addresses (lower case) expected to submit; a missing update from anyone
    else (a validator-only member) is not an exclusion.
    """

    def name(address: str) -> str:
        return names.get(address.lower(), address)

    task_id = task.task_id
    rounds: dict[int, dict[str, Any]] = {}
    proposals: dict[int, list[dict[str, Any]]] = {}
    metrics: dict[int, list[tuple[float, float]]] = {}
    samples: dict[int, dict[str, int]] = {}
    for event in events:
        args = event.args
        if args.get("taskId") != task_id:
            continue
        if event.name == "UpdateSubmitted":
            samples.setdefault(int(args["round"]), {})[name(str(args["member"]))] = int(args["numSamples"])
        elif event.name == "AggregateProposed":
            proposals.setdefault(int(args["round"]), []).append(
                {
                    "aggregator": name(str(args["aggregator"])),
                    "model_hash": to_hex(args["modelHash"]),
                    "included": int(args["included"]),
                    "reasons": [int(r) for r in args["reasons"]],
                    "tx": event.tx_hash,
                }
            )
        elif event.name == "MetricsPosted":
            metrics.setdefault(int(args["round"]), []).append(
                (int(args["accuracyPpm"]) / 1e6, int(args["lossPpm"]) / 1e6)
            )
        elif event.name == "RoundFinalized":
            round_ = int(args["round"])
            rounds[round_] = {
                "round": round_,
                "model_hash": to_hex(args["modelHash"]),
                "included_mask": int(args["included"]),
                "finalized_block": event.block_number,
                "finalized_tx": event.tx_hash,
            }
    for round_, record in rounds.items():
        mask = record["included_mask"]
        agreed = [
            p
            for p in proposals.get(round_, [])
            if p["model_hash"] == record["model_hash"] and p["included"] == mask
        ]
        reasons = agreed[0]["reasons"] if agreed else [0] * len(task.participants)
        record["included"] = [name(p) for i, p in enumerate(task.participants) if (mask >> i) & 1]
        excluded = []
        for i, participant in enumerate(task.participants):
            code = reasons[i] if i < len(reasons) else 0
            if (mask >> i) & 1 or code == 0:
                continue
            if code == ExclusionReason.NOT_SUBMITTED and participant.lower() not in trainers:
                continue
            excluded.append({"member": name(participant), "reason": describe_reason(code), "code": code})
        record["excluded"] = excluded
        record["sample_counts"] = samples.get(round_, {})
        record["committee_proposals"] = [
            {
                "aggregator": p["aggregator"],
                "model_hash": p["model_hash"],
                "agreed": p in agreed,
                "tx": p["tx"],
            }
            for p in proposals.get(round_, [])
        ]
        values = metrics.get(round_, [])
        record["test_accuracy"] = round(sum(a for a, _ in values) / len(values), 6) if values else None
        record["test_loss"] = round(sum(loss for _, loss in values) / len(values), 6) if values else None
    return rounds


def describe_reason(code: int) -> str:
    try:
        return ExclusionReason(code).name.lower()
    except ValueError:
        return f"code {code}"
