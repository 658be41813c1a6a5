"""A consortium of separate processes on a real Ethereum node: anvil, and fedledger's own served chain.

Each member is its own `fedledger node` process; admins act through the CLI; blobs go through the
signed-request blob server. foundry's `cast` reads the contract to cross-check `fedledger task status`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from web3 import Web3

from consortium import CAST, MEMBERS, Consortium, cli
from fedledger.ledger import Ledger
from fedledger.ledger.types import Deployment, Phase


def ledger_of(consortium: Consortium) -> Ledger:
    deployment = Deployment.from_json(consortium.deployment.read_text())
    return Ledger(Web3(Web3.HTTPProvider(consortium.rpc)), deployment)


def set_up(consortium: Consortium, *, rounds: int, round_duration: int) -> int:
    assert CAST.exists(), f"{CAST} missing: `make test` installs foundry's anvil and cast with npm"
    consortium.create_members()
    consortium.start_chain()
    consortium.deploy()
    consortium.start_store()
    return consortium.create_task(rounds=rounds, round_duration=round_duration)


def status(consortium: Consortium, task_id: int) -> dict[str, object]:
    common = ["--rpc", consortium.rpc, "--deployment", str(consortium.deployment)]
    return json.loads(cli("task", "status", str(task_id), "--json", *common))  # type: ignore[no-any-return]


@pytest.mark.parametrize("chain", ["anvil", "embedded"])
def test_four_member_processes_complete_a_task(chain: str, tmp_path: Path) -> None:
    consortium = Consortium(tmp_path / chain, chain)
    try:
        task_id = set_up(consortium, rounds=3, round_duration=120)
        for name in MEMBERS:
            consortium.start_member(name)
        consortium.wait_members(list(MEMBERS), timeout=240)

        result = status(consortium, task_id)
        assert result["phase"] == "done"
        assert result["finalised_rounds"] == 3
        final_hash = str(result["final_model_hash"])
        # foundry's cast reads the same facts straight from the contract
        assert consortium.cast_call("taskCount()(uint256)") == "1"
        assert consortium.cast_call("roundModel(uint256,uint256)(bytes32)", str(task_id), "3") == final_hash
        ledger = ledger_of(consortium)
        assert ledger.task_state(task_id).phase == Phase.DONE
        for round_ in (1, 2, 3):
            assert bin(ledger.round_included(task_id, round_)).count("1") == 4
        # every committed blob is in the server's directory, verified by hash
        blobs = {p.name for p in (consortium.root / "blobs").rglob("*") if p.is_file()}
        for round_ in (1, 2, 3):
            for submission in ledger.submissions(task_id, round_):
                assert any(submission.blob_hash.hex().endswith(name) for name in blobs)
    finally:
        consortium.stop_all()


def test_member_killed_mid_task_rejoins_and_blob_server_survives_kill(tmp_path: Path) -> None:
    consortium = Consortium(tmp_path / "faults", "anvil")
    try:
        task_id = set_up(consortium, rounds=3, round_duration=25)
        ledger = ledger_of(consortium)
        addresses = consortium.addresses()
        for name in ("hospital-a", "hospital-b", "hospital-c"):
            consortium.start_member(name)
        consortium.start_member("hospital-d")
        d_index = ledger.task(task_id).participants.index(addresses["hospital-d"])
        # kill -9 hospital-d right after its round-1 update is on chain: it is gone for round 2
        deadline = time.monotonic() + 90
        while ledger.submission(task_id, 1, addresses["hospital-d"]) is None:
            assert time.monotonic() < deadline, consortium.tail("hospital-d")
            time.sleep(0.05)
        consortium.kill("hospital-d")

        # round 2 still finalises: its deadline passes with min_updates (3) submitted
        deadline = time.monotonic() + 120
        while ledger.round_model(task_id, 2) is None:
            assert time.monotonic() < deadline, "round 2 never finalised without hospital-d"
            time.sleep(0.5)
        assert not (ledger.round_included(task_id, 2) >> d_index) & 1

        # kill -9 the blob server and bring it back on the same directory
        consortium.kill("store")
        time.sleep(1.0)
        consortium.start_store()

        # hospital-d restarts, catches up from the chain and takes part again
        consortium.start_member("hospital-d")
        consortium.wait_members(list(MEMBERS), timeout=240)
        assert (ledger.round_included(task_id, 3) >> d_index) & 1, consortium.tail("hospital-d")
        assert ledger.task_state(task_id).phase == Phase.DONE
        # it never submitted twice, and every round's blobs survived the store's crash
        submitted = [e for e in ledger.events() if e.name == "UpdateSubmitted"]
        keys = [(e.args["round"], e.args["member"]) for e in submitted]
        assert len(keys) == len(set(keys))
        blobs = {p.name for p in (consortium.root / "blobs").rglob("*") if p.is_file()}
        for event in submitted:
            assert any(bytes(event.args["blobHash"]).hex().endswith(name) for name in blobs)
    finally:
        consortium.stop_all()
