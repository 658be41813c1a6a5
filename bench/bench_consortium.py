"""One task two ways: four `fedledger node` processes on anvil with the blob server, vs all members
simulated in one process on the embedded chain.

    .venv/bin/python bench/bench_consortium.py [--rounds 5] [--json-out bench/results/consortium.json]

Same data split (breast-cancer, Dirichlet, seed 7), model, hyper-parameters and committee. The process
run pays for process start-up (torch import), HTTP to the node and the store, and polling; the
simulation pays for none of it. Prints JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from consortium import MEMBERS, Consortium
from fedledger.sim.config import parse_config
from fedledger.sim.simulation import Simulation


def simulated(rounds: int, out: Path) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "task": {"name": "consortium-bench", "rounds": rounds, "seed": 7},
        "data": {"dataset": "breast_cancer", "partition": "dirichlet", "alpha": 1.0},
        "model": {"name": "mlp", "kwargs": {"in_features": 30, "hidden": [16], "num_classes": 2}},
        "training": {"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.9},
        "aggregation": {"rule": "fedavg", "max_update_norm": 100.0},
        "protocol": {"committee_size": 3, "quorum": 2, "min_updates": 3, "round_duration": 120, "admin_threshold": 2},
        "members": [
            {"name": name, "roles": roles.split(","), "admin": index < 3}
            for index, (name, roles) in enumerate(MEMBERS.items())
        ],
    }
    started = time.perf_counter()
    sim = Simulation.create(parse_config(raw, "bench"), out)
    try:
        summary = sim.run()
    finally:
        sim.close()
    return {
        "wall_seconds": round(time.perf_counter() - started, 2),
        "final_accuracy": summary["final"]["test_accuracy"],
        "transactions": summary["totals"]["transactions"],
    }


def processes(rounds: int, root: Path) -> dict[str, Any]:
    consortium = Consortium(root, "anvil")
    try:
        started = time.perf_counter()
        consortium.create_members()
        consortium.start_chain()
        consortium.deploy()
        consortium.start_store()
        task_id = consortium.create_task(rounds=rounds, round_duration=120)
        setup = time.perf_counter() - started
        for name in MEMBERS:
            consortium.start_member(name)
        consortium.wait_members(list(MEMBERS), timeout=60 * rounds + 120)
        total = time.perf_counter() - started
        from web3 import Web3

        from fedledger.ledger import Ledger
        from fedledger.ledger.types import Deployment

        ledger = Ledger(Web3(Web3.HTTPProvider(consortium.rpc)), Deployment.from_json(consortium.deployment.read_text()))
        accuracy = [
            e.args["accuracyPpm"] / 1e6
            for e in ledger.events()
            if e.name == "MetricsPosted" and e.args["round"] == rounds and e.args["taskId"] == task_id
        ]
        return {
            "wall_seconds": round(total, 2),
            "setup_seconds": round(setup, 2),
            "final_accuracy": round(sum(accuracy) / len(accuracy), 6) if accuracy else None,
            "transactions": int(ledger.w3.eth.block_number),
        }
    finally:
        consortium.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, Any] = {
            "workload": f"breast-cancer, 4 members, MLP, {args.rounds} rounds, committee 3 quorum 2",
            "simulation_embedded": simulated(args.rounds, Path(tmp) / "sim"),
            "processes_anvil": processes(args.rounds, Path(tmp) / "procs"),
        }
    results["ratio_processes_over_simulation"] = round(
        results["processes_anvil"]["wall_seconds"] / results["simulation_embedded"]["wall_seconds"], 2
    )
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print("\n| run | wall s | final accuracy |\n|---|---|---|")
    for name in ("simulation_embedded", "processes_anvil"):
        print(f"| {name} | {results[name]['wall_seconds']} | {results[name]['final_accuracy']} |")
    print(f"\nratio processes / simulation: {results['ratio_processes_over_simulation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
