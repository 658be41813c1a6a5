"""Crash and resume: SIGKILL at random moments, then ``fedledger resume`` finishes the very same run.

The actors derive everything from the chain (one submission, one proposal, one metric per round), the
chain commits each block in one sqlite transaction, every file is written atomically, and training is
seeded per (task seed, participant, round). So however often a run is killed, resuming it must give an
audit that passes and the final model of an uninterrupted run with the same seed, bit for bit.
A store that cannot write must stop the run with one clear line, before any hash reaches the chain.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedledger.audit.verify import audit_run, open_run
from fedledger.cli.main import app
from fedledger.codec import decode_tensors, encode_tensors
from fedledger.errors import StoreError
from fedledger.ledger.types import Phase
from fedledger.sim.simulation import Simulation
from fedledger.sim.templates import demo_config

ROUNDS = 2
SEED = 20240611
KILLS = 10  # SIGKILLs that land while a process is running
KILLS_PER_TRIAL = 5  # a run and up to four of its resumes are killed; the next resume finishes it
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("FEDLEDGER_PASSWORD", None)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedledger.cli.main", *args]


def run_to_end(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=ENV, capture_output=True, text=True, timeout=timeout, check=False)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )


def blob_count(out: Path) -> int:
    blobs = out / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(1 for p in blobs.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))


def kill_at_random_moment(process: subprocess.Popen[str], out: Path, rng: random.Random) -> bool:
    """SIGKILL ``process`` at a seeded random moment; False if it finished first.

    Mostly the moment is "after the store has gained 1 to 8 more blobs, plus 0-250 ms", which spreads
    kills over every step of the rounds (between a blob and its transaction, between proposals, ...);
    one kill in five is instead 0.3-3 s after start, which lands in start-up or set-up.
    """
    if rng.random() < 0.2:
        target = None
        delay = rng.uniform(0.3, 3.0)
    else:
        target = blob_count(out) + rng.randint(1, 8)
        delay = rng.uniform(0.0, 0.25)
    deadline = time.monotonic() + 300
    while target is not None and blob_count(out) < target:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return True


def model_digest(run: Path) -> str:
    """SHA-256 of the final model's tensors (the file's metadata names this run's contract, so differs)."""
    tensors = decode_tensors((run / "model.safetensors").read_bytes())
    return hashlib.sha256(encode_tensors(tensors)).hexdigest()


def setup_completed(run: Path) -> bool:
    return (run / "deployment.json").is_file()


def assert_no_commitment_without_blob(run: Path) -> None:
    opened = open_run(run)
    try:
        for event in opened.ledger.events():
            if event.name in ("UpdateSubmitted", "AggregateProposed"):
                blob = bytes(event.args["blobHash" if event.name == "UpdateSubmitted" else "modelHash"])
                assert opened.store.has(blob), f"{event.name} in block {event.block_number}: blob not stored"
    finally:
        opened.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float]:
    """An uninterrupted run: its final tensors' digest and how long the whole command took."""
    out = tmp_path_factory.mktemp("reference") / "run"
    started = time.monotonic()
    done = run_to_end("demo", "--out", str(out), "--rounds", str(ROUNDS), "--quiet")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert audit_run(out).ok
    return model_digest(out), elapsed


def test_kill_during_setup_gives_a_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = start("demo", "--out", str(out), "--rounds", str(ROUNDS), "--quiet")
    deadline = time.monotonic() + 120
    while not (out / "chain").is_dir():
        assert process.poll() is None, "the demo exited before its chain existed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not setup_completed(out), "set-up finished before the kill; the test must catch it earlier"
    resumed = run_to_end("resume", str(out), "--quiet")
    assert resumed.returncode == 2, resumed.stderr
    message = " ".join(resumed.stderr.split())
    assert "setup did not complete" in message and f"remove {out} and start again" in message, message
    assert "Traceback" not in resumed.stderr


def test_sigkill_at_random_moments_then_resume_gives_the_same_model(
    reference: tuple[str, float], tmp_path: Path
) -> None:
    """At least KILLS SIGKILLs at seeded random moments, spread over a few runs that each get killed and
    resumed repeatedly until a resume finishes; every run then audits clean and ends with the reference's
    final model."""
    expected = reference[0]
    rng = random.Random(SEED)
    kills = 0
    trials = 0
    landed: list[str] = []  # where each kill hit, for the failure message and the coverage check
    while kills < KILLS:
        assert trials < 3 * KILLS // KILLS_PER_TRIAL, f"only {kills} kills landed in {trials} runs"
        out = tmp_path / f"trial-{trials}"
        trials += 1
        fresh: tuple[str, ...] = ("demo", "--out", str(out), "--rounds", str(ROUNDS), "--quiet")
        command = fresh
        for _ in range(KILLS_PER_TRIAL):
            if not kill_at_random_moment(start(*command), out, rng):
                break  # it finished before the kill: the run is complete
            kills += 1
            landed.append(where(out))
            if not out.exists():
                continue  # killed before it created anything: start again
            if not setup_completed(out):
                # Killed during set-up: resume says so, and the run starts again from nothing.
                refused = run_to_end("resume", str(out), "--quiet")
                assert refused.returncode == 2 and "setup did not complete" in refused.stderr, refused.stderr
                shutil.rmtree(out)
                command = fresh
                continue
            assert_no_commitment_without_blob(out)
            command = ("resume", str(out), "--quiet")
        if not (out / "summary.json").is_file():
            finished = run_to_end(*command)
            assert finished.returncode == 0, finished.stderr
            assert "Traceback" not in finished.stderr
        report = audit_run(out)
        assert report.ok, [v.line() for v in report.violations]
        assert report.rounds_checked == ROUNDS
        assert not [m for m in report.misbehaviour if m.kind != "rejected transaction"], report.misbehaviour
        assert model_digest(out) == expected, f"{out.name}: resumed model differs from the reference"
        assert_no_commitment_without_blob(out)
    print("kills landed:", landed)
    assert sum(w.startswith("round") for w in landed) >= KILLS // 3, landed  # most hit the rounds


def where(out: Path) -> str:
    """Where a killed run stood: nothing yet, in set-up, in a round (and phase), or finishing."""
    if not out.exists():
        return "before set-up"
    if not setup_completed(out):
        return "set-up"
    opened = open_run(out)
    try:
        state = opened.ledger.task_state(opened.session.task_id)
    finally:
        opened.close()
    if state.phase == Phase.DONE:
        return "outputs" if not (out / "summary.json").exists() else "done"
    return f"round {state.round} {state.phase.name.lower()} ({state.num_submitted} submitted)"


def test_resuming_a_finished_run_changes_nothing(reference: tuple[str, float], tmp_path: Path) -> None:
    out = tmp_path / "run"
    sim = Simulation.create(demo_config(rounds=ROUNDS), out)
    try:
        sim.run()
    finally:
        sim.close()
    before = (out / "model.safetensors").read_bytes()
    blocks_before = audit_run(out).events_read
    again = Simulation.resume(out)
    try:
        again.run()
    finally:
        again.close()
    assert (out / "model.safetensors").read_bytes() == before
    assert audit_run(out).events_read == blocks_before
    assert model_digest(out) == reference[0]


# --------------------------------------------------------------------------- the store fails to write


def _events(run: Path, name: str) -> list[Any]:
    opened = open_run(run)
    try:
        return [e for e in opened.ledger.events() if e.name == name]
    finally:
        opened.close()


def _leftover_temporaries(run: Path) -> list[Path]:
    return [p for p in (run / "blobs").rglob("*") if p.name.endswith(".tmp")]


def test_disk_full_stops_the_trainer_before_it_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    sim = Simulation.create(demo_config(rounds=ROUNDS), out)
    real_replace = os.replace

    def disk_full(src: Any, dst: Any) -> None:
        if str(dst).startswith(str(out / "blobs")):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("fedledger.store.local.os.replace", disk_full)
    try:
        with pytest.raises(StoreError) as failure:
            sim.run()
    finally:
        sim.close()
    message = str(failure.value)
    assert message.startswith("cannot write blob 0x") and message.endswith("No space left on device")
    assert str(out / "blobs") in message
    assert _events(out, "UpdateSubmitted") == []  # nothing committed without its blob
    assert _leftover_temporaries(out) == []
    monkeypatch.undo()
    resumed = Simulation.resume(out)
    try:
        resumed.run()
    finally:
        resumed.close()
    assert audit_run(out).ok


def test_store_failure_before_a_proposal_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    sim = Simulation.create(demo_config(rounds=ROUNDS), out)
    try:
        while sim.ledger.task_state(sim.task_id).phase != Phase.AGGREGATING:
            assert sim._sweep()
        submitted = _count_events(sim, "UpdateSubmitted")
        real_replace = os.replace

        def denied(src: Any, dst: Any) -> None:
            if str(dst).startswith(str(out / "blobs")):
                raise PermissionError(errno.EACCES, "Permission denied")
            real_replace(src, dst)

        monkeypatch.setattr("fedledger.store.local.os.replace", denied)
        with pytest.raises(StoreError, match="Permission denied"):
            sim._sweep()
        assert _count_events(sim, "AggregateProposed") == 0
        assert _count_events(sim, "UpdateSubmitted") == submitted
    finally:
        sim.close()
    assert _leftover_temporaries(out) == []
    # The CLI reports the same failure as one line with exit code 1, no traceback.
    result = CliRunner().invoke(app, ["resume", str(out), "--quiet"])
    output = " ".join((result.output + (result.stderr if result.stderr_bytes is not None else "")).split())
    assert result.exit_code == 1, output
    assert "error: cannot write blob 0x" in output and "Permission denied" in output, output
    assert "Traceback" not in output
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["resume", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert audit_run(out).ok


def _count_events(sim: Simulation, name: str) -> int:
    return sum(1 for e in sim.ledger.events() if e.name == name)
