"""Where local training runs: inline, or prefetched on a thread pool by the simulation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from fedledger.learning import SmallCNN
from fedledger.protocol.training import InlineTraining, ParallelTraining, draws_random_numbers
from fedledger.sim.config import parse_config
from fedledger.sim.simulation import Simulation
from fedledger.sim.templates import demo_config


def test_prefetched_job_runs_on_a_worker_and_is_collected_once() -> None:
    before = torch.get_num_threads()
    engine = ParallelTraining(workers=2)
    try:
        with engine.running():
            assert torch.get_num_threads() == 1  # one torch thread per concurrent job
        assert torch.get_num_threads() == before
        engine.prefetch(("t", 1), lambda: threading.current_thread().name)
        assert engine.started(("t", 1))
        inline_calls: list[int] = []

        def fallback() -> str:
            inline_calls.append(1)
            return "inline"

        assert engine.run(("t", 1), fallback).startswith("fedledger-train")
        assert inline_calls == [] and not engine.started(("t", 1))
        # collected once: the same key again runs the fallback on the caller's thread
        assert engine.run(("t", 1), fallback) == "inline" and inline_calls == [1]
    finally:
        engine.close()
    assert torch.get_num_threads() == before


def test_forget_drops_jobs_of_ended_rounds() -> None:
    engine = ParallelTraining(workers=1)
    try:
        gate = threading.Event()
        engine.prefetch((7, 1, 0), gate.wait)  # occupies the only worker
        engine.prefetch((7, 1, 1), lambda: "round 1")
        engine.prefetch((7, 2, 1), lambda: "round 2")
        engine.forget(lambda key: isinstance(key, tuple) and key[:2] >= (7, 2))
        assert not engine.started((7, 1, 1)) and engine.started((7, 2, 1))
        gate.set()
        assert engine.run((7, 2, 1), lambda: "inline") == "round 2"
        assert engine.run((7, 1, 1), lambda: "inline") == "inline"
    finally:
        engine.close()


def test_inline_engine_runs_the_job_when_asked() -> None:
    engine = InlineTraining()
    engine.prefetch("k", lambda: pytest.fail("inline engine must not start jobs ahead"))
    assert not engine.started("k")
    assert engine.run("k", lambda: threading.current_thread().name) == threading.current_thread().name


def test_models_with_dropout_are_not_trained_concurrently() -> None:
    assert not draws_random_numbers(SmallCNN())
    assert draws_random_numbers(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1)))


def test_a_simulation_restores_torch_threads_even_unclosed() -> None:
    before = torch.get_num_threads()
    sim = Simulation.create(
        parse_config(demo_config(rounds=1).model_dump(mode="json") | {"security": {"enabled": False}}, "t"), None
    )
    sim.run()  # not closed on purpose: the process must not be left single-threaded
    assert torch.get_num_threads() == before


def _run(workers: int, tmp: Path | None) -> tuple[dict[str, object], int]:
    raw = demo_config(rounds=2).model_dump(mode="json") | {"train_workers": workers}
    if tmp is None:
        raw["security"] = {"enabled": False}
    sim = Simulation.create(parse_config(raw, "test"), tmp)
    prefetched = 0
    if isinstance(sim.training, ParallelTraining):
        original = sim.training.prefetch

        def counting(key: object, job: object) -> None:
            nonlocal prefetched
            prefetched += 1
            original(key, job)  # type: ignore[arg-type]

        sim.training.prefetch = counting  # type: ignore[method-assign]
    try:
        return sim.run(), prefetched
    finally:
        sim.close()


def test_parallel_training_is_reproducible_and_matches_in_turn(tmp_path: Path) -> None:
    parallel, prefetched = _run(2, tmp_path / "run")
    again, _ = _run(2, None)
    in_turn, none = _run(1, None)
    curve = [r["test_accuracy"] for r in parallel["rounds"]]  # type: ignore[attr-defined]
    assert curve == [r["test_accuracy"] for r in again["rounds"]]  # type: ignore[attr-defined]
    # every trainer's job of every round was started ahead on the pool (4 trainers, 2 rounds)
    assert prefetched == 4 * 2 and none == 0
    for a, b in zip(curve, [r["test_accuracy"] for r in in_turn["rounds"]], strict=True):  # type: ignore[attr-defined]
        assert abs(a - b) <= 0.02  # one torch thread against the default: rounding only
