"""What a run looks like from its record: rounds, members and chain facts read from the chain itself.

The report and the live page draw the same :class:`RunView`. It is read from the chain's events and
contract state (the record anyone can audit), never from summary.json; the one exception is the time
per round, which only the running process measured, and which the caller supplies and the page labels.

:class:`RecordReader` reads incrementally: mined blocks and their events never change, so a live page
polling every second only asks the chain for what was mined since its last look.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fedledger.crypto import to_hex
from fedledger.ledger import Ledger
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.types import LedgerEvent, Phase, Role
from fedledger.protocol.spec import TaskSpec
from fedledger.sim.simulation import rounds_from_events

# The split of each round's time, in the order the charts stack it (as the run's RoundTimer measures it).
TIME_PARTS = ("train", "crypto", "ledger", "store", "aggregate", "evaluate")
ROLE_NAMES = (("trainer", Role.TRAINER), ("aggregator", Role.AGGREGATOR), ("validator", Role.VALIDATOR))
CONSORTIUM_EVENTS = frozenset({"MemberAdded", "MemberRemoved", "RolesChanged", "EncKeyRotated"})

Timings = Callable[[int], Mapping[str, float] | None]


@dataclass
class Proposal:
    aggregator: str
    model_hash: str
    agreed: bool
    tx: str


@dataclass
class Exclusion:
    member: str
    reason: str
    code: int


@dataclass
class RoundView:
    """One finalised round as the chain records it (``seconds`` excepted: see the module doc)."""

    round: int
    model_hash: str
    finalized_block: int
    finalized_tx: str
    included: list[str]
    excluded: list[Exclusion]
    sample_counts: dict[str, int]
    committee: list[str]
    proposals: list[Proposal]
    accuracy: float | None
    loss: float | None
    seconds: dict[str, float] | None = None

    @property
    def samples(self) -> int:
        """Samples behind this round's model: those of the included updates only."""
        return sum(self.sample_counts.get(m, 0) for m in self.included)


@dataclass
class Dataset:
    """A trainer's dataset fingerprint as committed on chain: never the data."""

    samples: int
    merkle_root: str
    label_histogram: list[int]


@dataclass
class MemberView:
    name: str
    address: str
    roles: list[str]
    admin: bool
    active: bool
    submissions: int = 0
    included: int = 0
    exclusions: list[tuple[int, str]] = field(default_factory=list)
    dataset: Dataset | None = None


@dataclass
class ChainFacts:
    chain_id: int
    consortium: str
    training_task: str
    deploy_block: int
    blocks: int
    transactions: int
    gas_used: int
    events: int
    event_counts: dict[str, int]
    admin_threshold: int
    num_admins: int


@dataclass
class RunView:
    """Everything the pages show about one task of one run directory."""

    title: str
    run_dir: str
    task_id: int
    num_rounds: int
    phase: str
    current_round: int
    submitted: int
    num_trainers: int
    committee_size: int
    quorum: int
    min_updates: int
    round_duration: int
    rounds: list[RoundView]
    members: list[MemberView]
    chain: ChainFacts
    task_facts: list[tuple[str, str]] = field(default_factory=list)
    timings_source: str | None = None

    @property
    def finalised(self) -> int:
        return len(self.rounds)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    @property
    def last(self) -> RoundView | None:
        return self.rounds[-1] if self.rounds else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def spec_facts(spec: TaskSpec) -> list[tuple[str, str]]:
    """The agreed task spec (decrypted from the chain-committed spec blob), as label/value rows."""
    t = spec.training
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(spec.model.kwargs.items()))
    agg = spec.aggregation
    rule = agg.rule + (f" (trim {agg.trim_ratio})" if agg.rule == "trimmed_mean" else "")
    rule += f" (byzantine {agg.byzantine})" if agg.rule == "multi_krum" else ""
    return [
        ("dataset", f"{spec.dataset} ({spec.num_classes} classes)"),
        ("model", f"{spec.model.name}({kwargs})" if kwargs else spec.model.name),
        ("local training", f"{t.optimizer}, lr {t.lr:g}, {t.epochs} epoch(s), batch {t.batch_size}"),
        ("aggregation", rule),
        ("update norm bound", "none" if agg.max_update_norm is None else f"{agg.max_update_norm:g}"),
        ("seed", str(spec.seed)),
    ]


def summary_timings(run_dir: Path) -> dict[int, dict[str, float]] | None:
    """Per-round seconds from summary.json, the only place they exist; None if it is absent or unreadable."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        out: dict[int, dict[str, float]] = {}
        for record in summary["rounds"]:
            seconds = record.get("seconds") or {}
            out[int(record["round"])] = {k: float(v) for k, v in seconds.items() if k in TIME_PARTS}
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RecordReader:
    """Reads one task's record from an embedded chain, remembering what it already read.

    Safe to call from several threads: one refresh at a time (the chain itself serialises its rpc calls).
    """

    def __init__(self, chain: EmbeddedChain, ledger: Ledger, task_id: int, names: Mapping[str, str]) -> None:
        self.chain = chain
        self.ledger = ledger
        self.task_id = task_id
        self.names = {a.lower(): n for a, n in names.items()}
        self.task = ledger.task(task_id)
        self._lock = threading.Lock()
        self._head = 0
        self._transactions = 0
        self._gas = 0
        self._events: list[LedgerEvent] = []
        self._members: list[MemberView] | None = None
        self._admins: tuple[set[str], int] = (set(), 0)
        self._committees: dict[int, list[str]] = {}

    def name(self, address: str) -> str:
        return self.names.get(address.lower(), address)

    def _refresh(self) -> None:
        head = int(self.chain.rpc("eth_blockNumber", []), 16)
        if head <= self._head and self._members is not None:
            return
        for number in range(self._head + 1, head + 1):
            block = self.chain.rpc("eth_getBlockByNumber", [hex(number), False])
            self._transactions += len(block["transactions"])
            self._gas += int(block["gasUsed"], 16)
        new = self.ledger.events(from_block=self._head + 1, to_block=head) if head > self._head else []
        self._events.extend(new)
        self._head = head
        if self._members is None or any(e.name in CONSORTIUM_EVENTS for e in new):
            admins = {a.lower() for a in self.ledger.admins()}
            self._admins = (admins, self.ledger.threshold())
            self._members = [
                MemberView(
                    name=info.name or self.name(info.address),
                    address=info.address,
                    roles=[label for label, bit in ROLE_NAMES if info.roles & bit],
                    admin=info.address.lower() in admins,
                    active=info.active,
                )
                for info in self.ledger.members()
            ]
            for info in self._members:
                self.names.setdefault(info.address.lower(), info.name)

    def view(
        self,
        *,
        title: str,
        run_dir: str,
        timings: Timings | None = None,
        timings_source: str | None = None,
        task_facts: list[tuple[str, str]] | None = None,
    ) -> RunView:
        """Read what was mined since the last call and describe the task as it stands now."""
        with self._lock:
            self._refresh()
            state = self.ledger.task_state(self.task_id)
            events = list(self._events)
            assert self._members is not None
            members = [replace(m, dataset=None, exclusions=[]) for m in self._members]
            admins, threshold = self._admins
        task = self.task
        trainers = {a.lower() for a in task.trainers}
        records = rounds_from_events(events, task, self.names, trainers)
        rounds = []
        for number in sorted(records):
            record = records[number]
            if number not in self._committees:
                self._committees[number] = [self.name(a) for a in self.ledger.committee(self.task_id, number)]
            seconds = timings(number) if timings is not None else None
            rounds.append(
                RoundView(
                    round=number,
                    model_hash=record["model_hash"],
                    finalized_block=int(record["finalized_block"]),
                    finalized_tx=str(record["finalized_tx"]),
                    included=list(record["included"]),
                    excluded=[
                        Exclusion(x["member"], x["reason"], int(x["code"])) for x in record["excluded"]
                    ],
                    sample_counts=dict(record["sample_counts"]),
                    committee=self._committees[number],
                    proposals=[
                        Proposal(p["aggregator"], p["model_hash"], bool(p["agreed"]), p["tx"])
                        for p in record["committee_proposals"]
                    ],
                    accuracy=record["test_accuracy"],
                    loss=record["test_loss"],
                    seconds=dict(seconds) if seconds is not None else None,
                )
            )
        by_name = {m.name: m for m in members}
        for event in events:
            args = event.args
            if args.get("taskId") != self.task_id:
                continue
            member = by_name.get(self.name(str(args.get("member", ""))))
            if member is None:
                continue
            if event.name == "UpdateSubmitted":
                member.submissions += 1
            elif event.name == "DatasetRegistered":
                member.dataset = Dataset(
                    samples=int(args["numSamples"]),
                    merkle_root=to_hex(bytes(args["merkleRoot"])),
                    label_histogram=[int(x) for x in args["labelHistogram"]],
                )
        for r in rounds:
            for name in r.included:
                if name in by_name:
                    by_name[name].included += 1
            for x in r.excluded:
                if x.member in by_name:
                    by_name[x.member].exclusions.append((r.round, x.reason))
        counts: dict[str, int] = {}
        for event in events:
            counts[event.name] = counts.get(event.name, 0) + 1
        deployment = self.ledger.deployment
        phase = Phase(state.phase).name.lower()
        return RunView(
            title=title,
            run_dir=run_dir,
            task_id=self.task_id,
            num_rounds=task.num_rounds,
            phase=phase,
            current_round=task.num_rounds if state.phase == Phase.DONE else state.round,
            submitted=state.num_submitted,
            num_trainers=task.num_trainers,
            committee_size=task.committee_size,
            quorum=task.quorum,
            min_updates=task.min_updates,
            round_duration=task.round_duration,
            rounds=rounds,
            members=members,
            chain=ChainFacts(
                chain_id=deployment.chain_id,
                consortium=deployment.consortium,
                training_task=deployment.training_task,
                deploy_block=deployment.deploy_block,
                blocks=self._head,
                transactions=self._transactions,
                gas_used=self._gas,
                events=len(events),
                event_counts=dict(sorted(counts.items())),
                admin_threshold=threshold,
                num_admins=len(admins),
            ),
            task_facts=task_facts or [],
            timings_source=timings_source,
        )
