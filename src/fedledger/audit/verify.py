"""``fedledger audit``: re-verify a run from its record alone.

The auditor trusts nothing the run wrote about itself (summary.json is ignored): it re-reads the chain's
events and state, re-fetches every blob and checks its content address, decrypts with a member's key,
recomputes every round's aggregate with the same deterministic code the committee ran, and checks the
model file against the final on-chain hash.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3

from fedledger.aggregation import ExclusionReason
from fedledger.codec import decode_tensors
from fedledger.crypto import MemberIdentity, content_address, load_keystore, to_hex
from fedledger.errors import (
    BlobCorruptError,
    BlobNotFoundError,
    CodecError,
    DecryptionError,
    FedledgerError,
    StoreError,
    UsageError,
)
from fedledger.ledger import Ledger
from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider
from fedledger.ledger.chain.rpc_errors import RpcError
from fedledger.ledger.contracts import load_artifact
from fedledger.ledger.types import Phase
from fedledger.protocol.ports import AeadSealer
from fedledger.protocol.rounds import NothingToAggregateError, aggregate_round
from fedledger.protocol.session import KIND_SPEC, TaskSession, open_session, task_blob_context
from fedledger.sim.rundir import RunDirectory
from fedledger.sim.simulation import Simulation, describe_reason
from fedledger.store import LocalBlobStore


@dataclass(frozen=True)
class Violation:
    """One thing in the record that does not hold."""

    message: str
    round: int | None = None
    member: str | None = None
    blob: str | None = None

    def line(self) -> str:
        parts = []
        if self.round is not None:
            parts.append(f"round {self.round}")
        if self.member:
            parts.append(f"member {self.member}")
        if self.blob:
            parts.append(f"blob {self.blob}")
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


@dataclass(frozen=True)
class Misbehaviour:
    """A protection that fired during the run: an excluded update or an outvoted proposal."""

    round: int
    member: str
    kind: str
    detail: str


@dataclass
class AuditReport:
    run_dir: str
    task_id: int
    rounds_checked: int = 0
    blobs_checked: int = 0
    events_read: int = 0
    violations: list[Violation] = field(default_factory=list)
    misbehaviour: list[Misbehaviour] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "run_dir": self.run_dir,
            "task_id": self.task_id,
            "rounds_checked": self.rounds_checked,
            "blobs_checked": self.blobs_checked,
            "events_read": self.events_read,
            "violations": [asdict(v) | {"line": v.line()} for v in self.violations],
            "misbehaviour": [asdict(m) for m in self.misbehaviour],
        }


@dataclass
class OpenRun:
    """A run directory opened read-only for verification: chain, ledger, store and one member's session."""

    run: RunDirectory
    chain: EmbeddedChain
    ledger: Ledger
    store: LocalBlobStore
    session: TaskSession
    names: dict[str, str]

    def close(self) -> None:
        self.chain.close()

    def name(self, address: str) -> str:
        return self.names.get(address.lower(), address)


def open_run(root: Path, *, member: str | None = None, password_file: Path | None = None) -> OpenRun:
    """Open a run directory with the keystore of ``member`` (default: the first member listed)."""
    run = RunDirectory.open(root)
    records = run.members()
    if not records:
        raise UsageError(f"{run.deployment_file}: lists no members")
    if member is None:
        record = records[0]
    else:
        matches = [r for r in records if r.name == member]
        if not matches:
            known = ", ".join(r.name for r in records)
            raise UsageError(f"{root}: no member named '{member}' (members: {known})")
        record = matches[0]
    password = Simulation.password_for(run, password_file)
    identity: MemberIdentity = load_keystore(run.root / record.keystore, password)
    deployment = run.deployment()
    chain = EmbeddedChain.open(run.chain)
    try:
        if chain.chain_id != deployment.chain_id:
            raise UsageError(
                f"{run.deployment_file}: chain id {deployment.chain_id} but {run.chain} holds "
                f"chain {chain.chain_id}"
            )
        ledger = Ledger(Web3(EmbeddedProvider(chain)), deployment)
        store = LocalBlobStore(run.blobs)
        session = open_session(ledger, store, AeadSealer(), identity, run.task_id())
    except BaseException:
        chain.close()
        raise
    names = {r.address.lower(): r.name for r in records}
    return OpenRun(run, chain, ledger, store, session, names)


def audit_run(root: Path, *, member: str | None = None, password_file: Path | None = None) -> AuditReport:
    """Verify every event, blob, aggregate and the model file of a run directory."""
    opened = open_run(root, member=member, password_file=password_file)
    try:
        return _audit(opened)
    finally:
        opened.close()


def _audit(opened: OpenRun) -> AuditReport:
    ledger, store, session = opened.ledger, opened.store, opened.session
    sealer = AeadSealer()
    task = session.task
    report = AuditReport(run_dir=str(opened.run.root), task_id=task.task_id)
    events = [e for e in ledger.events(from_block=ledger.deployment.deploy_block)]
    report.events_read = len(events)

    for label, address in (
        ("Consortium", ledger.deployment.consortium),
        ("TrainingTask", ledger.deployment.training_task),
    ):
        code = opened.chain.rpc("eth_getCode", [address, "latest"])
        if code in ("0x", "", None):
            report.violations.append(Violation(f"no {label} contract code at {address}"))

    spec_ctx = task_blob_context(session.chain_id, session.contract, 0, 0, KIND_SPEC)
    _check_blob(report, store, task.spec_hash, None, None, "spec")
    with contextlib.suppress(StoreError, DecryptionError):
        sealer.open(session.key, store.get(task.spec_hash), spec_ctx)

    state = ledger.task_state(task.task_id)
    finalised = task.num_rounds if state.phase == Phase.DONE else state.round - 1
    submitted_events = {
        (int(e.args["round"]), str(e.args["member"]).lower()): e
        for e in events
        if e.name == "UpdateSubmitted" and e.args["taskId"] == task.task_id
    }

    previous_hash = task.initial_model_hash
    global_model = _load_model(report, session, store, previous_hash, 0)
    for round_ in range(1, finalised + 1):
        report.rounds_checked += 1
        final_hash = ledger.round_model(task.task_id, round_)
        if final_hash is None:
            report.violations.append(Violation("finalised round has no model hash on chain", round=round_))
            break
        submissions = ledger.submissions(task.task_id, round_)
        for sub in submissions:
            event = submitted_events.get((round_, sub.member.lower()))
            if event is None or bytes(event.args["blobHash"]) != sub.blob_hash:
                report.violations.append(
                    Violation(
                        "submission in contract state has no matching UpdateSubmitted event",
                        round=round_,
                        member=opened.name(sub.member),
                        blob=to_hex(sub.blob_hash),
                    )
                )
        included_on_chain = ledger.round_included(task.task_id, round_)
        for entry in submissions:
            index = session.participant_index(entry.member)
            if (included_on_chain >> index) & 1:
                _check_blob(report, store, entry.blob_hash, round_, opened.name(entry.member), "update")
            # An excluded update's blob may legitimately be missing or bad: the committee recorded why,
            # and the recomputation below confirms the same exclusion.
        if global_model is None:
            report.violations.append(
                Violation("cannot recompute: previous global model unavailable", round=round_)
            )
            global_model = _load_model(report, session, store, final_hash, round_)
            continue
        try:
            aggregate = aggregate_round(session, store, sealer, round_, submissions, global_model)
        except NothingToAggregateError:
            report.violations.append(
                Violation("recomputation finds no valid update to aggregate", round=round_)
            )
            global_model = _load_model(report, session, store, final_hash, round_)
            continue
        if aggregate.model_hash != final_hash or aggregate.included != included_on_chain:
            report.violations.append(
                Violation(
                    f"recomputed aggregate {to_hex(aggregate.model_hash)} (included mask {aggregate.included:#x}) "
                    f"differs from the finalised {to_hex(final_hash)} (mask {included_on_chain:#x})",
                    round=round_,
                )
            )
        for exclusion in aggregate.exclusions:
            report.misbehaviour.append(
                Misbehaviour(
                    round_,
                    opened.name(exclusion.member),
                    "excluded update",
                    f"{describe_reason(int(exclusion.reason))}: {exclusion.detail}",
                )
            )
        _check_blob(report, store, final_hash, round_, None, "model")
        global_model = _load_model(report, session, store, final_hash, round_) if final_hash else None
        if global_model is None:
            global_model = aggregate.model

    for event in events:
        if event.name != "AggregateProposed" or event.args["taskId"] != task.task_id:
            continue
        round_ = int(event.args["round"])
        final_hash = ledger.round_model(task.task_id, round_)
        if final_hash is not None and bytes(event.args["modelHash"]) != final_hash:
            report.misbehaviour.append(
                Misbehaviour(
                    round_,
                    opened.name(str(event.args["aggregator"])),
                    "outvoted proposal",
                    f"proposed {to_hex(bytes(event.args['modelHash']))}, finalised {to_hex(final_hash)}",
                )
            )
    _rejected_transactions(report, opened, events, task.task_id)
    if state.phase == Phase.DONE:
        _check_model_file(report, opened, session, store, task.num_rounds)
    return report


def _abi_type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@cache
def _functions(contract: str) -> dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """selector -> (function name, input names, input types) of one contract's ABI."""
    table = {}
    for item in load_artifact(contract).abi:
        if item.get("type") != "function":
            continue
        types = tuple(_abi_type(p) for p in item["inputs"])
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        table[selector] = (item["name"], tuple(p["name"] for p in item["inputs"]), types)
    return table


def _rejected_transactions(report: AuditReport, opened: OpenRun, events: list[Any], task_id: int) -> None:
    """Every transaction to the contracts that reverted: who sent it, what it tried, in which round, why.

    A reverted transaction changes no state, but it is mined, signed by its sender, and on record; the
    reason comes from re-running it at its block, as a node would.
    """
    deployment = opened.ledger.deployment
    contracts = {
        deployment.training_task.lower(): "TrainingTask",
        deployment.consortium.lower(): "Consortium",
    }
    opened_at = sorted(
        (e.block_number, int(e.args["round"]))
        for e in events
        if e.name == "RoundOpened" and e.args.get("taskId") == task_id
    )
    chain = opened.chain
    latest = int(chain.rpc("eth_blockNumber", []), 16)
    for number in range(deployment.deploy_block, latest + 1):
        for receipt in chain.rpc("eth_getBlockReceipts", [hex(number)]) or []:
            contract = contracts.get(str(receipt.get("to") or "").lower())
            if contract is None or int(receipt["status"], 16) == 1:
                continue
            tx = chain.rpc("eth_getTransactionByHash", [receipt["transactionHash"]])
            data = bytes.fromhex(str(tx["input"]).removeprefix("0x"))
            function, names, types = _functions(contract).get(data[:4], ("unknown function", (), ()))
            args: dict[str, Any] = {}
            with contextlib.suppress(Exception):  # a hostile sender may send undecodable calldata
                args = dict(zip(names, abi_decode(list(types), data[4:]), strict=True))
            if "taskId" in args and args["taskId"] != task_id:
                continue
            round_ = args.get("round")
            if not isinstance(round_, int):
                round_ = max((r for block, r in opened_at if block <= number), default=0)
            try:
                call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "gas": tx["gas"]}
                chain.rpc("eth_call", [call, hex(number)])
                reason = "out of gas" if receipt["gasUsed"] == tx["gas"] else "reverted (no reason)"
            except RpcError as exc:
                reason = exc.message.removeprefix("execution reverted").lstrip(": ") or "no reason given"
            report.misbehaviour.append(
                Misbehaviour(
                    round_,
                    opened.name(to_checksum_address(tx["from"])),
                    "rejected transaction",
                    f"{contract}.{function} reverted: {reason} (tx {receipt['transactionHash']})",
                )
            )


def _check_blob(
    report: AuditReport,
    store: LocalBlobStore,
    address: bytes,
    round_: int | None,
    member: str | None,
    kind: str,
) -> bool:
    """Record a violation if the blob is missing or does not match its address; True if it did."""
    report.blobs_checked += 1
    try:
        store.get(address)
    except BlobNotFoundError:
        report.violations.append(
            Violation(
                f"{kind} blob missing from the store", round=round_, member=member, blob=to_hex(address)
            )
        )
        return True
    except BlobCorruptError:
        report.violations.append(
            Violation(
                f"{kind} blob does not match its content hash",
                round=round_,
                member=member,
                blob=to_hex(address),
            )
        )
        return True
    return False


def _load_model(
    report: AuditReport, session: TaskSession, store: LocalBlobStore, address: bytes, round_: int
) -> dict[str, Any] | None:
    try:
        return session.load_model(store, AeadSealer(), address, round_)
    except (StoreError, DecryptionError, CodecError) as exc:
        report.violations.append(
            Violation(f"global model unreadable: {exc}", round=round_, blob=to_hex(address))
        )
        return None


def _check_model_file(
    report: AuditReport, opened: OpenRun, session: TaskSession, store: LocalBlobStore, num_rounds: int
) -> None:
    model_file = opened.run.model_file
    final_hash = opened.ledger.round_model(session.task_id, num_rounds)
    if final_hash is None:
        return
    if not model_file.is_file():
        report.violations.append(Violation(f"{model_file.name} missing"))
        return
    try:
        plaintext = session_plaintext(session, store, final_hash, num_rounds)
    except FedledgerError:
        return  # already reported as a blob violation
    data = model_file.read_bytes()
    if data != plaintext:
        report.violations.append(
            Violation(
                f"{model_file.name} (sha256 {to_hex(content_address(data))}) is not the final model of round "
                f"{num_rounds} (sha256 {to_hex(content_address(plaintext))}, blob {to_hex(final_hash)})"
            )
        )
    try:
        decode_tensors(data)
    except CodecError as exc:
        report.violations.append(Violation(f"{model_file.name}: {exc}"))


def session_plaintext(session: TaskSession, store: LocalBlobStore, address: bytes, round_: int) -> bytes:
    """The decrypted bytes of a global model blob, exactly as a model file holds them."""
    return AeadSealer().open(session.key, store.get(address), session.model_context(round_))


__all__ = ["AuditReport", "Misbehaviour", "Violation", "audit_run", "open_run", "session_plaintext"]
_ = ExclusionReason
