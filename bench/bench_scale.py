"""How fedledger's cost grows: with members, with model size, and on the embedded chain against anvil.

Sections (``--sections``, all by default):

* ``members``: the same engine secured and with security off, a small model (an MLP with one hidden layer
  of 32 on scikit-learn's digits, IID split, so training is negligible), 3 rounds, for each member count
  of ``--members``. Per round: transactions, gas, seconds split into train / crypto / ledger / store /
  aggregate / evaluate and what no timer covers (the loop's chain reads). A member count the engine
  cannot run is reported with the error it gives.
* ``models``: the same engine, 4 members, 2 rounds, MLPs of about 0.2M, 10M and 100M parameters on digits:
  per-round seconds secured against off, so the added cost per round against model bytes.
* ``crypto``: serialise, hash, encrypt, store and decrypt of one update of each model size, one core,
  median of ``--repeat`` (``bench_crypto.bench_size``).
* ``chain``: transactions per second and latency of the same signed contract calls as ``bench_chain.py``,
  on the embedded chain (in process, and over HTTP JSON-RPC) and on anvil (HTTP JSON-RPC, automine),
  ``node_modules/.bin/anvil`` (``npm install @foundry-rs/anvil``).

    .venv/bin/python bench/bench_scale.py [--sections members,models,crypto,chain]
        [--members 10,32,64,100,1000] [--json-out bench/results/scale.json]

Prints a JSON document and markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_chain import MEMBERS, SELECTOR, SUBMISSIONS
from bench_core import consortium
from bench_crypto import bench_size
from bench_flower import ROUND_METHODS, by_method, chain_transactions, load, machine
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3

from fedledger.errors import FedledgerError
from fedledger.ledger.chain import EmbeddedChain, serve_chain
from fedledger.sim.config import RunConfig, parse_config
from fedledger.sim.simulation import Simulation

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ANVIL = REPO / "node_modules" / ".bin" / "anvil"
PARTS = ("train", "crypto", "ledger", "store", "aggregate", "evaluate")
MODEL_HIDDEN = {  # digits: 64 features, 10 classes
    "0.2M": [1024, 128],
    "10M": [3072, 3072],
    "100M": [10000, 10000],
}


def mlp_params(hidden: list[int], inputs: int = 64, classes: int = 10) -> int:
    widths = [inputs, *hidden, classes]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def small_workload(members: int, rounds: int, secured: bool, hidden: list[int]) -> RunConfig:
    raw: dict[str, Any] = {
        "task": {"name": "scale-bench", "rounds": rounds, "seed": 7},
        "data": {"dataset": "digits", "partition": "iid", "test_fraction": 0.2, "min_samples": 1},
        "model": {"name": "mlp", "kwargs": {"in_features": 64, "hidden": hidden, "num_classes": 10}},
        "training": {"epochs": 1, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
        # A 100M-parameter update is 403 MB: above the default 256 MiB blob limit, so raise it.
        "aggregation": {"rule": "fedavg", "max_blob_bytes": 2**30},
        "security": {"enabled": secured},
        **consortium(members, name_digits=4),
    }
    return parse_config(raw, "scale workload")


def run_engine(config: RunConfig, out: Path | None) -> dict[str, Any]:
    """One run; per-round averages over rounds 1..R (set-up and dataset registration excluded)."""
    started = time.perf_counter()
    sim = Simulation.create(config, out)
    setup = time.perf_counter() - started
    try:
        summary = sim.run()
        transactions = chain_transactions(sim.chain) if sim.chain is not None else []
    finally:
        sim.close()
    rounds = summary["rounds"]
    n = len(rounds)
    parts = {p: sum(r["seconds"].get(p, 0.0) for r in rounds) / n for p in PARTS}
    round_wall = summary["totals"]["wall_seconds"] / n
    methods = by_method(transactions)
    round_txs = sum(methods.get(m, {}).get("count", 0) for m in ROUND_METHODS)
    round_gas = sum(methods.get(m, {}).get("gas", 0) for m in ROUND_METHODS)
    members = len(config.members)
    return {
        "setup_seconds": round(setup, 3),
        "round_wall_seconds": round(round_wall, 4),
        "round_seconds": {k: round(v, 4) for k, v in parts.items()},
        "round_untimed_seconds": round(round_wall - sum(parts.values()), 4),
        "transactions_per_round": round(round_txs / n, 2),
        "gas_per_round": round(round_gas / n),
        "gas_per_member_per_round": round(round_gas / n / members) if members else 0,
        "submit_update_gas": round(methods["submitUpdate"]["gas"] / methods["submitUpdate"]["count"])
        if "submitUpdate" in methods
        else None,
        "methods": methods,
        "final_accuracy": summary["final"]["test_accuracy"],
    }


def pair(members: int, rounds: int, hidden: list[int], tmp: Path) -> dict[str, Any]:
    """Secured and security-off runs of one configuration, and what security adds per round."""
    off = run_engine(small_workload(members, rounds, False, hidden), None)
    run_dir = tmp / f"run-{members}-{len(hidden)}-{hidden[0]}"
    on = run_engine(small_workload(members, rounds, True, hidden), run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "secured": on,
        "security_off": off,
        "added_seconds_per_round": round(on["round_wall_seconds"] - off["round_wall_seconds"], 4),
        "added_by_part": {
            p: round(on["round_seconds"][p] - off["round_seconds"][p], 4) for p in PARTS
        }
        | {"untimed": round(on["round_untimed_seconds"] - off["round_untimed_seconds"], 4)},
    }


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float] | None:
    if len(xs) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    predicted = slope * np.asarray(xs) + intercept
    residual = float(np.sum((np.asarray(ys) - predicted) ** 2))
    total = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2))
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "r2": 1 - residual / total if total > 0 else 1.0,
    }


def warm_up() -> None:
    """One tiny run first, so one-time costs (lazy imports such as torch._dynamo on the first optimizer,
    about a second) land in no measured run."""
    run_engine(small_workload(4, 1, False, [32]), None)


def section_members(counts: list[int], rounds: int, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": rounds, "model": "mlp hidden [32] on digits", "runs": {}}
    warm_up()
    for members in counts:
        print(f"[bench_scale] members {members}: load {load()}", file=sys.stderr, flush=True)
        try:
            results["runs"][str(members)] = pair(members, rounds, [32], tmp) | {"loadavg_after": load()}
        except (FedledgerError, ValueError) as exc:
            results["runs"][str(members)] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    ok = {int(k): v for k, v in results["runs"].items() if "error" not in v}
    xs = sorted(ok)
    results["fit_added_seconds_vs_members"] = linear_fit(
        [float(x) for x in xs], [ok[x]["added_seconds_per_round"] for x in xs]
    )
    results["fit_gas_per_round_vs_members"] = linear_fit(
        [float(x) for x in xs], [ok[x]["secured"]["gas_per_round"] for x in xs]
    )
    return results


def section_models(sizes: list[str], members: int, rounds: int, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"members": members, "rounds": rounds, "runs": {}}
    warm_up()
    for label in sizes:
        hidden = MODEL_HIDDEN[label]
        print(f"[bench_scale] model {label}: load {load()}", file=sys.stderr, flush=True)
        params = mlp_params(hidden)
        try:
            run = pair(members, rounds, hidden, tmp)
        except FedledgerError as exc:
            results["runs"][label] = {"parameters": params, "model_bytes": 4 * params, "error": str(exc)}
            continue
        results["runs"][label] = {"parameters": params, "model_bytes": 4 * params, **run, "loadavg_after": load()}
    ok = [r for r in results["runs"].values() if "error" not in r]
    xs = [float(r["model_bytes"]) for r in ok]
    ys = [r["added_seconds_per_round"] for r in ok]
    results["fit_added_seconds_vs_model_bytes"] = linear_fit(xs, ys)
    return results


def section_crypto(sizes: list[str], repeat: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"repeat": repeat, "runs": {}}
    for label in sizes:
        megabytes = 4 * mlp_params(MODEL_HIDDEN[label]) / 1e6
        print(f"[bench_scale] crypto {label} ({megabytes:.1f} MB): load {load()}", file=sys.stderr, flush=True)
        workdir = tmp / f"crypto-{label}"
        result = bench_size(megabytes, repeat if megabytes < 100 else max(3, repeat // 2), workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        steps = result["steps"]
        # What a secured round adds per update over security off (which serialises and hashes in memory):
        # seal + fsynced put by the sender, verified get + open by each receiver.
        added = (
            steps["seal (random nonce)"]["median_s"]
            + steps["local put (fsync)"]["median_s"]
            + steps["local get (verified)"]["median_s"]
            + steps["open"]["median_s"]
            - steps["memory get (verified)"]["median_s"]
        )
        out["runs"][label] = {
            "parameters": mlp_params(MODEL_HIDDEN[label]),
            **result,
            "added_per_update_s": added,
            "loadavg_after": load(),
        }
    xs = [float(r["payload_bytes"]) for r in out["runs"].values()]
    out["fit_added_seconds_vs_bytes"] = linear_fit(xs, [r["added_per_update_s"] for r in out["runs"].values()])
    return out


# ---------------------------------------------------------------------------------------- chain


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Submitter:
    """bench_chain's submissions contract and signed submitUpdate calls, on any chain reached by ``send``."""

    def __init__(self, chain_id: int, send: Callable[[str], dict[str, Any]]) -> None:
        import vyper

        self.chain_id = chain_id
        self.send = send
        self.nonces = {m.address: 0 for m in MEMBERS}
        self.round = 0
        bytecode = vyper.compile_code(SUBMISSIONS, output_formats=["bytecode"])["bytecode"]
        receipt = send(self.sign(MEMBERS[0], {"data": bytecode, "gas": 1_000_000}))
        self.contract = to_checksum_address(receipt["contractAddress"])

    def sign(self, member: LocalAccount, fields: dict[str, Any]) -> str:
        tx = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": self.nonces[member.address],
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "value": 0,
            **fields,
        }
        self.nonces[member.address] += 1
        return "0x" + bytes(member.sign_transaction(tx).raw_transaction).hex()

    def submission(self, i: int) -> str:
        member = MEMBERS[i % len(MEMBERS)]
        if i % len(MEMBERS) == 0:
            self.round += 1
        data = SELECTOR + self.round.to_bytes(32, "big") + keccak(i.to_bytes(8, "big")) + (600).to_bytes(32, "big")
        return self.sign(member, {"to": self.contract, "data": "0x" + data.hex(), "gas": 150_000})

    def run(self, txs: int) -> dict[str, Any]:
        latencies = []
        gas = []
        start = time.perf_counter()
        for i in range(txs):
            t0 = time.perf_counter()
            receipt = self.send(self.submission(i))
            latencies.append(time.perf_counter() - t0)
            gas.append(int(receipt["gasUsed"]))
        elapsed = time.perf_counter() - start
        return {
            "txs": txs,
            "seconds": round(elapsed, 3),
            "tx_per_s": round(txs / elapsed, 1),
            "mean_latency_ms": round(1000 * statistics.fmean(latencies), 2),
            "p50_latency_ms": round(1000 * statistics.median(latencies), 2),
            "p95_latency_ms": round(1000 * sorted(latencies)[int(0.95 * (len(latencies) - 1))], 2),
            "gas_per_tx": round(statistics.fmean(gas)),
        }


def http_sender(w3: Web3) -> Callable[[str], dict[str, Any]]:
    def send(raw: str) -> dict[str, Any]:
        tx_hash = w3.eth.send_raw_transaction(raw)  # type: ignore[arg-type]
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.0005)
        assert receipt["status"] == 1, receipt
        return dict(receipt)

    return send


def direct_sender(chain: EmbeddedChain) -> Callable[[str], dict[str, Any]]:
    def send(raw: str) -> dict[str, Any]:
        receipt = chain.rpc("eth_getTransactionReceipt", [chain.rpc("eth_sendRawTransaction", [raw])])
        assert receipt["status"] == "0x1", receipt
        return {**receipt, "gasUsed": int(receipt["gasUsed"], 16)}

    return send


def section_chain(txs: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"txs": txs, "runs": {}}
    funded = {m.address: 10**24 for m in MEMBERS}

    chain = EmbeddedChain.create(tmp / "chain-direct", 31337, funded)
    try:
        out["runs"]["embedded (in process)"] = Submitter(31337, direct_sender(chain)).run(txs)
    finally:
        chain.close()

    chain = EmbeddedChain.create(tmp / "chain-http", 31337, funded)
    server = serve_chain(chain, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{server.server_address[1]}"))
        out["runs"]["embedded (HTTP JSON-RPC)"] = Submitter(31337, http_sender(w3)).run(txs)
    finally:
        server.shutdown()
        server.server_close()
        chain.close()

    if not ANVIL.exists():
        out["runs"]["anvil (HTTP JSON-RPC)"] = {"error": f"{ANVIL} not found: npm install @foundry-rs/anvil"}
        return out
    port = free_port()
    process = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent", "--chain-id", "31337"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if w3.is_connected():
                    break
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("anvil did not start")
            time.sleep(0.1)
        for member in MEMBERS:  # fund the bench's members (anvil's own dev accounts are other keys)
            w3.provider.make_request("anvil_setBalance", [member.address, hex(10**24)])  # type: ignore[arg-type]
        version = subprocess.run([str(ANVIL), "--version"], capture_output=True, text=True).stdout.splitlines()
        out["anvil_version"] = version[0] if version else None
        out["runs"]["anvil (HTTP JSON-RPC)"] = Submitter(31337, http_sender(w3)).run(txs)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return out


# ---------------------------------------------------------------------------------------- output


def markdown(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    members = doc.get("members")
    if members:
        lines += [
            f"### Per round against members (small MLP, {members['rounds']} rounds, averages per round)",
            "",
            "| members | txs / round | gas / round | gas / member / round | submitUpdate gas | round s secured "
            "| round s off | added s | train | crypto | ledger | store | aggregate | evaluate | untimed |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: |",
        ]
        for count, run in members["runs"].items():
            if "error" in run:
                lines.append(f"| {count} | {run['error']} |" + " |" * 13)
                continue
            on, off = run["secured"], run["security_off"]
            s = on["round_seconds"]
            lines.append(
                f"| {count} | {on['transactions_per_round']:.0f} | {on['gas_per_round']:,} | "
                f"{on['gas_per_member_per_round']:,} | {on['submit_update_gas']:,} | {on['round_wall_seconds']:.3f} | "
                f"{off['round_wall_seconds']:.3f} | {run['added_seconds_per_round']:.3f} | "
                + " | ".join(f"{s[p]:.3f}" for p in PARTS)
                + f" | {on['round_untimed_seconds']:.3f} |"
            )
        fit = members.get("fit_added_seconds_vs_members")
        if fit:
            lines += [
                "",
                f"added seconds per round ~ {fit['slope'] * 1000:.2f} ms x members + {fit['intercept']:.3f} s "
                f"(R^2 {fit['r2']:.3f})",
            ]
    models = doc.get("models")
    if models:
        lines += [
            "",
            f"### Per round against model size ({models['members']} members, {models['rounds']} rounds)",
            "",
            "| model | parameters | MB | round s secured | round s off | added s | added crypto | added store "
            "| added ledger | added aggregate | added untimed |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, run in models["runs"].items():
            if "error" in run:
                lines.append(f"| {label} | {run['parameters']:,} | {run['model_bytes'] / 1e6:.1f} | {run['error']} |")
                continue
            a = run["added_by_part"]
            lines.append(
                f"| {label} | {run['parameters']:,} | {run['model_bytes'] / 1e6:.1f} | "
                f"{run['secured']['round_wall_seconds']:.3f} | {run['security_off']['round_wall_seconds']:.3f} | "
                f"{run['added_seconds_per_round']:.3f} | {a['crypto']:.3f} | {a['store']:.3f} | {a['ledger']:.3f} | "
                f"{a['aggregate']:.3f} | {a['untimed']:.3f} |"
            )
        fit = models.get("fit_added_seconds_vs_model_bytes")
        if fit:
            lines += [
                "",
                f"added seconds per round ~ {fit['slope'] * 1e9:.3f} s/GB x model bytes + {fit['intercept']:.3f} s "
                f"(R^2 {fit['r2']:.3f})",
            ]
    crypto = doc.get("crypto")
    if crypto:
        labels = list(crypto["runs"])
        lines += [
            "",
            "### One update: serialise, hash, encrypt, store, decrypt (one core, median)",
            "",
            "| step | " + " | ".join(f"{lab} ({crypto['runs'][lab]['payload_bytes'] / 1e6:.1f} MB)" for lab in labels)
            + " |",
            "| --- | " + " | ".join("---:" for _ in labels) + " |",
        ]
        for step in crypto["runs"][labels[0]]["steps"]:
            cells = []
            for lab in labels:
                st = crypto["runs"][lab]["steps"][step]
                cells.append(f"{st['median_s'] * 1e3:.1f} ms ({st['gb_per_s']:.2f} GB/s)")
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        lines.append(
            "| added per update (seal + put + get + open) | "
            + " | ".join(f"{crypto['runs'][lab]['added_per_update_s'] * 1e3:.1f} ms" for lab in labels)
            + " |"
        )
    chain = doc.get("chain")
    if chain:
        lines += [
            "",
            f"### Chain: {chain['txs']} signed submitUpdate calls, one per block (automine)",
            "",
            "| chain | tx/s | mean latency ms | p50 ms | p95 ms | gas / tx |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, run in chain["runs"].items():
            if "error" in run:
                lines.append(f"| {name} | {run['error']} | | | | |")
                continue
            lines.append(
                f"| {name} | {run['tx_per_s']} | {run['mean_latency_ms']} | {run['p50_latency_ms']} | "
                f"{run['p95_latency_ms']} | {run['gas_per_tx']:,} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="members,models,crypto,chain")
    parser.add_argument("--members", default="10,32,64,100,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-sizes", default="0.2M,10M,100M")
    parser.add_argument("--model-members", type=int, default=4)
    parser.add_argument("--model-rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--txs", type=int, default=500)
    parser.add_argument("--json-out", type=Path, default=BENCH_DIR / "results" / "scale.json")
    args = parser.parse_args()
    sections = args.sections.split(",")
    sizes = args.model_sizes.split(",")
    doc: dict[str, Any] = {
        "benchmark": "fedledger scale",
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_before": load(),
    }
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-scale-") as name:
        tmp = Path(name)
        if "members" in sections:
            counts = [int(c) for c in args.members.split(",")]
            doc["members"] = section_members(counts, args.rounds, tmp)
        if "models" in sections:
            doc["models"] = section_models(sizes, args.model_members, args.model_rounds, tmp)
        if "crypto" in sections:
            doc["crypto"] = section_crypto(sizes, args.repeat, tmp)
        if "chain" in sections:
            doc["chain"] = section_chain(args.txs, tmp)
    doc["loadavg_after"] = load()
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print()
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
