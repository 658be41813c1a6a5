"""The chains the ledger tests run on: the embedded py-evm chain and anvil, a real node process.

One conformance suite, two backends (the way web3.py tests against a node and its tester): whatever the
contracts and the ledger client do must hold on both.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from consortium import ANVIL, free_port, wait_for_port
from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider

BACKENDS = ["embedded", "anvil"]
FUNDS_WEI = 10**24


def open_chain(kind: str, directory: Path, count: int) -> tuple[Web3, list[LocalAccount], Callable[[], None]]:
    """A fresh automining chain with ``count`` funded accounts, and a function that tears it down."""
    accounts: list[LocalAccount] = [Account.create() for _ in range(count)]
    if kind == "embedded":
        chain = EmbeddedChain.create(directory / "chain", 1337, {a.address: FUNDS_WEI for a in accounts})
        return Web3(EmbeddedProvider(chain)), accounts, chain.close
    if kind == "anvil":
        assert ANVIL.exists(), f"{ANVIL} missing: `make test` installs foundry's anvil with npm"
        port = free_port()
        process = subprocess.Popen(
            [str(ANVIL), "--port", str(port), "--silent", "--chain-id", "31337"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, process)
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        for account in accounts:
            w3.provider.make_request("anvil_setBalance", [account.address, hex(FUNDS_WEI)])  # type: ignore[arg-type]

        def stop() -> None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

        return w3, accounts, stop
    raise ValueError(kind)


def advance_time(w3: Web3, seconds: int) -> None:
    """Move chain time forward and mine a block at the new time (both backends speak this dialect)."""
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def addresses(accounts: Sequence[LocalAccount]) -> list[str]:
    return [a.address for a in accounts]
