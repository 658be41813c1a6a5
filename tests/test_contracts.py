"""The Consortium and TrainingTask contracts, driven through the Ledger client.

Every rule of the round protocol and of governance has a transaction here that must revert with a
specific reason, plus the positive paths (two full rounds with a dissenting aggregator, the deadline
path, reopening). Every test runs on the embedded chain and on anvil (tests/chains.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from chains import BACKENDS, advance_time, open_chain
from fedledger.errors import LedgerError, TransactionRevertedError, UsageError
from fedledger.ledger import Deployment, Ledger, Phase, ProposalKind, Role, TaskParams
from fedledger.ledger.client import _abi, _deploy_contract, _TxEngine
from fedledger.ledger.contracts import CONTRACT_NAMES, artifact_path, source_sha256
from fedledger.ledger.types import ParticipantBatch

ROUND_DURATION = 3600
NUM_ACCOUNTS = 24


# --------------------------------------------------------------------------- fixtures


@dataclass
class Env:
    w3: Web3
    ledger: Ledger
    admins: list[LocalAccount]  # 3 admins, threshold 2; all members without roles
    trainers: list[LocalAccount]  # 3
    aggregators: list[LocalAccount]  # 3
    validator: LocalAccount
    outsider: LocalAccount  # never a member
    spares: list[LocalAccount]  # not members at deployment; tests add them

    def key(self, acct: LocalAccount) -> bytes:
        return hashlib.sha256(b"x25519:" + acct.address.encode()).digest()


_counter = itertools.count(1)


def h32(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@pytest.fixture(scope="module", params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    w3, accts, stop = open_chain(request.param, tmp_path_factory.mktemp(request.param), NUM_ACCOUNTS)
    request.addfinalizer(stop)
    admins, trainers, aggregators = accts[0:3], accts[3:6], accts[6:9]
    validator, outsider, spares = accts[9], accts[10], accts[11:]
    members: list[tuple[str, str, int, bytes]] = []
    for i, a in enumerate(admins):
        members.append((a.address, f"admin{i}", 0, h32(f"key{a.address}")))
    for i, a in enumerate(trainers):
        members.append((a.address, f"hospital{i}", int(Role.TRAINER), h32(f"key{a.address}")))
    for i, a in enumerate(aggregators):
        members.append((a.address, f"agg{i}", int(Role.AGGREGATOR), h32(f"key{a.address}")))
    members.append((validator.address, "validator", int(Role.VALIDATOR), h32(f"key{validator.address}")))
    ledger = Ledger.deploy(w3, admins[0], admins=[a.address for a in admins], threshold=2, members=members)
    yield Env(w3, ledger, admins, trainers, aggregators, validator, outsider, spares)


def make_params(
    env: Env,
    *,
    participants: Sequence[LocalAccount] | None = None,
    num_rounds: int = 2,
    committee_size: int = 3,
    min_updates: int = 2,
    quorum: int = 2,
    round_duration: int = ROUND_DURATION,
) -> TaskParams:
    if participants is None:
        participants = [*env.trainers, *env.aggregators, env.validator]
    n = next(_counter)
    return TaskParams(
        spec_hash=h32(f"spec{n}"),
        initial_model_hash=h32(f"model0-{n}"),
        num_rounds=num_rounds,
        participants=tuple(p.address for p in participants),
        wrapped_keys=tuple(h32(f"wk{n}{p.address}") * 2 + bytes(28) for p in participants),
        committee_size=committee_size,
        min_updates=min_updates,
        quorum=quorum,
        round_duration=round_duration,
    )


def approve_task(env: Env, params: TaskParams) -> None:
    pid = env.ledger.propose_task(env.admins[0], params)
    env.ledger.approve(env.admins[1], pid)


def new_task(
    env: Env, *, register: bool = True, participants: Sequence[LocalAccount] | None = None, **kw: int
) -> tuple[int, TaskParams]:
    params = make_params(env, participants=participants, **kw)
    approve_task(env, params)
    task_id = env.ledger.create_task(env.admins[0], params)
    if register:
        for t in env.trainers:
            if t.address in params.participants:
                env.ledger.register_dataset(t, task_id, 100, [60, 40], h32(f"root{t.address}"))
    return task_id, params


def reasons_for(params: TaskParams, included: int, code: int = 1) -> list[int]:
    return [0 if included >> i & 1 else code for i in range(len(params.participants))]


def mask_of(params: TaskParams, accts: Sequence[LocalAccount]) -> int:
    return sum(1 << params.participants.index(a.address) for a in accts)


def reverts(reason: str) -> pytest.RaisesExc[TransactionRevertedError]:
    return pytest.raises(TransactionRevertedError, match=reason)


def raw(env: Env, sender: LocalAccount, fn: str, *args: object, contract: str = "TrainingTask") -> None:
    """Send a transaction with arguments the client would refuse to build (to reach a contract check)."""
    env.ledger._transact(sender, contract, fn, args, 3_000_000)


def chain_batches(
    parts: Sequence[Sequence[LocalAccount]], key: Callable[[LocalAccount], bytes]
) -> list[ParticipantBatch]:
    """Participant batches of any sizes, hash-chained as TaskParams.batches chains its own."""
    out: list[ParticipantBatch] = []
    following = bytes(32)
    first = sum(len(p) for p in parts)
    for part in reversed(parts):
        first -= len(part)
        batch = ParticipantBatch(first, tuple(a.address for a in part), tuple(key(a) for a in part), following)
        following = batch.commitment()
        out.append(batch)
    return out[::-1]


def approve_raw_task(env: Env, n: int, first_commitment: bytes, **kw: int) -> tuple[object, ...]:
    """Approve a createTask parameter set by hash; return the createTask arguments before the batch."""
    c = next(_counter)
    head = (
        h32(f"spec{c}"),
        h32(f"model0-{c}"),
        kw.get("num_rounds", 1),
        n,
        kw.get("committee_size", 2),
        kw.get("min_updates", 1),
        kw.get("quorum", 2),
        kw.get("round_duration", ROUND_DURATION),
    )
    types = ["bytes32", "bytes32", "uint256", "uint256", "bytes32", "uint256", "uint256", "uint256", "uint256"]
    params_hash = keccak(abi_encode(types, [*head[:4], first_commitment, *head[4:]]))
    pid = env.ledger._propose(env.admins[0], ProposalKind.APPROVE_TASK, params_hash=params_hash)
    env.ledger.approve(env.admins[1], pid)
    return head


@pytest.fixture
def task(env: Env) -> Iterator[tuple[int, TaskParams]]:
    yield new_task(env)


# --------------------------------------------------------------------------- artifacts


def test_committed_artifacts_match_sources() -> None:
    for name in CONTRACT_NAMES:
        data = json.loads(artifact_path(name).read_text())
        assert data["source_sha256"] == source_sha256(name), (
            f"{name}.json is stale: run `python -m fedledger.ledger.contracts`"
        )
        assert data["vyper_version"].startswith("0.4")
        assert len(bytes.fromhex(data["bytecode"].removeprefix("0x"))) < 2 * 24576


# --------------------------------------------------------------------------- consortium


def test_bootstrap_membership(env: Env) -> None:
    led = env.ledger
    members = led.members()
    assert len(members) == 10
    t0 = led.member(env.trainers[0].address)
    assert t0 is not None and t0.active and t0.roles == Role.TRAINER and t0.name == "hospital0"
    assert t0.enc_key == h32(f"key{env.trainers[0].address}")
    assert led.member(env.outsider.address) is None
    assert led.is_admin(env.admins[2].address) and not led.is_admin(env.trainers[0].address)
    assert led.threshold() == 2
    assert led.admins() == tuple(a.address for a in env.admins)


def test_bad_bootstrap_reverts(env: Env) -> None:
    a = env.spares[0]
    with reverts("bad threshold"):
        Ledger.deploy(env.w3, a, admins=[a.address], threshold=2, members=[])
    with reverts("duplicate member"):
        Ledger.deploy(env.w3, a, admins=[a.address], threshold=1, members=[(a.address, "x", 1, h32("k"))] * 2)
    with reverts("no admins"):
        Ledger.deploy(env.w3, a, admins=[], threshold=1, members=[])
    with reverts("duplicate admin"):
        Ledger.deploy(env.w3, a, admins=[a.address] * 2, threshold=1, members=[])
    ctor = _abi("Consortium").encode_constructor([[a.address], 1, [a.address], ["x", "y"], [1], [h32("k")], bytes(32)])
    with reverts("length mismatch"):
        _deploy_contract(_TxEngine(env.w3), a, "Consortium", ctor)


def test_founders_in_batches(env: Env) -> None:
    """Founding members after the first batch: each must be the batch the deployment committed to."""
    deployer, f1, f2 = env.spares[10:13]
    types = ["address[]", "string[]", "uint8[]", "bytes32[]", "bytes32"]

    def batch(accts: Sequence[LocalAccount], following: bytes) -> tuple[object, ...]:
        names = [f"founder-{a.address[:8]}" for a in accts]
        return [a.address for a in accts], names, [1] * len(accts), [env.key(a) for a in accts], following

    second = batch([f1, f2], bytes(32))
    first = batch([deployer], keccak(abi_encode(types, list(second))))
    ctor = _abi("Consortium").encode_constructor([[deployer.address], 1, *first])
    receipt = _deploy_contract(_TxEngine(env.w3), deployer, "Consortium", ctor)
    dep = env.ledger.deployment
    other = Ledger(env.w3, Deployment(dep.chain_id, receipt["contractAddress"], dep.training_task, dep.deploy_block))
    assert [m.address for m in other.members()] == [deployer.address]
    with reverts("bootstrap incomplete"):  # governance waits for the founding set
        other.propose_member(deployer, env.spares[9].address, "x", 1, env.key(env.spares[9]))
    wrong = (second[0][::-1], *second[1:])  # type: ignore[index]
    with reverts("batch not committed"):
        other._transact(deployer, "Consortium", "bootstrap", wrong, 3_000_000)
    other._transact(f2, "Consortium", "bootstrap", second, 3_000_000)  # anyone may send the committed batch
    assert [m.address for m in other.members()] == [deployer.address, f1.address, f2.address]
    with reverts("bootstrap complete"):
        other._transact(deployer, "Consortium", "bootstrap", second, 3_000_000)
    other.propose_member(deployer, env.spares[9].address, "x", 1, env.key(env.spares[9]))
    assert other.member(env.spares[9].address) is not None


def test_governance_below_threshold_then_executes(env: Env) -> None:
    led, new = env.ledger, env.spares[0]
    pid = led.propose_member(env.admins[0], new.address, "clinic", int(Role.TRAINER), env.key(new))
    info = led.proposal(pid)
    assert info.approvals == 1 and not info.executed
    assert led.member(new.address) is None  # one approval of two: nothing happens yet
    res = led.approve(env.admins[2], pid)
    assert [e.name for e in res.events] == ["ProposalApproved", "MemberAdded", "ProposalExecuted"]
    m = led.member(new.address)
    assert m is not None and m.active and m.roles == Role.TRAINER and m.name == "clinic"
    assert led.proposal(pid).executed
    with reverts("already executed"):
        led.approve(env.admins[1], pid)
    with reverts("already a member"):
        led.propose_member(env.admins[0], new.address, "again", 1, env.key(new))


def test_double_approval_by_one_admin_reverts(env: Env) -> None:
    pid = env.ledger.propose_member(env.admins[0], env.spares[1].address, "lab", 1, env.key(env.spares[1]))
    with reverts("already approved"):
        env.ledger.approve(env.admins[0], pid)
    assert env.ledger.member(env.spares[1].address) is None


def test_non_admin_cannot_propose_or_approve(env: Env) -> None:
    led = env.ledger
    with reverts("not an admin"):
        led.propose_member(env.outsider, env.spares[2].address, "x", 1, env.key(env.spares[2]))
    with reverts("not an admin"):
        led.propose_member(env.trainers[0], env.spares[2].address, "x", 1, env.key(env.spares[2]))
    pid = led.propose_member(env.admins[0], env.spares[2].address, "x", 1, env.key(env.spares[2]))
    with reverts("not an admin"):
        led.approve(env.trainers[0], pid)
    with reverts("unknown proposal"):
        led.approve(env.admins[1], 10_000)


def test_proposal_validation(env: Env) -> None:
    led = env.ledger
    with reverts("not a member"):
        led.propose_remove_member(env.admins[0], env.outsider.address)
    with reverts("not a member"):
        led.propose_set_roles(env.admins[0], env.outsider.address, 1)
    with reverts("zero key"):
        led.propose_rotate_key(env.admins[0], env.trainers[0].address, bytes(32))
    with reverts("bad roles"):
        led.propose_member(env.admins[0], env.spares[3].address, "x", 8, env.key(env.spares[3]))
    with reverts("zero address"):
        led.propose_member(env.admins[0], "0x" + "00" * 20, "x", 1, bytes(32))


def test_proposal_revalidated_at_execution(env: Env) -> None:
    """Two pending proposals to add the same address: the second cannot execute once the first did."""
    led, who = env.ledger, env.spares[7]
    first = led.propose_member(env.admins[0], who.address, "a", 1, env.key(who))
    second = led.propose_member(env.admins[1], who.address, "b", 2, env.key(who))
    led.approve(env.admins[2], first)
    with reverts("already a member"):
        led.approve(env.admins[2], second)
    m = led.member(who.address)
    assert m is not None and m.name == "a" and not led.proposal(second).executed


def test_set_roles_and_rotate_key(env: Env) -> None:
    led, who = env.ledger, env.spares[4]
    pid = led.propose_member(env.admins[0], who.address, "x", int(Role.VALIDATOR), env.key(who))
    led.approve(env.admins[1], pid)
    pid = led.propose_set_roles(env.admins[1], who.address, int(Role.TRAINER | Role.AGGREGATOR))
    res = led.approve(env.admins[2], pid)
    assert res.events[1].name == "RolesChanged" and res.events[1].args["roles"] == 3
    pid = led.propose_rotate_key(env.admins[0], who.address, h32("new key"))
    led.approve(env.admins[2], pid)
    m = led.member(who.address)
    assert m is not None and m.roles == Role.TRAINER | Role.AGGREGATOR and m.enc_key == h32("new key")


# --------------------------------------------------------------------------- task creation


def test_create_task_requires_approval_once(env: Env) -> None:
    led = env.ledger
    params = make_params(env)
    with reverts("task not approved"):
        led.create_task(env.admins[0], params)
    pid = led.propose_task(env.admins[0], params)
    with reverts("task not approved"):  # one approval of two
        led.create_task(env.admins[0], params)
    led.approve(env.admins[1], pid)
    assert led.task_approved(params)
    with reverts("not a member"):
        led.create_task(env.outsider, params)
    task_id = led.create_task(env.trainers[0], params)
    with reverts("task already created"):
        led.create_task(env.admins[0], params)
    with reverts("task already approved"):
        led.propose_task(env.admins[0], params)

    info = led.task(task_id)
    assert info.participants == params.participants
    assert info.aggregators == tuple(a.address for a in env.aggregators)
    assert info.trainers == tuple(t.address for t in env.trainers)
    assert (info.num_trainers, info.committee_size, info.quorum, info.min_updates) == (3, 3, 2, 2)
    assert info.spec_hash == params.spec_hash and info.creator == env.trainers[0].address
    assert led.wrapped_key(task_id, env.trainers[1].address) == params.wrapped_keys[1]
    state = led.task_state(task_id)
    assert state.round == 1 and state.phase == Phase.TRAINING
    assert state.deadline == state.opened_at + ROUND_DURATION
    assert led.task_count() >= task_id


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"quorum": 4, "committee_size": 3}, "bad quorum"),
        ({"quorum": 0}, "bad quorum"),
        ({"committee_size": 4, "quorum": 2}, "bad committee size"),
        ({"min_updates": 4}, "bad minUpdates"),
        ({"min_updates": 0}, "bad minUpdates"),
        ({"num_rounds": 0}, "bad numRounds"),
        ({"round_duration": 0}, "bad roundDuration"),
        ({"min_updates": 8}, "bad minUpdates"),  # more than the 7 participants: refused before any batch
        ({"committee_size": 33, "quorum": 2}, "bad committee size"),  # above MAX_COMMITTEE
    ],
)
def test_create_task_parameter_checks(env: Env, overrides: dict[str, int], reason: str) -> None:
    params = make_params(env, **overrides)  # type: ignore[arg-type]
    approve_task(env, params)
    with reverts(reason):
        env.ledger.create_task(env.admins[0], params)


def test_create_task_participant_checks(env: Env) -> None:
    for participants, reason in [
        ([env.trainers[0], env.outsider, *env.aggregators], "participant not a member"),
        ([env.trainers[0], env.trainers[0], *env.aggregators], "duplicate participant"),
        ([*env.aggregators], "no trainers"),
    ]:
        params = make_params(env, participants=participants, min_updates=1)
        approve_task(env, params)
        with reverts(reason):
            env.ledger.create_task(env.admins[0], params)


def wrapped(label: str, acct: LocalAccount) -> bytes:
    return h32(f"{label}{acct.address}") + bytes(60)


def test_create_task_count_checks(env: Env) -> None:
    """Participant count and batch shape, reached with arguments TaskParams itself refuses to build."""
    t0, a0, a1 = env.trainers[0], *env.aggregators[:2]
    trio = [t0, a0, a1]
    for n, parts, keys, reason in [
        (0, [], [], "no participants"),
        (1025, trio, [wrapped("c", a) for a in trio], "too many participants"),
        (2, trio, [wrapped("c", a) for a in trio], "participant count"),  # batch larger than announced
        (4, trio, [wrapped("c", a) for a in trio], "participant count"),  # the last batch leaves it short
        (3, trio, [wrapped("c", a) for a in trio[:2]], "wrapped keys length"),
    ]:
        addresses = [a.address for a in parts]
        commitment = keccak(abi_encode(["address[]", "bytes[]", "bytes32"], [addresses, keys, bytes(32)]))
        head = approve_raw_task(env, n, commitment)
        with reverts(reason):
            raw(env, env.admins[0], "createTask", *head, addresses, keys, bytes(32))


def test_participants_in_batches(env: Env) -> None:
    """A task whose participants come in three transactions: nothing runs until the last batch is in,
    and each batch must be the next one the approved parameters hash chains to."""
    led = env.ledger
    t0, t1, t2 = env.trainers
    a0, a1, a2 = env.aggregators
    batches = chain_batches([[t0, a0], [t1, a1], [t2, a2, env.validator]], lambda a: wrapped("b", a))
    first = batches[0]
    head = approve_raw_task(env, 7, first.commitment(), committee_size=3, min_updates=2)
    args = (*head, list(first.participants), list(first.wrapped_keys), first.next_commitment)
    res = led._transact(env.admins[0], "TrainingTask", "createTask", args, 3_000_000)
    assert [e.name for e in res.events] == ["TaskCreated", "ParticipantsAdded"]
    task_id = res.events[0].args["taskId"]
    state = led.task_state(task_id)
    assert state.phase == Phase.SETUP and state.round == 1
    assert led.pending_participants(task_id) == batches[1].commitment()
    assert led.committee(task_id, 1) == ()
    assert led.task(task_id).participants == (t0.address, a0.address)
    led.register_dataset(t0, task_id, 100, [], h32("root"))  # an admitted trainer may register already
    with reverts("not in training phase"):
        led.submit_update(t0, task_id, 1, h32("u"), 10)
    with reverts("not in training phase"):
        led.reopen_round(t0, task_id)
    with reverts("round not ready for aggregation"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), 1, [0] + [1] * 6)
    with reverts("not a participant"):  # its batch is not in yet
        led.register_dataset(t1, task_id, 100, [], h32("root"))
    assert led.wrapped_key(task_id, t0.address) == wrapped("b", t0)
    assert led.wrapped_key(task_id, env.validator.address) == b""  # not in yet: must not stay cached

    def add(sender: LocalAccount, batch: ParticipantBatch, task: int = task_id) -> object:
        return led.add_participants(sender, task, batch.participants, batch.wrapped_keys, batch.next_commitment)

    with reverts("batch not approved"):
        add(env.admins[0], batches[2])  # out of order
    with reverts("not a member"):
        add(env.outsider, batches[1])
    with reverts("unknown task"):
        add(env.admins[0], batches[1], 10_000)
    res = add(t0, batches[1])  # any member may send an approved batch
    assert [e.name for e in res.events] == ["ParticipantsAdded"]  # type: ignore[attr-defined]
    res = add(env.admins[0], batches[2])
    assert [e.name for e in res.events] == ["ParticipantsAdded", "RoundOpened"]  # type: ignore[attr-defined]
    with reverts("participants complete"):
        add(env.admins[0], batches[2])

    info = led.task(task_id)
    order = [t0, a0, t1, a1, t2, a2, env.validator]
    assert info.participants == tuple(a.address for a in order)
    assert info.aggregators == tuple(a.address for a in env.aggregators)
    assert info.trainers == tuple(t.address for t in env.trainers) and info.num_trainers == 3
    assert led.wrapped_key(task_id, env.validator.address) == wrapped("b", env.validator)
    assert led.wrapped_key(task_id, env.outsider.address) == b""
    log_reads = []
    read_logs = led._logs
    led._logs = lambda *a, **k: log_reads.append(a) or read_logs(*a, **k)  # type: ignore[method-assign]
    try:  # every participant's key is known now: no member reads and decodes the batches again
        assert [led.wrapped_key(task_id, a.address) for a in order] == [wrapped("b", a) for a in order]
    finally:
        del led._logs
    assert log_reads == []
    assert led.pending_participants(task_id) is None
    assert led.task_state(task_id).phase == Phase.TRAINING
    assert led.committee(task_id, 1) == tuple(a.address for a in env.aggregators)
    led.submit_update(t0, task_id, 1, h32("u"), 10)
    assert led.task_state(task_id).submitted_mask == 1


# --------------------------------------------------------------------------- datasets


def test_register_dataset_rules(env: Env) -> None:
    led = env.ledger
    task_id, _ = new_task(env, register=False)
    t0 = env.trainers[0]
    with reverts("not a member"):
        led.register_dataset(env.outsider, task_id, 10, [], h32("r"))
    with reverts("not a trainer"):
        led.register_dataset(env.validator, task_id, 10, [], h32("r"))
    with reverts("histogram sum"):
        led.register_dataset(t0, task_id, 10, [3, 3], h32("r"))
    with reverts("zero samples"):
        led.register_dataset(t0, task_id, 0, [], h32("r"))
    with reverts("too many samples"):  # the registered size is packed in 64 bits
        led.register_dataset(t0, task_id, 2**64, [], h32("r"))
    with reverts("zero merkle root"):
        led.register_dataset(t0, task_id, 10, [], bytes(32))
    res = led.register_dataset(t0, task_id, 10, [4, 6], h32("r"))
    ev = res.events[0]
    assert ev.name == "DatasetRegistered" and ev.args["labelHistogram"] == (4, 6)
    assert ev.args["member"] == t0.address
    assert led.dataset(task_id, t0.address) == (10, h32("r"))
    assert led.dataset(task_id, env.trainers[1].address) is None
    with reverts("already registered"):
        led.register_dataset(t0, task_id, 10, [], h32("r"))
    with reverts("dataset not registered"):
        led.submit_update(env.trainers[1], task_id, 1, h32("u"), 10)


# --------------------------------------------------------------------------- submitUpdate


def test_submit_update_rules(env: Env, task: tuple[int, TaskParams]) -> None:
    led = env.ledger
    task_id, _ = task
    t0, t1 = env.trainers[0], env.trainers[1]
    with reverts("unknown task"):
        led.submit_update(t0, 10_000, 1, h32("u"), 10)
    with reverts("not a member"):
        led.submit_update(env.outsider, task_id, 1, h32("u"), 10)
    with reverts("not a trainer"):
        led.submit_update(env.validator, task_id, 1, h32("u"), 10)  # validator-only member
    with reverts("not a trainer"):
        led.submit_update(env.aggregators[0], task_id, 1, h32("u"), 10)
    with reverts("wrong round"):
        led.submit_update(t0, task_id, 2, h32("u"), 10)
    with reverts("zero blob hash"):
        led.submit_update(t0, task_id, 1, bytes(32), 10)
    with reverts("bad numSamples"):
        led.submit_update(t0, task_id, 1, h32("u"), 101)
    with reverts("bad numSamples"):
        led.submit_update(t0, task_id, 1, h32("u"), 0)
    res = led.submit_update(t0, task_id, 1, h32("u0"), 100)
    assert res.events[0].name == "UpdateSubmitted" and res.events[0].args["blobHash"] == h32("u0")
    with reverts("already submitted"):
        led.submit_update(t0, task_id, 1, h32("u0-again"), 100)
    led.submit_update(t1, task_id, 1, h32("u1"), 50)
    subs = led.submissions(task_id, 1)
    assert [(s.member, s.blob_hash, s.num_samples) for s in subs] == [
        (t0.address, h32("u0"), 100),
        (t1.address, h32("u1"), 50),
    ]
    sub = led.submission(task_id, 1, t1.address)
    assert sub is not None and sub.num_samples == 50
    state = led.task_state(task_id)
    assert state.num_submitted == 2 and state.submitted_mask == 0b11 and state.phase == Phase.TRAINING


def test_trainer_role_gained_after_creation(env: Env) -> None:
    """Task roles are fixed when the task is created: a member made a trainer later cannot train in it."""
    led, who = env.ledger, env.spares[9]
    pid = led.propose_member(env.admins[0], who.address, "late", int(Role.VALIDATOR), env.key(who))
    led.approve(env.admins[1], pid)
    task_id, _ = new_task(env, participants=[*env.trainers, *env.aggregators, who])
    pid = led.propose_set_roles(env.admins[0], who.address, int(Role.TRAINER | Role.VALIDATOR))
    led.approve(env.admins[1], pid)
    with reverts("not a trainer in this task"):
        led.register_dataset(who, task_id, 10, [], h32("r"))
    with reverts("not a trainer in this task"):
        led.submit_update(who, task_id, 1, h32("u"), 10)


def test_submit_by_non_participant(env: Env) -> None:
    task_id, _ = new_task(env, participants=[*env.trainers[:2], *env.aggregators])
    with reverts("not a participant"):
        env.ledger.submit_update(env.trainers[2], task_id, 1, h32("u"), 10)


def test_submit_after_deadline(env: Env, task: tuple[int, TaskParams]) -> None:
    task_id, _ = task
    advance_time(env.w3, ROUND_DURATION + 5)
    with reverts("deadline passed"):
        env.ledger.submit_update(env.trainers[0], task_id, 1, h32("late"), 10)


def test_removed_member_cannot_submit(env: Env) -> None:
    led, who = env.ledger, env.spares[5]
    pid = led.propose_member(env.admins[0], who.address, "leaver", int(Role.TRAINER), env.key(who))
    led.approve(env.admins[1], pid)
    participants = [*env.trainers, who, *env.aggregators]
    task_id, _ = new_task(env, participants=participants)
    led.register_dataset(who, task_id, 10, [], h32("root"))
    pid = led.propose_remove_member(env.admins[1], who.address)
    assert led.member(who.address).active  # type: ignore[union-attr]
    led.approve(env.admins[2], pid)
    m = led.member(who.address)
    assert m is not None and not m.active and m.roles == Role.TRAINER
    assert who.address in [x.address for x in led.members()]
    with reverts("not a member"):
        led.submit_update(who, task_id, 1, h32("u"), 10)


# --------------------------------------------------------------------------- proposeAggregate


def test_propose_aggregate_rules(env: Env) -> None:
    led = env.ledger
    # 3 aggregators, committee of 2: round 1 is [A0, A1], A2 is outside.
    task_id, params = new_task(env, committee_size=2, quorum=2)
    a0, a1, a2 = env.aggregators
    assert led.committee(task_id, 1) == (a0.address, a1.address)
    assert led.committee(task_id, 2) == (a2.address, a0.address)
    assert led.committee(task_id, 3) == (a1.address, a2.address)
    led.submit_update(env.trainers[0], task_id, 1, h32("u0"), 100)
    led.submit_update(env.trainers[1], task_id, 1, h32("u1"), 100)
    inc = mask_of(params, env.trainers[:2])
    with reverts("round not ready for aggregation"):  # still training, deadline not passed
        led.propose_aggregate(a0, task_id, 1, h32("m"), inc, reasons_for(params, inc))
    led.submit_update(env.trainers[2], task_id, 1, h32("u2"), 100)
    assert led.task_state(task_id).phase == Phase.AGGREGATING
    full = mask_of(params, env.trainers)
    ok = reasons_for(params, full)
    with reverts("not a member"):
        led.propose_aggregate(env.outsider, task_id, 1, h32("m"), full, ok)
    with reverts("not an aggregator"):
        led.propose_aggregate(env.trainers[0], task_id, 1, h32("m"), full, ok)
    with reverts("not in committee"):
        led.propose_aggregate(a2, task_id, 1, h32("m"), full, ok)
    with reverts("wrong round"):
        led.propose_aggregate(a0, task_id, 2, h32("m"), full, ok)
    with reverts("zero model hash"):
        led.propose_aggregate(a0, task_id, 1, bytes(32), full, ok)
    with reverts("nothing included"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), 0, reasons_for(params, 0))
    bad = full | 1 << params.participants.index(a0.address)  # an aggregator never submits
    with reverts("included not submitted"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), bad, reasons_for(params, bad))
    with reverts("reasons length"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), full, ok[:-1])
    with reverts("reason set for included"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), full, [1] * len(ok))
    with reverts("reason missing for excluded"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), full, [0] * len(ok))
    res = led.propose_aggregate(a0, task_id, 1, h32("m"), full, ok)
    assert res.events[0].args["votes"] == 1
    assert led.proposal_of(task_id, 1, a0.address) == Ledger.proposal_key(h32("m"), full, ok)
    assert led.proposal_of(task_id, 1, a1.address) is None
    with reverts("already proposed"):
        led.propose_aggregate(a0, task_id, 1, h32("m"), full, ok)
    with reverts("round not final"):
        led.post_metrics(env.validator, task_id, 1, 0.5, 1.0, 10)


def test_postmetrics_and_reopen_rules(env: Env) -> None:
    led = env.ledger
    task_id, params = new_task(env, min_updates=2, num_rounds=1)
    t0 = env.trainers[0]
    with reverts("deadline not passed"):
        led.reopen_round(t0, task_id)
    led.submit_update(t0, task_id, 1, h32("u0"), 100)
    advance_time(env.w3, ROUND_DURATION + 5)
    inc = mask_of(params, [t0])
    with reverts("round not ready for aggregation"):  # deadline passed but 1 < minUpdates
        led.propose_aggregate(env.aggregators[0], task_id, 1, h32("m"), inc, reasons_for(params, inc))
    with reverts("not a member"):
        led.reopen_round(env.outsider, task_id)
    new = env.spares[6]
    pid = led.propose_member(env.admins[0], new.address, "bystander", int(Role.TRAINER), env.key(new))
    led.approve(env.admins[1], pid)
    with reverts("not a participant"):
        led.reopen_round(new, task_id)
    before = led.task_state(task_id)
    res = led.reopen_round(env.validator, task_id)  # any participant may reopen
    after = led.task_state(task_id)
    assert res.events[0].name == "RoundReopened" and res.events[0].args["deadline"] == after.deadline
    assert after.opened_at > before.opened_at and after.num_submitted == 1  # submissions kept
    with reverts("deadline not passed"):
        led.reopen_round(t0, task_id)
    with reverts("already submitted"):
        led.submit_update(t0, task_id, 1, h32("u0b"), 100)
    led.submit_update(env.trainers[1], task_id, 1, h32("u1"), 100)
    advance_time(env.w3, ROUND_DURATION + 5)
    with reverts("enough updates to aggregate"):
        led.reopen_round(t0, task_id)
    # Finish the (single-round) task, then exercise postMetrics.
    inc = mask_of(params, env.trainers[:2])
    for agg in env.aggregators[:2]:
        led.propose_aggregate(agg, task_id, 1, h32("m1"), inc, reasons_for(params, inc, code=7))
    assert led.task_state(task_id).phase == Phase.DONE
    with reverts("not a validator"):
        led.post_metrics(env.trainers[0], task_id, 1, 0.9, 0.3, 100)
    with reverts("round not final"):
        led.post_metrics(env.validator, task_id, 2, 0.9, 0.3, 100)
    with reverts("accuracy above 1"):  # the client refuses it, so send the raw call
        raw(env, env.validator, "postMetrics", task_id, 1, 1_000_001, 0, 100)
    res = led.post_metrics(env.validator, task_id, 1, 0.912345, 0.25, 100)
    args = res.events[0].args
    assert (args["accuracyPpm"], args["lossPpm"], args["numExamples"]) == (912345, 250000, 100)
    with reverts("already posted"):
        led.post_metrics(env.validator, task_id, 1, 0.9, 0.3, 100)
    with reverts("task done"):
        led.submit_update(t0, task_id, 1, h32("u"), 1)
    with reverts("task done"):
        led.reopen_round(t0, task_id)


# --------------------------------------------------------------------------- positive paths


GAS: dict[str, list[int]] = {}


def test_two_rounds_with_dissent(env: Env) -> None:
    led = env.ledger
    start_block = led.block_number()
    task_id, params = new_task(env, num_rounds=2, committee_size=3, quorum=2)
    a0, a1, a2 = env.aggregators
    full = mask_of(params, env.trainers)
    ok = reasons_for(params, full)
    for rnd in (1, 2):
        for i, t in enumerate(env.trainers):
            res = led.submit_update(t, task_id, rnd, h32(f"u{rnd}{i}"), 100 - i)
            GAS.setdefault("submitUpdate", []).append(res.gas_used)
        last = [e.name for e in res.events]
        assert last == ["UpdateSubmitted", "AggregationStarted"]
        model = h32(f"model{rnd}")
        r0 = led.propose_aggregate(a0, task_id, rnd, model, full, ok)
        r1 = led.propose_aggregate(a1, task_id, rnd, h32("evil"), full, ok)  # dissent
        assert led.round_model(task_id, rnd) is None
        r2 = led.propose_aggregate(a2, task_id, rnd, model, full, ok)
        for r in (r0, r1, r2):
            GAS.setdefault("proposeAggregate", []).append(r.gas_used)
        names = [e.name for e in r2.events]
        assert names[:2] == ["AggregateProposed", "RoundFinalized"]
        assert r2.events[0].args["votes"] == 2
        assert led.round_model(task_id, rnd) == model
        assert led.round_included(task_id, rnd) == full
        assert led.proposal_of(task_id, rnd, a1.address) == Ledger.proposal_key(h32("evil"), full, ok)
        if rnd == 1:
            assert names[2] == "RoundOpened"
            state = led.task_state(task_id)
            assert state.round == 2 and state.phase == Phase.TRAINING and state.num_submitted == 0
        else:
            assert names[2] == "TaskCompleted" and r2.events[2].args["modelHash"] == model
            assert led.task_state(task_id).phase == Phase.DONE
    res = led.post_metrics(env.validator, task_id, 2, 0.8, 0.5, 1000)
    GAS.setdefault("postMetrics", []).append(res.gas_used)

    # A finalised model and a round's committee never change: asked again, the ledger keeps them.
    expected = (led.round_model(task_id, 1), led.committee(task_id, 1), led.committee(task_id, 2))
    calls: list[str] = []
    engine_call = led._tx.call
    led._tx.call = lambda to, data, what, **kw: calls.append(what) or engine_call(to, data, what, **kw)  # type: ignore[method-assign]
    try:
        again = (led.round_model(task_id, 1), led.committee(task_id, 1), led.committee(task_id, 2))
        led._views.clear()  # as after a new block
        assert (led.round_model(task_id, 2), led.committee(task_id, 1)) == (h32("model2"), expected[1])
    finally:
        del led._tx.call
    assert again == expected and expected[0] == h32("model1") and len(expected[1]) == 3
    assert calls == []

    events = [e for e in led.events(from_block=start_block + 1) if e.contract == "TrainingTask"]
    events = [e for e in events if e.args.get("taskId") == task_id]
    names = [e.name for e in events]
    assert names[:3] == ["TaskCreated", "ParticipantsAdded", "RoundOpened"]
    assert names.count("UpdateSubmitted") == 6 and names.count("AggregateProposed") == 6
    assert names.count("RoundFinalized") == 2 and names[-2:] == ["TaskCompleted", "MetricsPosted"]
    dissent = [e for e in events if e.name == "AggregateProposed" and e.args["modelHash"] == h32("evil")]
    assert len(dissent) == 2 and all(e.args["aggregator"] == a1.address for e in dissent)
    assert dissent[0].args["reasons"] == tuple(ok)
    created = events[0]
    assert created.args["paramsHash"] == params.params_hash()
    assert isinstance(created.args["specHash"], bytes) and created.args["numRounds"] == 2
    order = [(e.block_number, e.log_index) for e in events]
    assert order == sorted(order)
    assert all(e.tx_hash.startswith("0x") and len(e.tx_hash) == 66 for e in events)


def test_deadline_path(env: Env) -> None:
    led = env.ledger
    task_id, params = new_task(env, num_rounds=1, min_updates=2)
    led.submit_update(env.trainers[0], task_id, 1, h32("a"), 10)
    led.submit_update(env.trainers[1], task_id, 1, h32("b"), 20)
    # trainers[2] misses the deadline
    advance_time(env.w3, ROUND_DURATION + 5)
    assert led.task_state(task_id).phase == Phase.TRAINING
    inc = mask_of(params, env.trainers[:2])
    reasons = reasons_for(params, inc, code=2)
    res = led.propose_aggregate(env.aggregators[0], task_id, 1, h32("agg"), inc, reasons)
    assert [e.name for e in res.events] == ["AggregationStarted", "AggregateProposed"]
    assert res.events[0].args["numSubmitted"] == 2
    assert led.task_state(task_id).phase == Phase.AGGREGATING
    with reverts("not in training phase"):
        led.submit_update(env.trainers[2], task_id, 1, h32("c"), 10)
    res = led.propose_aggregate(env.aggregators[1], task_id, 1, h32("agg"), inc, reasons)
    assert [e.name for e in res.events] == ["AggregateProposed", "RoundFinalized", "TaskCompleted"]
    assert led.round_included(task_id, 1) == inc


def test_gas_budget(env: Env) -> None:
    if not GAS:
        test_two_rounds_with_dissent(env)
    sub, agg = GAS["submitUpdate"], GAS["proposeAggregate"]
    print(f"\nsubmitUpdate gas: min {min(sub)} max {max(sub)}")
    print(f"proposeAggregate gas: min {min(agg)} max {max(agg)} (7 participants)")
    print(f"postMetrics gas: {GAS['postMetrics']}")
    assert max(sub) < 100_000


def test_ledger_stats_and_deployment_roundtrip(env: Env) -> None:
    led = env.ledger
    before_tx, before_gas = led.tx_count, led.gas_used
    with reverts("not a member"):
        led.submit_update(env.outsider, 1, 1, h32("u"), 1)
    assert led.tx_count == before_tx + 1 and led.gas_used > before_gas  # reverted txs cost gas too
    dep = Deployment.from_json(led.deployment.to_json())
    assert dep == led.deployment
    again = Ledger(env.w3, dep)
    assert again.task_count() == led.task_count()
    assert again.chain_id == env.w3.eth.chain_id
    wrong = Deployment(dep.chain_id + 1, dep.consortium, dep.training_task, dep.deploy_block)
    with pytest.raises(LedgerError, match="chain"):
        Ledger(env.w3, wrong)
    # Two Ledger instances sending for one account: `led`'s cached nonce goes stale, the node rejects
    # it, and the client resyncs and resends.
    task_id, _ = new_task(env, register=False)
    t0 = env.trainers[0]
    again.register_dataset(t0, task_id, 10, [], h32("root"))
    res = led.submit_update(t0, task_id, 1, h32("x"), 10)
    assert res.events[0].name == "UpdateSubmitted"
    with pytest.raises(LedgerError, match="reverted: unknown task"):
        led.task_state(10_000)


# --------------------------------------------------------------------------- beyond 256 participants


def test_task_with_300_participants(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Members past bit 255 submit, are included and finalise a round; 303 founders take five bootstrap
    batches, 300 participants three createTask/addParticipants batches; submitting costs the same gas at
    participant 298 as at 255."""
    w3, accts, stop = open_chain("embedded", tmp_path_factory.mktemp("wide"), 303)
    try:
        admins, people = accts[:3], accts[3:]
        aggregators, validator = {0, 150, 299}, 1

        def roles(i: int) -> int:
            return int(Role.AGGREGATOR if i in aggregators else Role.VALIDATOR if i == validator else Role.TRAINER)

        members = [(a.address, f"admin{i}", 0, h32(f"k{a.address}")) for i, a in enumerate(admins)]
        members += [(p.address, f"m{i}", roles(i), h32(f"k{p.address}")) for i, p in enumerate(people)]
        led = Ledger.deploy(w3, admins[0], admins=[a.address for a in admins], threshold=2, members=members)
        last = led.member(people[-1].address)
        assert last is not None and last.name == "m299" and last.active
        assert int(led._call("Consortium", "memberCount")) == 303

        params = TaskParams(
            spec_hash=h32("wide spec"),
            initial_model_hash=h32("wide model"),
            num_rounds=1,
            participants=tuple(p.address for p in people),
            wrapped_keys=tuple(h32(f"wk{p.address}") + bytes(60) for p in people),
            committee_size=3,
            min_updates=3,
            quorum=2,
            round_duration=ROUND_DURATION,
        )
        assert [len(b.participants) for b in params.batches()] == [128, 128, 44]
        twice = dataclasses.replace(
            params,
            participants=(*params.participants[:150], params.participants[3]),
            wrapped_keys=params.wrapped_keys[:151],
        )
        with pytest.raises(UsageError, match="appears twice"):  # it would leave the task stuck in SETUP
            led.create_task(admins[2], twice)
        pid = led.propose_task(admins[0], params)
        led.approve(admins[1], pid)
        task_id = led.create_task(admins[2], params)
        info = led.task(task_id)
        assert info.participants == params.participants
        assert info.aggregators == tuple(people[i].address for i in sorted(aggregators))
        assert info.num_trainers == 296 and info.trainer_mask >> 298 & 1 and not info.trainer_mask >> 299 & 1
        assert led.wrapped_key(task_id, people[299].address) == params.wrapped_keys[299]
        assert led.task_state(task_id).phase == Phase.TRAINING

        submitters = [2, 255, 256, 298]
        gas: dict[int, int] = {}
        for i in submitters:
            led.register_dataset(people[i], task_id, 50 + i, [], h32(f"root{i}"))
            gas[i] = led.submit_update(people[i], task_id, 1, h32(f"u{i}"), 40 + i).gas_used
        assert abs(gas[298] - gas[255]) < 100, gas  # no cost grows with the participant index
        state = led.task_state(task_id)
        assert state.submitted_mask == sum(1 << i for i in submitters) and state.num_submitted == 4
        with reverts("already submitted"):
            led.submit_update(people[298], task_id, 1, h32("again"), 10)

        advance_time(w3, ROUND_DURATION + 5)
        included = (1 << 2) | (1 << 256) | (1 << 298)  # 255's update is excluded (reason 3)
        reasons = [0 if included >> i & 1 else 3 if i == 255 else 1 for i in range(300)]
        a0, a150 = people[0], people[150]
        bad = included | 1 << 257
        with reverts("included not submitted"):
            led.propose_aggregate(a0, task_id, 1, h32("m"), bad, [0 if bad >> i & 1 else 1 for i in range(300)])
        with reverts("included length"):  # a third word for 300 participants
            led.propose_aggregate(a0, task_id, 1, h32("m"), included | 1 << 600, reasons)
        with reverts("reasons length"):
            led.propose_aggregate(a0, task_id, 1, h32("m"), included, reasons[:-1])
        with reverts("reason missing for excluded"):
            led.propose_aggregate(a0, task_id, 1, h32("m"), included, [*reasons[:299], 0])
        with reverts("reason set for included"):
            led.propose_aggregate(a0, task_id, 1, h32("m"), included, [*reasons[:298], 5, 1])
        led.propose_aggregate(a0, task_id, 1, h32("m"), included, reasons)
        res = led.propose_aggregate(a150, task_id, 1, h32("m"), included, reasons)
        assert [e.name for e in res.events] == ["AggregateProposed", "RoundFinalized", "TaskCompleted"]
        assert res.events[0].args["reasons"] == tuple(reasons) and res.events[0].args["included"] == included
        assert res.events[1].args["included"] == included
        assert led.round_included(task_id, 1) == included
        assert led.proposal_of(task_id, 1, a150.address) == Ledger.proposal_key(h32("m"), included, reasons)
        subs = led.submissions(task_id, 1)
        assert [(s.member, s.blob_hash, s.num_samples) for s in subs] == [
            (people[i].address, h32(f"u{i}"), 40 + i) for i in submitters
        ]
        assert led.submission(task_id, 1, people[298].address) == subs[-1]
        assert led.task_state(task_id).phase == Phase.DONE
    finally:
        stop()


def test_round_gas_per_member_at_10_members(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The benchmark's shape (10 trainers, 3 of them aggregators with committee 3 and quorum 2, one also
    the validator): a round's transactions stay under 100k gas per member, from the second round on
    (the first also pays one-off slot creations) and on average over three rounds."""
    w3, people, stop = open_chain("embedded", tmp_path_factory.mktemp("gas10"), 10)
    try:
        def roles(i: int) -> int:
            return int(Role.TRAINER | (Role.AGGREGATOR if i < 3 else 0) | (Role.VALIDATOR if i == 0 else 0))

        members = [(p.address, f"m{i}", roles(i), h32(f"k{p.address}")) for i, p in enumerate(people)]
        led = Ledger.deploy(w3, people[0], admins=[p.address for p in people[:3]], threshold=2, members=members)
        params = TaskParams(
            spec_hash=h32("gas spec"),
            initial_model_hash=h32("gas model"),
            num_rounds=3,
            participants=tuple(p.address for p in people),
            wrapped_keys=tuple(h32(f"wk{p.address}") * 2 + bytes(28) for p in people),
            committee_size=3,
            min_updates=7,
            quorum=2,
            round_duration=ROUND_DURATION,
        )
        led.approve(people[1], led.propose_task(people[0], params))
        task_id = led.create_task(people[0], params)
        for p in people:
            led.register_dataset(p, task_id, 100, [60, 40], h32(f"root{p.address}"))
        full = 2**10 - 1
        per_round = []
        for rnd in (1, 2, 3):
            gas = sum(led.submit_update(p, task_id, rnd, h32(f"u{rnd}{p.address}"), 90).gas_used for p in people)
            committee = led.committee(task_id, rnd)
            for agg in [p for p in people if p.address in committee][:2]:
                gas += led.propose_aggregate(agg, task_id, rnd, h32(f"m{rnd}"), full, [0] * 10).gas_used
            gas += led.post_metrics(people[0], task_id, rnd, 0.9, 0.2, 100).gas_used
            per_round.append(gas / len(people))
        print(f"\ngas per member per round at 10 members: {[round(g) for g in per_round]}")
        assert max(per_round[1:]) < 100_000 and sum(per_round) / 3 < 100_000, per_round
    finally:
        stop()
