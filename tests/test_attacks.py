"""Hostile members, driven through the real chain, contracts, encrypted store and actors.

One secured run (17 members, 3 rounds) hosts every protocol attack at once: each hostile member is the
honest actor with one step overridden (``fedledger.sim.adversary``). Every test names the protection
it exercises and asserts its specific outcome (the revert reason, or the exclusion code the committee
recorded on chain), so it fails if that protection is removed; and every attack leaves training going
and the audit clean, with the misbehaviour on record.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedledger.aggregation import ExclusionReason
from fedledger.audit.verify import AuditReport, audit_run, open_run
from fedledger.cli.main import app
from fedledger.ledger import Ledger
from fedledger.protocol.actors import Aggregator, Trainer
from fedledger.sim import adversary as adv
from fedledger.sim.config import parse_config
from fedledger.sim.simulation import MemberRuntime, Simulation
from fedledger.sim.templates import demo_config

ROUNDS = 3
MAX_BLOB_BYTES = 64 * 1024
NAMES = [f"hospital-{c}" for c in "abcdefghijklmnopq"]


def runtime(sim: Simulation, name: str) -> MemberRuntime:
    return next(m for m in sim.members if m.identity.name == name)


def replace_trainer(sim: Simulation, name: str, cls: type[Trainer], **kwargs: Any) -> Trainer:
    """Give member ``name`` a hostile trainer built from its honest one (same key, data, ledger, store)."""
    member = runtime(sim, name)
    for index, actor in enumerate(member.actors):
        if type(actor) is Trainer:
            hostile = cls(
                actor.identity,
                actor.ledger,
                actor.store,
                actor.sealer,
                actor.timer,
                data=actor.data,
                device=actor.device,
                **kwargs,
            )
            member.actors[index] = hostile
            return hostile
    raise AssertionError(f"{name} has no trainer")


def replace_aggregator(sim: Simulation, name: str, cls: type[Aggregator]) -> Aggregator:
    member = runtime(sim, name)
    for index, actor in enumerate(member.actors):
        if type(actor) is Aggregator:
            hostile = cls(actor.identity, actor.ledger, actor.store, actor.sealer, actor.timer)
            member.actors[index] = hostile
            return hostile
    raise AssertionError(f"{name} has no aggregator")


@dataclass
class Attacked:
    out: Path
    summary: dict[str, Any]
    report: AuditReport
    hostile: dict[str, Any]
    intruder: adv.Intruder
    marker: Path
    events: list[Any]
    addresses: dict[str, str]

    def excluded(self, member: str, round_: int) -> int | None:
        """The exclusion code the finalising committee recorded on chain for ``member`` in ``round_``."""
        record = self.summary["rounds"][round_ - 1]
        codes = [e["code"] for e in record["excluded"] if e["member"] == member]
        return codes[0] if codes else None

    def included(self, member: str, round_: int) -> bool:
        return member in self.summary["rounds"][round_ - 1]["included"]

    def committed(self, member: str, round_: int) -> bytes | None:
        address = self.addresses[member].lower()
        for event in self.events:
            if (
                event.name == "UpdateSubmitted"
                and int(event.args["round"]) == round_
                and str(event.args["member"]).lower() == address
            ):
                return bytes(event.args["blobHash"])
        return None

    def misbehaviour(self, member: str, kind: str) -> list[tuple[int, str]]:
        return [(m.round, m.detail) for m in self.report.misbehaviour if m.member == member and m.kind == kind]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Attacked:
    raw = demo_config(rounds=ROUNDS, members=len(NAMES)).model_dump(mode="json")
    raw["aggregation"]["max_blob_bytes"] = MAX_BLOB_BYTES
    config = parse_config(raw, "attack run")
    base = tmp_path_factory.mktemp("attacks")
    out = base / "run"
    marker = base / "unpickled-by-a-peer"
    sim = Simulation.create(config, out)
    try:
        names = {m.identity.name: m.identity for m in sim.members}
        assert isinstance(sim.ledger, Ledger)
        hostile: dict[str, Any] = {
            "hospital-e": replace_trainer(sim, "hospital-e", adv.NonFiniteTrainer, value=float("nan")),
            "hospital-f": replace_trainer(sim, "hospital-f", adv.NonFiniteTrainer, value=float("inf")),
            "hospital-g": replace_trainer(sim, "hospital-g", adv.WrongNamesTrainer),
            "hospital-h": replace_trainer(sim, "hospital-h", adv.WrongShapeTrainer),
            "hospital-i": replace_trainer(sim, "hospital-i", adv.WrongDtypeTrainer),
            "hospital-j": replace_trainer(sim, "hospital-j", adv.PickleTrainer, marker=marker),
            "hospital-k": replace_trainer(sim, "hospital-k", adv.GarbageTrainer),
            "hospital-l": replace_trainer(sim, "hospital-l", adv.OversizedTrainer, pad_bytes=2 * MAX_BLOB_BYTES),
            "hospital-m": replace_trainer(sim, "hospital-m", adv.WithholdingTrainer),
            "hospital-n": replace_trainer(sim, "hospital-n", adv.ReplayTrainer),
            "hospital-o": replace_trainer(
                sim, "hospital-o", adv.ImpersonatingTrainer, victim=names["hospital-b"].address
            ),
            "hospital-p": replace_trainer(sim, "hospital-p", adv.StoreSwapTrainer),
            "hospital-q": replace_trainer(sim, "hospital-q", adv.DoubleSubmitTrainer),
            "hospital-a/aggregator": replace_aggregator(sim, "hospital-a", adv.DishonestAggregator),
        }
        hostile["hospital-d"] = next(a for a in runtime(sim, "hospital-d").actors if isinstance(a, Trainer))
        # Governance removes hospital-d as round 2 opens (run right after hospital-c's deciding vote).
        runtime(sim, "hospital-c").actors.append(
            adv.MemberRemoval(
                sim.ledger,
                sim.store,
                sim.sealer,
                admins=(names["hospital-a"], names["hospital-b"]),
                target=names["hospital-d"].address,
                at_round=2,
            )
        )
        intruder = adv.Intruder(sim.ledger, sim.store, sim.sealer, sponsor=names["hospital-c"])
        runtime(sim, "hospital-a").actors.append(intruder)
        addresses = {name: identity.address for name, identity in names.items()}
        addresses["intruder"] = intruder.identity.address
        summary = sim.run()
        events = sim.ledger.events()
    finally:
        sim.close()
    report = audit_run(out)
    return Attacked(out, summary, report, hostile, intruder, marker, events, addresses)


# --------------------------------------------------------------------------- the run goes on


def test_training_goes_on_and_the_audit_passes(attacked: Attacked) -> None:
    assert [r["round"] for r in attacked.summary["rounds"]] == [1, 2, 3]
    assert attacked.report.ok, [v.line() for v in attacked.report.violations]
    assert attacked.report.rounds_checked == ROUNDS
    for round_ in range(1, ROUNDS + 1):
        for honest in ("hospital-a", "hospital-b", "hospital-c"):
            assert attacked.included(honest, round_), (honest, round_)
    assert attacked.summary["final"]["test_accuracy"] > 0.8


# --------------------------------------------------------------------------- validation of the update


@pytest.mark.parametrize(
    ("member", "reason", "protection"),
    [
        ("hospital-e", ExclusionReason.NON_FINITE, "NaN values"),
        ("hospital-f", ExclusionReason.NON_FINITE, "Inf values"),
        ("hospital-g", ExclusionReason.WRONG_NAMES, "tensor names must match the model"),
        ("hospital-h", ExclusionReason.WRONG_SHAPE, "tensor shapes must match the model"),
        ("hospital-i", ExclusionReason.WRONG_DTYPE, "tensor dtypes must match the model"),
        ("hospital-j", ExclusionReason.MALFORMED, "only safetensors is decoded (a pickle is not)"),
        ("hospital-k", ExclusionReason.MALFORMED, "random bytes are not an update"),
        ("hospital-l", ExclusionReason.OVERSIZED, "blob size limit, checked before decryption"),
        ("hospital-m", ExclusionReason.BLOB_MISSING, "a withheld blob"),
        ("hospital-p", ExclusionReason.BLOB_CORRUPT, "the store's bytes must hash to the commitment"),
    ],
)
def test_bad_update_is_excluded_with_its_reason_every_round(
    attacked: Attacked, member: str, reason: ExclusionReason, protection: str
) -> None:
    for round_ in range(1, ROUNDS + 1):
        assert attacked.committed(member, round_) is not None, f"{member} committed nothing in {round_}"
        assert attacked.excluded(member, round_) == int(reason), (protection, round_, attacked.summary)
        assert not attacked.included(member, round_)
    recorded = attacked.misbehaviour(member, "excluded update")
    assert [r for r, _ in recorded] == list(range(1, ROUNDS + 1)), recorded
    assert all(detail.startswith(reason.name.lower()) for _, detail in recorded), recorded


def test_pickle_payload_is_never_unpickled(attacked: Attacked) -> None:
    assert not attacked.marker.exists(), "somebody ran pickle on a peer's bytes"


def test_withheld_blob_is_really_absent_yet_committed(attacked: Attacked) -> None:
    opened = open_run(attacked.out)
    try:
        for round_ in range(1, ROUNDS + 1):
            committed = attacked.committed("hospital-m", round_)
            assert committed is not None and not opened.store.has(committed)
    finally:
        opened.close()


def test_oversized_update_would_otherwise_be_valid(attacked: Attacked) -> None:
    """The padded update is well-formed: only the size limit keeps it out."""
    from fedledger.codec import decode_metadata

    trainer = attacked.hostile["hospital-l"]
    payload = trainer.encode_update({"w": __import__("numpy").zeros(2, dtype="float32")})
    assert len(payload) > MAX_BLOB_BYTES and "padding" in decode_metadata(payload)


# --------------------------------------------------------------------------- the AEAD context


def test_replay_of_an_old_blob_into_a_new_round_does_not_decrypt(attacked: Attacked) -> None:
    assert attacked.included("hospital-n", 1)
    for round_ in (2, 3):
        replayed = attacked.committed("hospital-n", round_)
        assert replayed == attacked.committed("hospital-n", round_ - 1)
        assert attacked.excluded("hospital-n", round_) == int(ExclusionReason.DECRYPT_FAILED)
    assert [r for r, _ in attacked.misbehaviour("hospital-n", "excluded update")] == [2, 3]


def test_another_members_blob_under_ones_own_name_does_not_decrypt(attacked: Attacked) -> None:
    for round_ in range(1, ROUNDS + 1):
        stolen = attacked.committed("hospital-o", round_)
        assert stolen is not None and stolen == attacked.committed("hospital-b", round_)
        assert attacked.included("hospital-b", round_)
        assert attacked.excluded("hospital-o", round_) == int(ExclusionReason.DECRYPT_FAILED)


# --------------------------------------------------------------------------- the contracts


def test_second_different_submission_in_a_round_reverts(attacked: Attacked) -> None:
    trainer = attacked.hostile["hospital-q"]
    assert trainer.second_refused == {r: "already submitted" for r in range(1, ROUNDS + 1)}
    for round_ in range(1, ROUNDS + 1):
        assert attacked.included("hospital-q", round_)  # the first submission stands, alone
    submitted = [
        e
        for e in attacked.events
        if e.name == "UpdateSubmitted" and str(e.args["member"]) == attacked.addresses["hospital-q"]
    ]
    assert len(submitted) == ROUNDS


def test_non_member_sender_reverts(attacked: Attacked) -> None:
    assert attacked.intruder.refused == {r: "not a member" for r in range(1, ROUNDS + 1)}
    assert all(
        str(e.args.get("member", "")).lower() != attacked.addresses["intruder"].lower() for e in attacked.events
    )
    rejected = attacked.misbehaviour(attacked.addresses["intruder"], "rejected transaction")
    assert [r for r, _ in rejected] == list(range(1, ROUNDS + 1)), attacked.report.misbehaviour
    assert all("submitUpdate" in detail and "not a member" in detail for _, detail in rejected)


def test_removed_member_sender_reverts(attacked: Attacked) -> None:
    trainer = attacked.hostile["hospital-d"]
    assert attacked.included("hospital-d", 1)
    assert trainer.refused == {(1, 2): "not a member", (1, 3): "not a member"}
    for round_ in (2, 3):
        assert attacked.committed("hospital-d", round_) is None
        assert attacked.excluded("hospital-d", round_) == int(ExclusionReason.NOT_SUBMITTED)
    rejected = attacked.misbehaviour("hospital-d", "rejected transaction")
    assert [r for r, _ in rejected] == [2, 3]


# --------------------------------------------------------------------------- the committee


def test_dishonest_aggregator_is_outvoted_and_on_record(attacked: Attacked) -> None:
    dishonest = attacked.addresses["hospital-a"].lower()
    for round_ in range(1, ROUNDS + 1):
        record = attacked.summary["rounds"][round_ - 1]
        proposals = {p["aggregator"]: p for p in record["committee_proposals"]}
        assert not proposals["hospital-a"]["agreed"]
        assert proposals["hospital-a"]["model_hash"] != record["model_hash"]
        assert proposals["hospital-b"]["agreed"] and proposals["hospital-c"]["agreed"]
        assert proposals["hospital-b"]["model_hash"] == record["model_hash"]
        on_chain = [
            e
            for e in attacked.events
            if e.name == "AggregateProposed"
            and int(e.args["round"]) == round_
            and str(e.args["aggregator"]).lower() == dishonest
        ]
        assert len(on_chain) == 1
    outvoted = attacked.misbehaviour("hospital-a", "outvoted proposal")
    assert [r for r, _ in outvoted] == list(range(1, ROUNDS + 1))


# --------------------------------------------------------------------------- the record


def test_fedledger_audit_lists_the_misbehaviour(attacked: Attacked) -> None:
    result = CliRunner().invoke(app, ["audit", str(attacked.out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # Rich wraps long lines at spaces; undo that
    assert "audit passed" in text
    for member, reason in [
        ("hospital-e", "non_finite"),
        ("hospital-j", "malformed"),
        ("hospital-m", "blob_missing"),
        ("hospital-p", "blob_corrupt"),
        ("hospital-o", "decrypt_failed"),
        ("hospital-l", "oversized"),
    ]:
        assert f"round 2, member {member}: excluded update ({reason}" in text, (member, text)
    assert "round 1, member hospital-a: outvoted proposal" in text
    assert (
        "round 2, member hospital-d: rejected transaction (TrainingTask.submitUpdate reverted: not a member"
        in text
    )
    assert "member hospital-q: rejected transaction (TrainingTask.submitUpdate reverted: already submitted" in text


def test_audit_json_carries_member_round_and_reason(attacked: Attacked) -> None:
    as_json = attacked.report.to_json()["misbehaviour"]
    kinds = {(m["member"], m["round"], m["kind"]) for m in as_json}
    assert ("hospital-h", 1, "excluded update") in kinds
    assert ("hospital-a", 3, "outvoted proposal") in kinds
    assert all(m["detail"] for m in as_json)


# --------------------------------------------------------------------------- model poisoning


def _poisoned_run(attack: str | None, rule: str) -> float:
    """Digits (64 features, 10 classes), 10 members of which the last 3 attack, 4 rounds, security off."""
    raw = demo_config(rounds=4, members=10).model_dump(mode="json")
    raw["security"] = {"enabled": False}
    raw["data"]["dataset"] = "digits"
    raw["model"]["kwargs"] = {"in_features": 64, "hidden": [32], "num_classes": 10}
    raw["aggregation"] = {"rule": rule, "trim_ratio": 0.3, "byzantine": 3}
    for member in raw["members"][7:]:
        member["attack"] = attack
    sim = Simulation.create(parse_config(raw, "poisoning"), None)
    accuracy = sim.run()["final"]["test_accuracy"]
    assert isinstance(accuracy, float)
    return accuracy


def test_poisoning_attacks_are_configured_per_member() -> None:
    raw = demo_config(rounds=1, members=10).model_dump(mode="json")
    raw["security"] = {"enabled": False}
    for member, attack in zip(raw["members"][5:], adv.POISONING_ATTACKS, strict=True):
        member["attack"] = attack
    raw["members"][9]["attack"] = "alie"
    sim = Simulation.create(parse_config(raw, "poisoning"), None)
    trainers = {m.identity.name: a for m in sim.members for a in m.actors if isinstance(a, Trainer)}
    kinds = [type(trainers[f"hospital-{c}"]).__name__ for c in "abcdefghij"]
    assert kinds == ["Trainer"] * 5 + [
        "SignFlipTrainer",
        "ScaleTrainer",
        "NoiseTrainer",
        "LabelFlipTrainer",
        "AlieTrainer",
    ]
    flipped = trainers["hospital-i"]
    assert flipped.data.num_classes == 2
    from fedledger.sim.simulation import split_data

    original = split_data(sim.config)[0]["hospital-i"]
    assert (flipped.data.labels == 1 - original.labels).all()
    with pytest.raises(Exception, match="attack needs the 'trainer' role"):
        bad = demo_config(rounds=1, members=4).model_dump(mode="json")
        bad["members"][3]["roles"] = ["validator"]
        bad["members"][3]["attack"] = "scale"
        parse_config(bad, "bad")


def test_robust_rule_withstands_30_percent_scaling_attackers() -> None:
    clean = _poisoned_run(None, "fedavg")
    under_fedavg = _poisoned_run("scale", "fedavg")
    under_krum = _poisoned_run("scale", "multi_krum")
    assert under_fedavg < clean - 0.3, (clean, under_fedavg)  # FedAvg follows the x10 updates
    assert under_krum >= clean - 0.02, (clean, under_krum)  # Multi-Krum leaves them out


def test_poisoning_benchmark_builds_its_grid_and_table() -> None:
    """bench/bench_poisoning.py on a tiny grid (breast cancer, 1 round), so the script cannot rot."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_poisoning

    from fedledger.sim import simulation

    split_data = simulation.split_data
    base = demo_config(rounds=1, members=10).model_dump(mode="json")
    base["security"] = {"enabled": False}
    rules = ["fedavg", "multi_krum"]
    grid = bench_poisoning.run_grid(base, attacks=["scale"], fractions=[0.3], rules=rules, subsample=0.5)
    assert simulation.split_data is split_data  # the subsampling is undone after each run
    run = grid["runs"]["scale/0.3/multi_krum"]
    assert run["attackers"] == ["hospital-h", "hospital-i", "hospital-j"]
    assert run["train_samples_per_round"] < sum(len(s) for s in split_data(parse_config(base, "x"))[0].values())
    assert [row["attack"] for row in grid["table"]] == ["none", "scale"]
    table = bench_poisoning.markdown(grid["table"], rules)
    assert "| none (clean) | 0% |" in table and "| scale | 30% |" in table


def test_alie_colluders_share_one_crafted_update() -> None:
    collusion = adv.AlieCollusion()
    collusion.members = [object(), object(), object()]  # type: ignore[list-item]
    assert collusion.z_score(10) == pytest.approx(0.5244, abs=1e-3)  # s = 3, Phi^-1(0.7)
    collusion.members = [object()]  # type: ignore[list-item]
    assert collusion.z_score(10) == pytest.approx(0.0, abs=1e-9)
