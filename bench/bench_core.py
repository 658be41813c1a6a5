"""Core benchmark: the same federated task with all security on, and with chain, crypto and store off.

Fashion-MNIST, 10 members, Dirichlet(0.5), the small CNN, 1 local epoch, SGD lr 0.05, batch 32, 20 rounds.
Both runs use the same engine, actors, data split and seeds, so they train the identical model; the
difference in wall time is what the ledger, the encryption and the blob store cost.

    .venv/bin/python bench/bench_core.py [--rounds 20] [--members 10] [--json-out bench/results/core.json]

Prints a JSON document and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedledger.sim.config import RunConfig, parse_config
from fedledger.sim.simulation import Simulation


def consortium(members: int, *, name_digits: int = 2) -> dict[str, Any]:
    """The benchmarks' protocol and member sections: members 0-2 aggregate (committee 3, quorum 2)
    and govern, member 0 also validates, everyone trains."""
    return {
        "protocol": {
            "committee_size": 3,
            "quorum": 2,
            "min_updates": max(1, (2 * members + 2) // 3),
            "round_duration": 3600,
            "admin_threshold": 2,
        },
        "members": [
            {
                "name": f"member-{i:0{name_digits}d}",
                "roles": ["trainer", "aggregator", "validator"]
                if i == 0
                else ["trainer", "aggregator"]
                if i < 3
                else ["trainer"],
                "admin": i < 3,
            }
            for i in range(members)
        ],
    }


def workload(members: int, rounds: int, secured: bool, data_path: str) -> RunConfig:
    raw: dict[str, Any] = {
        "task": {"name": "fmnist-bench", "rounds": rounds, "seed": 2024},
        "data": {"dataset": "fashion_mnist", "path": data_path, "partition": "dirichlet", "alpha": 0.5},
        "model": {"name": "cnn", "kwargs": {"num_classes": 10}},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
        "aggregation": {"rule": "fedavg"},
        "security": {"enabled": secured},
        **consortium(members, name_digits=2),
    }
    return parse_config(raw, "bench workload")


def run_once(config: RunConfig, out: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    sim = Simulation.create(config, out)
    setup = time.perf_counter() - started
    try:
        summary = sim.run()
    finally:
        sim.close()
    total = time.perf_counter() - started
    return {
        "wall_seconds": round(total, 3),
        "setup_seconds": round(setup, 3),
        "rounds_seconds": summary["totals"]["wall_seconds"],
        "seconds_by_part": summary["totals"]["seconds"],
        "transactions": summary["totals"]["transactions"],
        "gas_used": summary["totals"]["gas_used"],
        "accuracy_per_round": [r["test_accuracy"] for r in summary["rounds"]],
        "final_accuracy": summary["final"]["test_accuracy"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    from fedledger.runtime import tune_allocator

    tune_allocator()  # as the fedledger command line does

    results: dict[str, Any] = {
        "workload": f"Fashion-MNIST, {args.members} members, Dirichlet 0.5, SmallCNN, 1 epoch, SGD lr 0.05, "
        f"batch 32, {args.rounds} rounds",
        "machine": {
            "cpus": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["security_off"] = run_once(workload(args.members, args.rounds, False, args.data), None)
        results["secured"] = run_once(workload(args.members, args.rounds, True, args.data), Path(tmp) / "run")
    off, on = results["security_off"], results["secured"]
    results["ratio_secured_over_off"] = round(on["wall_seconds"] / off["wall_seconds"], 4)
    results["ratio_rounds_only"] = round(on["rounds_seconds"] / off["rounds_seconds"], 4)
    results["same_accuracy_curve"] = on["accuracy_per_round"] == off["accuracy_per_round"]
    ledger_seconds = on["seconds_by_part"]["ledger"]
    results["secured_ledger_tx_per_second"] = (
        round(on["transactions"] / ledger_seconds, 1) if ledger_seconds else None
    )

    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print()
    print(
        "| run | wall s | setup s | rounds s | train s | crypto s | ledger s | store s | aggregate s | txs | final acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("security_off", "secured"):
        r = results[name]
        s = r["seconds_by_part"]
        print(
            f"| {name} | {r['wall_seconds']:.1f} | {r['setup_seconds']:.1f} | {r['rounds_seconds']:.1f} | "
            f"{s['train']:.1f} | {s['crypto']:.2f} | {s['ledger']:.2f} | {s['store']:.2f} | {s['aggregate']:.2f} | "
            f"{r['transactions']} | {r['final_accuracy']} |"
        )
    print(
        f"\nratio secured / off: {results['ratio_secured_over_off']} (rounds only: {results['ratio_rounds_only']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
