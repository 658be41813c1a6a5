"""End to end on the real parts: embedded chain, contracts, encrypted local store, PyTorch training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fedledger.audit.provenance import model_provenance
from fedledger.audit.verify import audit_run
from fedledger.crypto import from_hex
from fedledger.errors import UsageError, VerificationError
from fedledger.ledger.chain import EmbeddedChain
from fedledger.sim.simulation import Simulation
from fedledger.sim.templates import demo_config


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("runs") / "demo"
    sim = Simulation.create(demo_config(rounds=3), out)
    try:
        summary = sim.run()
    finally:
        sim.close()
    return out, summary


def copy_run(demo_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(demo_run[0], target)
    return target


def blob_path(run: Path, blob_hex: str) -> Path:
    digest = blob_hex.removeprefix("0x")
    matches = [
        p for p in (run / "blobs").rglob("*") if p.is_file() and digest in p.as_posix().replace("/", "")
    ]
    assert matches, f"blob {blob_hex} not found under {run / 'blobs'}"
    return matches[0]


def update_blobs(summary: dict[str, Any], run: Path) -> list[tuple[int, str, str]]:
    """(round, member, blob hex) of every committed update, read from the chain's events."""
    from fedledger.audit.verify import open_run

    opened = open_run(run)
    try:
        found = []
        for event in opened.ledger.events():
            if event.name == "UpdateSubmitted":
                found.append(
                    (
                        int(event.args["round"]),
                        opened.name(str(event.args["member"])),
                        "0x" + bytes(event.args["blobHash"]).hex(),
                    )
                )
        return found
    finally:
        opened.close()


def test_demo_run_records_every_round(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo_run
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    for record in summary["rounds"]:
        assert sorted(record["included"]) == ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
        assert record["excluded"] == []
        assert record["model_hash"].startswith("0x") and len(record["model_hash"]) == 66
        assert set(record["seconds"]) >= {"train", "crypto", "ledger", "store", "aggregate"}
        assert record["test_accuracy"] is not None and 0.0 <= record["test_accuracy"] <= 1.0
    assert summary["rounds"][-1]["test_accuracy"] > 0.85
    assert summary["totals"]["transactions"] > 3 * 4
    assert summary["totals"]["gas_used"] > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["final"]["model_hash"] == summary["rounds"][-1]["model_hash"]
    deployment = json.loads((out / "deployment.json").read_text())
    assert {m["name"] for m in deployment["members"]} == {
        "hospital-a",
        "hospital-b",
        "hospital-c",
        "hospital-d",
    }
    assert (out / deployment["abi"]["TrainingTask"]).is_file()


def test_chain_survives_reopening(demo_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run = copy_run(demo_run, tmp_path)
    chain = EmbeddedChain.open(run / "chain")
    try:
        assert int(chain.rpc("eth_blockNumber", []), 16) == demo_run[1]["totals"]["blocks"]
    finally:
        chain.close()


def test_audit_passes_on_an_untouched_run(demo_run: tuple[Path, dict[str, Any]]) -> None:
    report = audit_run(demo_run[0])
    assert report.ok, [v.line() for v in report.violations]
    assert report.rounds_checked == 3
    assert report.blobs_checked >= 3 * 4 + 3


def test_flipped_byte_in_an_update_blob_fails_audit(
    demo_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run = copy_run(demo_run, tmp_path)
    round_, member, blob = update_blobs(demo_run[1], run)[5]
    path = blob_path(run, blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = audit_run(run)
    assert not report.ok
    lines = [v.line() for v in report.violations]
    assert any(f"round {round_}" in line and member in line and blob in line for line in lines), lines


def test_deleted_model_blob_fails_audit(demo_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run = copy_run(demo_run, tmp_path)
    model_hash = demo_run[1]["rounds"][1]["model_hash"]
    blob_path(run, model_hash).unlink()
    report = audit_run(run)
    assert not report.ok
    assert any(v.blob == model_hash and "missing" in v.message for v in report.violations)


def test_replaced_model_file_fails_audit(demo_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    run = copy_run(demo_run, tmp_path)
    # an earlier round's model is a real model of the run, but not the final one
    from fedledger.audit.verify import open_run, session_plaintext

    opened = open_run(run)
    try:
        earlier = session_plaintext(
            opened.session, opened.store, from_hex(demo_run[1]["rounds"][0]["model_hash"]), 1
        )
    finally:
        opened.close()
    (run / "model.safetensors").write_bytes(earlier)
    report = audit_run(run)
    assert not report.ok
    assert any("model.safetensors" in v.message for v in report.violations)


def test_provenance_names_round_and_contributors(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = demo_run
    result = model_provenance(out / "model.safetensors", out)
    assert result["round"] == 3 and result["final"]
    assert result["model_blob"] == summary["rounds"][-1]["model_hash"]
    assert sorted(c["member"] for c in result["contributors"]) == [
        "hospital-a",
        "hospital-b",
        "hospital-c",
        "hospital-d",
    ]
    for contributor in result["contributors"]:
        assert contributor["dataset_samples"] >= contributor["num_samples"] > 0
        assert contributor["submit_tx"].startswith("0x")
        assert sum(contributor["label_histogram"]) == contributor["dataset_samples"]


def test_provenance_rejects_a_foreign_model(demo_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    import numpy as np

    from fedledger.codec import encode_tensors

    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(encode_tensors({"w": np.zeros(3, dtype=np.float32)}))
    with pytest.raises(VerificationError, match="matches no finalised model"):
        model_provenance(foreign, demo_run[0])


def test_security_off_trains_the_identical_model(demo_run: tuple[Path, dict[str, Any]]) -> None:
    from fedledger.sim.config import parse_config

    config = parse_config(
        demo_config(rounds=3).model_dump(mode="json") | {"security": {"enabled": False}}, "test"
    )
    sim = Simulation.create(config, None)
    summary = sim.run()
    secured = demo_run[1]
    assert [r["test_accuracy"] for r in summary["rounds"]] == [r["test_accuracy"] for r in secured["rounds"]]


def test_dropout_round_finalises_after_the_deadline(tmp_path: Path) -> None:
    from fedledger.sim.config import parse_config

    raw = demo_config(rounds=2).model_dump(mode="json")
    raw["members"][3]["drop_out_rounds"] = [2]
    config = parse_config(raw, "test")
    sim = Simulation.create(config, tmp_path / "run")
    try:
        summary = sim.run()
    finally:
        sim.close()
    second = summary["rounds"][1]
    assert "hospital-d" not in second["included"]
    assert second["excluded"] == [{"member": "hospital-d", "reason": "not_submitted", "code": 1}]
    # the clock jumped to the deadline instead of the run waiting for it
    assert summary["totals"]["simulated_clock_advance_seconds"] >= config.protocol.round_duration - 60
    assert audit_run(tmp_path / "run").ok


def test_existing_run_directory_is_never_overwritten(demo_run: tuple[Path, dict[str, Any]]) -> None:
    with pytest.raises(UsageError, match="already exists"):
        Simulation.create(demo_config(rounds=1), demo_run[0])
