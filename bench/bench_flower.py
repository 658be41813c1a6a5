"""fedledger against Flower on one workload, in one run of one script.

Fashion-MNIST, the small CNN (``fedledger.learning.SmallCNN``), 10 members, Dirichlet(0.5) with the
same seed, 1 local epoch, SGD lr 0.05, batch 32, 20 rounds, test accuracy of the global model after
every round. Systems, run one after the other in this process:

* ``bare``: a plain PyTorch FedAvg loop (no framework, no security): the floor;
* ``fedledger_off``: fedledger with chain, crypto and store off (in-memory ledger, plaintext, memory store);
* ``fedledger_secured``: fedledger with everything on (embedded chain, AES-256-GCM blobs, local store);
* ``flower_cpus<N>``: Flower's simulation engine (Ray backend, ``FedAvg``, all 10 clients every round,
  server-side evaluation) with N CPUs per client actor (1: two clients train in parallel; 2: Flower's
  default, one at a time with two threads).

All systems share the split, the initial model, the local training loop (``train_local``, the same
per-member, per-round seed) and the evaluation, so they train the same model and only the framework
differs. Wall time includes set-up (data loading and split, keys and contracts, Ray start-up), not
Python imports.

    .venv/bin/python bench/bench_flower.py [--rounds 20] [--systems bare,fedledger_off,...]
        [--flower-cpus 1,2] [--json-out bench/results/flower.json]

Prints a JSON document and markdown tables. Needs the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_core import workload
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from tutorial_loop import tutorial_train

from fedledger.learning import SmallCNN, TrainConfig, evaluate, load_numpy_state, state_to_numpy, train_local
from fedledger.ledger.contracts import load_artifact
from fedledger.ledger.types import Phase
from fedledger.protocol.actors import Aggregator, derive_seed
from fedledger.protocol.setup import initial_model
from fedledger.sim.simulation import RoundReport, Simulation, split_data, task_spec

BENCH_DIR = Path(__file__).resolve().parent
SEED = 2024  # bench_core's task seed
ROUND_METHODS = ("submitUpdate", "proposeAggregate", "postMetrics")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import flwr
        import ray

        versions["flwr"] = flwr.__version__
        versions["ray"] = ray.__version__
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        **versions,
    }


# ---------------------------------------------------------------------------------------- bare loop


def run_bare(members: int, rounds: int, data_path: str) -> dict[str, Any]:
    """A plain FedAvg loop over the same split, initial model, local loop and evaluation."""
    started = time.perf_counter()
    config = workload(members, rounds, False, data_path)
    by_name, test = split_data(config)
    shards = [by_name[m.name] for m in config.trainers]
    state = initial_model(task_spec(config, test.num_classes))
    train_config = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    model = SmallCNN(num_classes=10)
    setup = time.perf_counter() - started
    curve = []
    for round_ in range(1, rounds + 1):
        total = 0
        sums = {name: np.zeros(value.shape, dtype=np.float64) for name, value in state.items()}
        for index, data in enumerate(shards):
            load_numpy_state(model, state)
            result = train_local(model, data, train_config, seed=derive_seed(SEED, index, round_))
            for name, value in state_to_numpy(model).items():
                sums[name] += value.astype(np.float64) * result.num_samples
            total += result.num_samples
        state = {name: (value / total).astype(np.float32) for name, value in sums.items()}
        final = time.perf_counter() - started
        load_numpy_state(model, state)
        accuracy = evaluate(model, test).accuracy
        curve.append({"round": round_, "t": round(final, 3), "test_accuracy": accuracy})
    model_bytes = sum(v.nbytes for v in state.values())
    return {
        "wall_seconds": round(time.perf_counter() - started, 3),
        "setup_seconds": round(setup, 3),
        "rounds_seconds": round(time.perf_counter() - started - setup, 3),
        "curve": curve,
        "final_accuracy": curve[-1]["test_accuracy"],
        "traffic": {"note": "in-process, nothing sent", "model_bytes": model_bytes},
    }


# ---------------------------------------------------------------------------------------- fedledger


def raw_transaction(tx: dict[str, Any]) -> bytes:
    """The signed bytes of a transaction as eth_getTransactionByHash shows it (checked by its hash)."""
    fields = {
        "type": tx["type"],
        "chainId": tx["chainId"],
        "nonce": tx["nonce"],
        "maxPriorityFeePerGas": tx["maxPriorityFeePerGas"],
        "maxFeePerGas": tx["maxFeePerGas"],
        "gas": tx["gas"],
        "to": to_checksum_address(tx["to"]) if tx["to"] else b"",
        "value": tx["value"],
        "data": tx["input"],
        "accessList": tx.get("accessList", []),
        "v": tx["v"],
        "r": tx["r"],
        "s": tx["s"],
    }
    raw = TypedTransaction.from_dict(fields).encode()
    if "0x" + keccak(raw).hex() != tx["hash"]:
        raise AssertionError(f"re-encoded transaction {tx['hash']} does not match its hash")
    return bytes(raw)



def chain_transactions(chain: Any) -> list[dict[str, Any]]:
    """Every transaction on an embedded chain: method name, sender, raw signed size and gas used."""
    selectors = {}
    for name in ("Consortium", "TrainingTask"):
        for item in load_artifact(name).abi:
            if item.get("type") == "function":
                signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                selectors["0x" + keccak(text=signature)[:4].hex()] = item["name"]
    out = []
    latest = int(chain.rpc("eth_blockNumber", []), 16)
    for number in range(1, latest + 1):
        block = chain.rpc("eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            receipt = chain.rpc("eth_getTransactionReceipt", [tx["hash"]])
            out.append(
                {
                    "block": number,
                    "method": selectors.get(tx["input"][:10], "deploy" if tx["to"] is None else "other"),
                    "from": tx["from"].lower(),
                    "bytes": len(raw_transaction(tx)),
                    "gas": int(receipt["gasUsed"], 16),
                }
            )
    return out


def by_method(transactions: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    methods: dict[str, dict[str, int]] = {}
    for tx in transactions:
        entry = methods.setdefault(tx["method"], {"count": 0, "bytes": 0, "gas": 0})
        entry["count"] += 1
        entry["bytes"] += tx["bytes"]
        entry["gas"] += tx["gas"]
    return methods


def fedledger_traffic(sim: Simulation) -> dict[str, Any]:
    """Bytes each member sends and receives per round, as the chain and the store record them.

    Received: every blob a member needs (the round's global model; every committed update for a
    committee member that proposed; the new model for a validator), each blob once per member as
    the session caches it. Sent: its update blob, its aggregate blob if it proposed, and the raw
    signed transactions of the round protocol (submitUpdate, proposeAggregate, postMetrics).
    Chain reads (eth_call, logs) are not counted: in-process here; over JSON-RPC they are polling.
    """
    ledger, store, task_id = sim.ledger, sim.store, sim.task_id
    task = ledger.task(task_id)
    rounds = task.num_rounds
    sizes: dict[bytes, int] = {}

    def size(blob_hash: bytes) -> int:
        if blob_hash not in sizes:
            sizes[blob_hash] = len(store.get(blob_hash))
        return sizes[blob_hash]

    members = {m.identity.address.lower(): m for m in sim.members}
    sent = {a: 0 for a in members}
    received = {a: 0 for a in members}
    seen: dict[str, set[bytes]] = {a: set() for a in members}

    def read(address: str, blob_hash: bytes) -> None:
        if blob_hash not in seen[address]:
            seen[address].add(blob_hash)
            received[address] += size(blob_hash)

    events = ledger.events(from_block=ledger.deployment.deploy_block)
    update_sizes: list[int] = []
    model_sizes: list[int] = []
    for round_ in range(1, rounds + 1):
        previous = task.initial_model_hash if round_ == 1 else ledger.round_model(task_id, round_ - 1)
        current = ledger.round_model(task_id, round_)
        assert previous is not None and current is not None
        model_sizes.append(size(previous))
        submissions = ledger.submissions(task_id, round_)
        for sub in submissions:
            sender = sub.member.lower()
            sent[sender] += size(sub.blob_hash)
            update_sizes.append(size(sub.blob_hash))
            read(sender, previous)
        for event in events:
            if event.args.get("taskId") != task_id or event.args.get("round") != round_:
                continue
            if event.name == "AggregateProposed":
                aggregator = str(event.args["aggregator"]).lower()
                read(aggregator, previous)
                for sub in submissions:
                    read(aggregator, sub.blob_hash)
                sent[aggregator] += size(event.args["modelHash"])
            elif event.name == "MetricsPosted":
                read(str(event.args["validator"]).lower(), current)

    # Transactions: the raw signed bytes and gas of each, by method.
    assert sim.chain is not None
    transactions = chain_transactions(sim.chain)
    methods = by_method(transactions)
    for tx in transactions:
        if tx["method"] in ROUND_METHODS:
            sent[tx["from"]] += tx["bytes"]

    n = len(members)
    trainer_only = [a for a, m in members.items() if m.roles == ("trainer",)]
    round_gas = sum(methods.get(m, {}).get("gas", 0) for m in ROUND_METHODS)
    round_txs = sum(methods.get(m, {}).get("count", 0) for m in ROUND_METHODS)
    return {
        "update_blob_bytes": round(float(np.mean(update_sizes))),
        "model_blob_bytes": round(float(np.mean(model_sizes))),
        "submit_tx_bytes": round(methods["submitUpdate"]["bytes"] / methods["submitUpdate"]["count"]),
        "per_member_per_round": {
            "mean_sent": round(sum(sent.values()) / n / rounds),
            "mean_received": round(sum(received.values()) / n / rounds),
            "trainer_only_sent": round(sum(sent[a] for a in trainer_only) / len(trainer_only) / rounds),
            "trainer_only_received": round(
                sum(received[a] for a in trainer_only) / len(trainer_only) / rounds
            ),
            "max_sent": round(max(sent.values()) / rounds),
            "max_received": round(max(received.values()) / rounds),
        },
        "transactions_by_method": methods,
        "round_transactions_per_round": round(round_txs / rounds, 2),
        "round_gas_per_member_per_round": round(round_gas / n / rounds),
        "all_gas_per_member_per_round": round(sum(m["gas"] for m in methods.values()) / n / rounds),
    }



def watch_finalisation(sim: Simulation, started: float) -> dict[int, float]:
    """Note when each round's model becomes final on the ledger (only a proposal can finalise one).

    The simulation's loop lets the remaining trainers of a sweep start the next round before the
    validator's turn comes, so the time metrics are posted lags the time the model existed.
    """
    final_at: dict[int, float] = {}
    num_rounds = sim.ledger.task(sim.task_id).num_rounds

    def wrap(step: Callable[[int], bool]) -> Callable[[int], bool]:
        def watched(task_id: int) -> bool:
            progressed = step(task_id)
            if progressed:
                state = sim.ledger.task_state(task_id)
                last = num_rounds if state.phase == Phase.DONE else state.round - 1
                for round_ in range(1, last + 1):
                    final_at.setdefault(round_, round(time.perf_counter() - started, 3))
            return progressed

        return watched

    for member in sim.members:
        for actor in member.actors:
            if isinstance(actor, Aggregator):
                actor.step = wrap(actor.step)  # type: ignore[method-assign,assignment]
    return final_at


def run_fedledger(members: int, rounds: int, data_path: str, secured: bool, tmp: Path) -> dict[str, Any]:
    config = workload(members, rounds, secured, data_path)
    started = time.perf_counter()
    sim = Simulation.create(config, tmp / "run" if secured else None)
    setup = time.perf_counter() - started
    curve: list[dict[str, Any]] = []
    final_at = watch_finalisation(sim, started)

    def on_round(report: RoundReport) -> None:
        curve.append(
            {
                "round": report.round,
                "t": final_at.get(report.round, round(time.perf_counter() - started, 3)),
                "t_metrics_posted": round(time.perf_counter() - started, 3),
                "test_accuracy": report.test_accuracy,
                "seconds": {k: round(v, 4) for k, v in report.seconds.items()},
            }
        )

    try:
        summary = sim.run(on_round)
        wall = time.perf_counter() - started
        if secured:
            traffic = fedledger_traffic(sim)
        else:
            model = sum(v.nbytes for v in initial_model(task_spec(config, 10)).values())
            traffic = {"note": "security off: in-memory ledger and store, plaintext", "model_bytes": model}
    finally:
        sim.close()
    return {
        "wall_seconds": round(wall, 3),
        "setup_seconds": round(setup, 3),
        "rounds_seconds": summary["totals"]["wall_seconds"],
        "seconds_by_part": summary["totals"]["seconds"],
        "transactions": summary["totals"]["transactions"],
        "gas_used": summary["totals"]["gas_used"],
        "curve": curve,
        "final_accuracy": summary["final"]["test_accuracy"],
        "traffic": traffic,
    }


# ---------------------------------------------------------------------------------------- Flower


def run_flower(members: int, rounds: int, data_path: str, loop: str, cpus_per_client: int) -> dict[str, Any]:
    # Ray workers import flower_app (and bench_core) from bench/ by reference.
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(BENCH_DIR) + (os.pathsep + path if path else "")
    import flower_app
    from flwr.simulation import run_simulation

    settings = flower_app.FlowerSettings(
        members=members,
        rounds=rounds,
        data_path=data_path,
        seed=SEED,
        threads_per_client=cpus_per_client,
        client_loop=loop,
    )
    log = flower_app.ServerLog()
    run_simulation(
        server_app=flower_app.build_server_app(settings, log),
        client_app=flower_app.build_client_app(settings),
        num_supernodes=members,
        backend_name="ray",
        backend_config=flower_app.client_resources(cpus_per_client),
    )
    wall = time.perf_counter() - log.started
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    evaluations = sorted(log.evaluations, key=lambda e: e["round"])
    if len(evaluations) != rounds + 1:
        raise RuntimeError(f"flower: expected {rounds + 1} evaluations, got {len(evaluations)}")
    curve = [
        {**e, "t": log.final_at[e["round"]], "t_evaluated": e["t"]} for e in evaluations if e["round"] >= 1
    ]
    sent = [b for r in sorted(log.sent_bytes) for b in log.sent_bytes[r]]
    received = [b for r in sorted(log.received_bytes) for b in log.received_bytes[r]]
    return {
        "wall_seconds": round(wall, 3),
        "setup_seconds": evaluations[0]["t"],  # Ray start-up and the first evaluation
        "rounds_seconds": round(curve[-1]["t_evaluated"] - evaluations[0]["t"], 3),
        "cpus_per_client": cpus_per_client,
        "client_loop": loop,
        "train_seconds_per_round": [round(log.train_seconds[r], 3) for r in sorted(log.train_seconds)],
        "curve": curve,
        "final_accuracy": curve[-1]["test_accuracy"],
        "traffic": {
            "per_member_per_round": {
                "mean_received": round(float(np.mean(sent))),  # what the server sends, a client receives
                "mean_sent": round(float(np.mean(received))),
            },
            "note": "wire size of each Message as Flower deflates it (ArrayRecord arrays as .npy chunks "
            "plus headers); gRPC framing not counted",
        },
    }



# ---------------------------------------------------------------------------------------- training probe


def run_training_probe(members: int, data_path: str) -> dict[str, Any]:
    """Seconds for one local epoch of every member, by how the epochs are scheduled and written."""
    import threading

    config = workload(members, 1, False, data_path)
    by_name, _ = split_data(config)
    shards = [by_name[m.name] for m in config.trainers]
    train_config = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    default_threads = torch.get_num_threads()

    def fedledger_loop(indices: list[int]) -> None:
        for i in indices:
            train_local(SmallCNN(num_classes=10), shards[i], train_config, seed=i)

    def tutorial_loop(indices: list[int]) -> None:
        for i in indices:
            tutorial_train(SmallCNN(num_classes=10), shards[i], seed=i)

    everyone = list(range(len(shards)))
    results: dict[str, float] = {}

    def timed(name: str, threads: int, fn: Callable[[list[int]], None], parallel: int = 1) -> None:
        torch.set_num_threads(threads)
        fn(everyone[:1])  # warm-up
        start = time.perf_counter()
        if parallel == 1:
            fn(everyone)
        else:
            workers = [threading.Thread(target=fn, args=(everyone[k::parallel],)) for k in range(parallel)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        results[name] = round(time.perf_counter() - start, 3)

    try:
        timed("train_local, sequential, 2 threads", 2, fedledger_loop)
        timed("train_local, sequential, 1 thread", 1, fedledger_loop)
        timed("train_local, 2 at once x 1 thread", 1, fedledger_loop, parallel=2)
        timed("DataLoader loop, sequential, 2 threads", 2, tutorial_loop)
        timed("DataLoader loop, sequential, 1 thread", 1, tutorial_loop)
        timed("DataLoader loop, 2 at once x 1 thread", 1, tutorial_loop, parallel=2)
    finally:
        torch.set_num_threads(default_threads)
    return {"members": len(shards), "samples": sum(len(s) for s in shards), "epoch_seconds": results}


# ---------------------------------------------------------------------------------------- driver


def measure(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"[bench_flower] {name}: load before {load()}", file=sys.stderr, flush=True)
    before = load()
    result = fn()
    result["loadavg_before"] = before
    result["loadavg_after"] = load()
    print(
        f"[bench_flower] {name}: {result['wall_seconds']:.1f} s, final accuracy {result['final_accuracy']}, "
        f"load after {result['loadavg_after']}",
        file=sys.stderr,
        flush=True,
    )
    return result


def markdown(doc: dict[str, Any]) -> str:
    systems: dict[str, Any] = doc["systems"]
    flowers = [name for name in systems if name.startswith("flower")]
    lines = [
        "| system | wall s | setup s | rounds s | final accuracy | "
        + "".join(f"wall / {f} | " for f in flowers)
        + "wall / fedledger off | sent per member per round | received per member per round |",
        "| --- | ---: | ---: | ---: | ---: | " + "---: | " * len(flowers) + "---: | ---: | ---: |",
    ]
    off_wall = systems["fedledger_off"]["wall_seconds"] if "fedledger_off" in systems else None
    for name, r in systems.items():
        traffic = r["traffic"].get("per_member_per_round")
        sent = f"{traffic['mean_sent'] / 1e3:.1f} kB" if traffic else "-"
        recv = f"{traffic['mean_received'] / 1e3:.1f} kB" if traffic else "-"
        vs_flower = "".join(f"{r['wall_seconds'] / systems[f]['wall_seconds']:.3f} | " for f in flowers)
        vs_off = f"{r['wall_seconds'] / off_wall:.3f}" if off_wall else "-"
        lines.append(
            f"| {name} | {r['wall_seconds']:.1f} | {r['setup_seconds']:.1f} | {r['rounds_seconds']:.1f} | "
            f"{r['final_accuracy']:.4f} | {vs_flower}{vs_off} | {sent} | {recv} |"
        )
    probe = doc.get("training_probe")
    if probe:
        lines += [
            "",
            f"one local epoch of all {probe['members']} members ({probe['samples']} images), by schedule and loop:",
            "",
            "| schedule | seconds |",
            "| --- | ---: |",
        ]
        lines += [f"| {name} | {sec:.1f} |" for name, sec in probe["epoch_seconds"].items()]
    lines += ["", "test accuracy per round:", ""]
    names = list(systems)
    if not names:
        return "\n".join(lines)
    lines.append("| round | " + " | ".join(names) + " |")
    lines.append("| ---: | " + " | ".join("---:" for _ in names) + " |")
    rounds = len(next(iter(systems.values()))["curve"])
    for i in range(rounds):
        cells = []
        for name in names:
            point = systems[name]["curve"][i]
            cells.append(f"{point['test_accuracy']:.4f} @ {point['t']:.0f} s")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    secured = systems.get("fedledger_secured")
    if secured:
        t = secured["traffic"]
        p = t["per_member_per_round"]
        lines += [
            "",
            "fedledger secured, per member per round: "
            f"trainer-only member sends {p['trainer_only_sent']} B (update blob {t['update_blob_bytes']} B + "
            f"submitUpdate tx {t['submit_tx_bytes']} B) and receives {p['trainer_only_received']} B "
            f"(model blob {t['model_blob_bytes']} B); busiest member sends {p['max_sent']} B, "
            f"receives {p['max_received']} B; round-protocol gas per member per round "
            f"{t['round_gas_per_member_per_round']}",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument(
        "--systems",
        default="bare,fedledger_off,fedledger_secured,flower",
        help="also 'probe': time one local epoch by schedule (sequential/parallel, threads) and loop style",
    )
    parser.add_argument(
        "--flower",
        default="tutorial:2,train_local:1",
        help="Flower configurations to run, LOOP:CPUS each: the client's local loop ('tutorial', the "
        "quickstart's DataLoader loop, or 'train_local', fedledger's) and CPUs per client actor "
        "(2 is Flower's default)",
    )
    parser.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="where to write the JSON (default bench/results/flower.json; with --from-json, only if given)",
    )
    parser.add_argument(
        "--from-json",
        default=None,
        help="comma-separated JSON files of earlier runs: merge their systems and print the tables, run nothing",
    )
    args = parser.parse_args()
    if args.from_json:
        merged: dict[str, Any] | None = None
        for name in args.from_json.split(","):
            part = json.loads(Path(name).read_text())
            if merged is None:
                merged = part
            else:
                for key, value in part["systems"].items():  # the first file that has a system wins
                    merged["systems"].setdefault(key, value)
        assert merged is not None
        finish(merged, args.json_out)
        return 0
    logging.getLogger("flwr").setLevel(logging.WARNING)
    chosen = args.systems.split(",")
    doc: dict[str, Any] = {
        "benchmark": "fedledger vs Flower",
        "workload": f"Fashion-MNIST, {args.members} members, Dirichlet 0.5 (seed {SEED}), SmallCNN, "
        f"1 local epoch, SGD lr 0.05, batch 32, {args.rounds} rounds",
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "systems": {},
    }
    systems: dict[str, Any] = doc["systems"]
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-flower-") as tmp:
        if "bare" in chosen:
            systems["bare"] = measure("bare", lambda: run_bare(args.members, args.rounds, args.data))
        if "fedledger_off" in chosen:
            systems["fedledger_off"] = measure(
                "fedledger_off",
                lambda: run_fedledger(args.members, args.rounds, args.data, False, Path(tmp)),
            )
        if "fedledger_secured" in chosen:
            systems["fedledger_secured"] = measure(
                "fedledger_secured",
                lambda: run_fedledger(args.members, args.rounds, args.data, True, Path(tmp)),
            )
    if "probe" in chosen:
        print(f"[bench_flower] training probe: load {load()}", file=sys.stderr, flush=True)
        doc["training_probe"] = run_training_probe(args.members, args.data)
        doc["training_probe"]["loadavg_after"] = load()
    if "flower" in chosen:
        for item in args.flower.split(","):
            loop, _, cpus = item.partition(":")
            if loop not in ("tutorial", "train_local") or not cpus.isdigit():
                parser.error(f"--flower: expected LOOP:CPUS with LOOP tutorial or train_local, got {item!r}")
            name = f"flower_{loop}_cpus{cpus}"
            systems[name] = measure(
                name, functools.partial(run_flower, args.members, args.rounds, args.data, loop, int(cpus))
            )
    finish(doc, args.json_out or BENCH_DIR / "results" / "flower.json")
    return 0


def finish(doc: dict[str, Any], json_out: Path | None) -> None:
    """Work out the headline ratios, then print (and save) the JSON and the markdown tables."""
    systems: dict[str, Any] = doc["systems"]
    flowers = [name for name in systems if name.startswith("flower")]
    if flowers:
        doc["fastest_flower"] = min(flowers, key=lambda name: systems[name]["wall_seconds"])
    ratios: dict[str, float] = {}
    for flower in flowers:
        fl = systems[flower]
        for mine in ("fedledger_secured", "bare"):
            if mine in systems:
                on = systems[mine]
                short = mine.removeprefix("fedledger_")
                ratios[f"{short}_over_{flower}_wall"] = round(on["wall_seconds"] / fl["wall_seconds"], 4)
                ratios[f"{short}_minus_{flower}_accuracy_points"] = round(
                    100 * (on["final_accuracy"] - fl["final_accuracy"]), 3
                )
    if "fedledger_secured" in systems and "fedledger_off" in systems:
        on, off = systems["fedledger_secured"], systems["fedledger_off"]
        ratios["secured_over_off_wall"] = round(on["wall_seconds"] / off["wall_seconds"], 4)
        ratios["secured_over_off_rounds"] = round(on["rounds_seconds"] / off["rounds_seconds"], 4)
        ratios["same_accuracy_curve"] = [p["test_accuracy"] for p in on["curve"]] == [
            p["test_accuracy"] for p in off["curve"]
        ]
    if "bare" in systems and "fedledger_secured" in systems:
        ratios["secured_over_bare_wall"] = round(
            systems["fedledger_secured"]["wall_seconds"] / systems["bare"]["wall_seconds"], 4
        )
    doc["ratios"] = ratios
    text = json.dumps(doc, indent=2)
    print(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    print()
    print(markdown(doc))
    print()
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))


if __name__ == "__main__":
    sys.exit(main())
