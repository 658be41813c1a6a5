"""Model poisoning: accuracy under five attacks by 10%, 20% and 30% of the members, for each aggregation rule.

Workload: the core benchmark's (bench_core.py): Fashion-MNIST, 10 members, Dirichlet(0.5) split, the small
CNN, 1 local epoch, SGD lr 0.05, batch 32, full 10,000-image test set. What this script reduces, so the
whole grid (5 attacks x 3 fractions x 4 rules + 4 clean runs = 64 runs) fits in about half an hour on
a 2-core machine:

* rounds: ``--rounds`` (default 10 instead of 20);
* training data: each member keeps a fixed random ``--subsample`` fraction (default 0.2) of its
  Dirichlet shard (seeded, the same records in every run), so a round trains on ~12,000 images, not 60,000.

Runs use the security-off engine: the same actors, rules, seeds and data, with the chain, encryption and
store switched off. It trains the bit-identical model (tests/test_simulation.py::
test_security_off_trains_the_identical_model), so security does not change these accuracies.

Attackers are the last k trainers (k = fraction x members), trainer-only members; the committee is
honest (a dishonest committee member is outvoted: tests/test_attacks.py). Rules: fedavg, coordinate
median, trimmed mean (trim_ratio 0.3) and Multi-Krum (byzantine 3, keeps k - 3). Attacks: see
``fedledger.sim.adversary``.

    .venv/bin/python bench/bench_poisoning.py [--rounds 10] [--subsample 0.2] [--jobs 2]
        [--json-out bench/results/poisoning.json]

Prints a JSON document and a markdown table (final test accuracy; in brackets the change against the
clean run of the same rule, in points).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from bench_core import consortium

ATTACKS = ("sign_flip", "scale", "noise", "label_flip", "alie")
FRACTIONS = (0.1, 0.2, 0.3)
RULES: dict[str, dict[str, Any]] = {
    "fedavg": {"rule": "fedavg"},
    "median": {"rule": "median"},
    "trimmed_mean": {"rule": "trimmed_mean", "trim_ratio": 0.3},
    "multi_krum": {"rule": "multi_krum", "byzantine": 3},
}
GOAL_POINTS = 2.0


def fmnist_workload(members: int, rounds: int, data_path: str) -> dict[str, Any]:
    """bench_core.py's workload as a raw config (security off; rule and attackers set per run)."""
    return {
        "task": {"name": "fmnist-poisoning", "rounds": rounds, "seed": 2024},
        "data": {"dataset": "fashion_mnist", "path": data_path, "partition": "dirichlet", "alpha": 0.5},
        "model": {"name": "cnn", "kwargs": {"num_classes": 10}},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
        "aggregation": {"rule": "fedavg"},
        "security": {"enabled": False},
        **consortium(members, name_digits=2),
    }


def run_config(base: dict[str, Any], rule: str, attack: str | None, fraction: float) -> dict[str, Any]:
    """``base`` with the rule set and the last round(fraction x trainers) trainers attacking."""
    raw = json.loads(json.dumps(base))
    raw["aggregation"] = {**raw["aggregation"], **RULES[rule]}
    members = raw["members"]
    attackers = round(fraction * len(members)) if attack else 0
    for member in members[len(members) - attackers :]:
        member["attack"] = attack
    return raw


def _subsampling(fraction: float, seed: int) -> Callable[..., Any]:
    """A split_data that keeps a fixed random ``fraction`` of every member's shard (seeded per member)."""
    from fedledger.sim import simulation

    original = simulation.split_data

    def split(config: Any) -> Any:
        shards, test = original(config)
        if fraction >= 1.0:
            return shards, test
        kept = {}
        for index, member in enumerate(config.trainers):
            shard = shards[member.name]
            count = max(config.data.min_samples, round(len(shard) * fraction))
            rng = np.random.default_rng([seed, index])
            chosen = np.sort(rng.choice(len(shard), size=min(count, len(shard)), replace=False))
            kept[member.name] = shard.subset(chosen, shard.name)
        return kept, test

    return split


def run_one(job: tuple[dict[str, Any], float, int | None]) -> dict[str, Any]:
    """One security-off run: final accuracy and the per-round curve (``threads``: torch threads, if set)."""
    raw, subsample, threads = job
    import torch

    from fedledger.sim import simulation
    from fedledger.sim.config import parse_config

    if threads is not None:
        torch.set_num_threads(threads)
    config = parse_config(raw, "poisoning workload")
    started = time.perf_counter()
    unsampled = simulation.split_data
    simulation.split_data = _subsampling(subsample, int(raw["task"]["seed"]))  # type: ignore[assignment]
    try:
        sim = simulation.Simulation.create(config, None)
    finally:
        simulation.split_data = unsampled  # type: ignore[assignment]
    summary = sim.run()
    attackers = [m["name"] for m in raw["members"] if m.get("attack")]
    excluded = sum(len(r["excluded"]) for r in summary["rounds"])
    return {
        "rule": raw["aggregation"]["rule"],
        "attack": raw["members"][-1].get("attack"),
        "attackers": attackers,
        "final_accuracy": summary["final"]["test_accuracy"],
        "accuracy_per_round": [r["test_accuracy"] for r in summary["rounds"]],
        "excluded_updates": excluded,
        "train_samples_per_round": sum(len(m.data) for m in _trainers(sim)),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def _trainers(sim: Any) -> list[Any]:
    from fedledger.protocol.actors import Trainer

    return [a for m in sim.members for a in m.actors if isinstance(a, Trainer)]


def run_grid(
    base: dict[str, Any],
    *,
    attacks: Sequence[str] = ATTACKS,
    fractions: Sequence[float] = FRACTIONS,
    rules: Sequence[str] = tuple(RULES),
    subsample: float = 1.0,
    jobs: int = 1,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
) -> dict[str, Any]:
    """Every (rule, clean) run and every (attack, fraction, rule) run; results keyed for the table."""
    labelled: list[tuple[str, dict[str, Any]]] = []
    for rule in rules:
        labelled.append((f"clean/{rule}", run_config(base, rule, None, 0.0)))
    for attack in attacks:
        for fraction in fractions:
            for rule in rules:
                labelled.append((f"{attack}/{fraction}/{rule}", run_config(base, rule, attack, fraction)))
    threads = 1 if jobs > 1 else None  # parallel workers: one torch thread each
    work: list[tuple[dict[str, Any], float, int | None]] = [(raw, subsample, threads) for _, raw in labelled]
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(jobs) as pool:
            for index, outcome in enumerate(pool.imap(run_one, work)):
                results[labelled[index][0]] = outcome
                if progress:
                    progress(outcome, index + 1, len(work))
    else:
        for index, job in enumerate(work):
            outcome = run_one(job)
            results[labelled[index][0]] = outcome
            if progress:
                progress(outcome, index + 1, len(work))
    return {
        "runs": results,
        "grid_wall_seconds": round(time.perf_counter() - started, 1),
        "table": table(results, attacks, fractions, rules),
    }


def table(
    results: dict[str, dict[str, Any]], attacks: Sequence[str], fractions: Sequence[float], rules: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per (attack, fraction): accuracy per rule, the drop against that rule's clean run, the best
    rule and whether it keeps the loss within GOAL_POINTS of the best clean accuracy."""
    clean = {rule: results[f"clean/{rule}"]["final_accuracy"] for rule in rules}
    best_clean = max(clean.values())
    rows: list[dict[str, Any]] = [
        {"attack": "none", "fraction": 0.0, **{rule: clean[rule] for rule in rules}}
    ]
    for attack in attacks:
        for fraction in fractions:
            row: dict[str, Any] = {"attack": attack, "fraction": fraction}
            for rule in rules:
                row[rule] = results[f"{attack}/{fraction}/{rule}"]["final_accuracy"]
            best = max(rules, key=lambda r: row[r])
            row["best_rule"] = best
            row["best_drop_points"] = round((best_clean - row[best]) * 100, 2)
            row["within_goal"] = row["best_drop_points"] <= GOAL_POINTS
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], rules: Sequence[str]) -> str:
    clean = rows[0]
    header = "| attack | attackers | " + " | ".join(rules) + " | best rule: loss vs best clean |"
    lines = [header, "|---|---|" + "---|" * len(rules) + "---|"]
    lines.append("| none (clean) | 0% | " + " | ".join(f"{clean[r]:.4f}" for r in rules) + " | |")
    for row in rows[1:]:
        cells = []
        for rule in rules:
            change = (row[rule] - clean[rule]) * 100
            cells.append(f"{row[rule]:.4f} ({change:+.1f})")
        verdict = "ok" if row["within_goal"] else "over"
        lines.append(
            f"| {row['attack']} | {row['fraction']:.0%} | " + " | ".join(cells)
            + f" | {row['best_rule']}: {row['best_drop_points']:.2f} pts ({verdict}) |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--subsample", type=float, default=0.2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    fractions = [float(f) for f in args.fractions.split(",") if f]
    rules = [r for r in args.rules.split(",") if r]

    def progress(outcome: dict[str, Any], done: int, total: int) -> None:
        print(
            f"[{done}/{total}] {outcome['attack'] or 'clean'} x{len(outcome['attackers'])} "
            f"{outcome['rule']}: acc {outcome['final_accuracy']} ({outcome['wall_seconds']} s)",
            file=sys.stderr,
            flush=True,
        )

    import torch

    base = fmnist_workload(args.members, args.rounds, args.data)
    grid = run_grid(
        base,
        attacks=attacks,
        fractions=fractions,
        rules=rules,
        subsample=args.subsample,
        jobs=args.jobs,
        progress=progress,
    )
    first = next(iter(grid["runs"].values()))
    results = {
        "workload": (
            f"Fashion-MNIST, {args.members} members, Dirichlet 0.5, SmallCNN, 1 epoch, SGD lr 0.05, batch 32, "
            "security-off engine (trains the identical model), full 10,000-image test set"
        ),
        "reduced": {
            "rounds": f"{args.rounds} instead of 20",
            "training_data": (
                f"each member keeps a fixed random {args.subsample:.0%} of its Dirichlet shard "
                f"({first['train_samples_per_round']} of 60,000 training images per round)"
            ),
        },
        "rules": {rule: RULES[rule] for rule in rules},
        "attackers": "the last k trainers (trainer-only members), k = fraction x members",
        "goal": f"with the right rule, 30% attackers cost at most {GOAL_POINTS} points against the best clean run",
        "machine": {
            "cpus": multiprocessing.cpu_count(),
            "jobs": args.jobs,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        **grid,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print()
    print(markdown(grid["table"], rules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
