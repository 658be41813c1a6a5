"""Throughput of the embedded chain: signed contract calls per second, end to end, in one process.

Each transaction is what a trainer sends once per round: a call that stores a bytes32 under
(round, sender) and emits an event (about 70k gas), signed with eth-account (coincurve) by one of
ten members. Every figure includes signing, admission (signature recovery, nonce and balance
checks), EVM execution, mining and the atomic sqlite commit of the block.

Modes:

* ``automine``: each transaction is mined in its own block before ``eth_sendRawTransaction``
  returns (the default; latency = sign + send until the receipt exists);
* ``batched``: automine off, ``evm_mine`` every ``--block-size`` transactions (latency = from
  signing a transaction until its block is committed);
* ``automine-web3`` / ``automine-http``: automine through ``Web3(EmbeddedProvider(chain))`` and
  through ``web3.HTTPProvider`` against ``serve_chain``, as the ledger client and external tools
  see it (send, then fetch the receipt).

    .venv/bin/python bench/bench_chain.py [--txs 1000] [--block-size 250] [--json-out out.json]

Prints a JSON document and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vyper
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3

from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider, serve_chain

CHAIN_ID = 31337
MEMBERS = [Account.from_key(keccak(text=f"bench member {i}")) for i in range(10)]

SUBMISSIONS = """
updates: public(HashMap[uint256, HashMap[address, bytes32]])
count: public(HashMap[uint256, uint256])

event UpdateSubmitted:
    round: indexed(uint256)
    sender: indexed(address)
    blob_hash: bytes32
    num_samples: uint256

@external
def submitUpdate(round: uint256, blob_hash: bytes32, num_samples: uint256):
    assert self.updates[round][msg.sender] == empty(bytes32), "already submitted"
    self.updates[round][msg.sender] = blob_hash
    self.count[round] += 1
    log UpdateSubmitted(round=round, sender=msg.sender, blob_hash=blob_hash, num_samples=num_samples)
"""
SELECTOR = keccak(text="submitUpdate(uint256,bytes32,uint256)")[:4]


class Bench:
    """A fresh chain with the submissions contract deployed and per-member nonces tracked."""

    def __init__(self, directory: Path) -> None:
        self.chain = EmbeddedChain.create(directory, CHAIN_ID, {m.address: 10**24 for m in MEMBERS})
        self.nonces = {m.address: 0 for m in MEMBERS}
        self.round = 0
        bytecode = vyper.compile_code(SUBMISSIONS, output_formats=["bytecode"])["bytecode"]
        deployer = MEMBERS[0]
        raw = self.sign(deployer, {"data": bytecode, "gas": 1_000_000})
        receipt = self.chain.rpc(
            "eth_getTransactionReceipt", [self.chain.rpc("eth_sendRawTransaction", [raw])]
        )
        self.contract = to_checksum_address(receipt["contractAddress"])

    def sign(self, member: LocalAccount, fields: dict[str, Any]) -> str:
        tx = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": self.nonces[member.address],
            "maxFeePerGas": 10**10,  # 10 gwei: well above the base fee, which starts at 1 gwei
            "maxPriorityFeePerGas": 10**9,
            "value": 0,
            **fields,
        }
        self.nonces[member.address] += 1
        return "0x" + bytes(member.sign_transaction(tx).raw_transaction).hex()

    def next_submission(self, i: int) -> str:
        member = MEMBERS[i % len(MEMBERS)]
        if i % len(MEMBERS) == 0:
            self.round += 1
        data = (
            SELECTOR
            + self.round.to_bytes(32, "big")
            + keccak(i.to_bytes(8, "big"))
            + (600).to_bytes(32, "big")
        )
        return self.sign(member, {"to": self.contract, "data": "0x" + data.hex(), "gas": 150_000})

    def close(self) -> None:
        self.chain.close()


def run_automine(bench: Bench, txs: int, send: Callable[[str], Any]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(txs):
        t0 = time.perf_counter()
        send(bench.next_submission(i))
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def run_batched(bench: Bench, txs: int, block_size: int) -> tuple[float, list[float]]:
    bench.chain.rpc("evm_setAutomine", [False])
    latencies: list[float] = []
    waiting: list[float] = []
    start = time.perf_counter()
    for i in range(txs):
        waiting.append(time.perf_counter())
        bench.chain.rpc("eth_sendRawTransaction", [bench.next_submission(i)])
        if len(waiting) == block_size or i == txs - 1:
            bench.chain.rpc("evm_mine", [])
            mined = time.perf_counter()
            latencies.extend(mined - t for t in waiting)
            waiting.clear()
    elapsed = time.perf_counter() - start
    bench.chain.rpc("evm_setAutomine", [True])
    return elapsed, latencies


def direct_send(bench: Bench) -> Callable[[str], Any]:
    def send(raw: str) -> Any:
        tx_hash = bench.chain.rpc("eth_sendRawTransaction", [raw])
        receipt = bench.chain.rpc("eth_getTransactionReceipt", [tx_hash])
        assert receipt["status"] == "0x1", receipt
        return receipt

    return send


def web3_send(w3: Web3) -> Callable[[str], Any]:
    def send(raw: str) -> Any:
        receipt = w3.eth.get_transaction_receipt(w3.eth.send_raw_transaction(raw))  # type: ignore[arg-type]
        assert receipt["status"] == 1, receipt
        return receipt

    return send


def measure(mode: str, txs: int, block_size: int, directory: Path) -> dict[str, Any]:
    bench = Bench(directory / mode)
    try:
        if mode == "automine":
            elapsed, latencies = run_automine(bench, txs, direct_send(bench))
        elif mode == "batched":
            elapsed, latencies = run_batched(bench, txs, block_size)
        elif mode == "automine-web3":
            elapsed, latencies = run_automine(bench, txs, web3_send(Web3(EmbeddedProvider(bench.chain))))
        elif mode == "automine-http":
            server = serve_chain(bench.chain, port=0)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                w3 = Web3(HTTPProvider(f"http://127.0.0.1:{server.server_address[1]}"))
                elapsed, latencies = run_automine(bench, txs, web3_send(w3))
            finally:
                server.shutdown()
                server.server_close()
        else:
            raise ValueError(mode)
        blocks = int(bench.chain.rpc("eth_blockNumber", []), 16)
        count_call = "0x" + (keccak(text="count(uint256)")[:4] + (1).to_bytes(32, "big")).hex()
        count = int(bench.chain.rpc("eth_call", [{"to": bench.contract, "data": count_call}]), 16)
        assert count == len(MEMBERS), count  # the first round's submissions really landed
    finally:
        bench.close()
    return {
        "mode": mode,
        "txs": txs,
        "block_size": 1 if mode.startswith("automine") else block_size,
        "blocks": blocks,
        "seconds": round(elapsed, 3),
        "tx_per_s": round(txs / elapsed, 1),
        "mean_latency_ms": round(1000 * statistics.fmean(latencies), 2),
        "p95_latency_ms": round(1000 * sorted(latencies)[int(0.95 * (len(latencies) - 1))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=1000)
    parser.add_argument("--block-size", type=int, default=250)
    parser.add_argument("--modes", default="automine,batched,automine-web3,automine-http")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-chain-") as tmp:
        results = [measure(mode, args.txs, args.block_size, Path(tmp)) for mode in args.modes.split(",")]
    document = {
        "benchmark": "embedded chain throughput",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "results": results,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print()
    print("| mode | txs | txs/block | tx/s | mean latency (ms) | p95 latency (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['mode']} | {r['txs']} | {r['block_size']} | {r['tx_per_s']} | "
            f"{r['mean_latency_ms']} | {r['p95_latency_ms']} |"
        )


if __name__ == "__main__":
    main()
