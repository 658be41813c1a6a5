"""A real consortium on one machine for tests: an Ethereum node process, a blob server, member processes.

Everything goes through the command line and separate processes, as a deployment would: the tests only
read the chain to decide when to act (kill a member, restart it) and what to assert.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner
from web3 import Web3

from fedledger.cli.main import app

REPO = Path(__file__).resolve().parents[1]
ANVIL = REPO / "node_modules" / ".bin" / "anvil"
CAST = REPO / "node_modules" / ".bin" / "cast"
FEDLEDGER = Path(sys.executable).parent / "fedledger"
# anvil's first well-known development account (public test key, funds the members)
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PASSWORD = "consortium-test-password"

MEMBERS = {
    "hospital-a": "trainer,aggregator,validator",
    "hospital-b": "trainer,aggregator",
    "hospital-c": "trainer,aggregator",
    "hospital-d": "trainer,validator",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def cli(*args: str) -> str:
    """Run a fedledger command in-process (admin commands); fail loudly with its output."""
    result = CliRunner().invoke(app, list(args))
    output = result.output
    if result.exit_code != 0:
        raise AssertionError(f"fedledger {' '.join(args)} exited {result.exit_code}: {output}")
    return output


@dataclass
class Consortium:
    """Four hospitals, their keys, a chain node, a blob server and one process per member."""

    root: Path
    chain: str  # "anvil" or "embedded"
    rpc_port: int = field(default_factory=free_port)
    store_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def rpc(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def store_url(self) -> str:
        return f"http://127.0.0.1:{self.store_port}"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def deployment(self) -> Path:
        return self.root / "deployment.json"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.log(name).parent.mkdir(exist_ok=True)
        handle = self.log(name).open("ab")
        env = dict(os.environ, FEDLEDGER_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        self.processes[name] = process
        return process

    # -- set-up -------------------------------------------------------------

    def create_members(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.password_file.write_text(PASSWORD + "\n")
        (self.root / "keys").mkdir(exist_ok=True)
        for name in MEMBERS:
            cli(
                "member",
                "new",
                name,
                "--keystore",
                str(self.root / "keys" / f"{name}.json"),
                "--card",
                str(self.root / "keys" / f"{name}.card.json"),
                "--password-file",
                str(self.password_file),
                "--light",
            )

    def addresses(self) -> dict[str, str]:
        return {
            name: json.loads((self.root / "keys" / f"{name}.card.json").read_text())["address"]
            for name in MEMBERS
        }

    def start_chain(self) -> None:
        if self.chain == "anvil":
            process = self.spawn("chain", [str(ANVIL), "--port", str(self.rpc_port), "--silent"])
            wait_for_port(self.rpc_port, process)
            w3 = Web3(Web3.HTTPProvider(self.rpc))
            dev = w3.eth.account.from_key(ANVIL_DEV_KEY)
            nonce = w3.eth.get_transaction_count(dev.address)
            for offset, address in enumerate(self.addresses().values()):
                tx = {
                    "to": address,
                    "value": 10**21,
                    "gas": 21000,
                    "gasPrice": w3.eth.gas_price * 2,
                    "nonce": nonce + offset,
                    "chainId": w3.eth.chain_id,
                }
                w3.eth.send_raw_transaction(dev.sign_transaction(tx).raw_transaction)
            for address in self.addresses().values():
                deadline = time.monotonic() + 10
                while w3.eth.get_balance(address) == 0 and time.monotonic() < deadline:
                    time.sleep(0.1)
        else:
            funds = [arg for address in self.addresses().values() for arg in ("--fund", address)]
            cli("chain", "init", str(self.root / "chain"), "--chain-id", "4242", *funds)
            process = self.spawn(
                "chain",
                [str(FEDLEDGER), "chain", "serve", str(self.root / "chain"), "--port", str(self.rpc_port)],
            )
            wait_for_port(self.rpc_port, process)

    def deploy(self) -> None:
        members = [
            arg
            for name, roles in MEMBERS.items()
            for arg in ("--member", f"{self.root / 'keys' / name}.card.json:{roles}")
        ]
        cli(
            "consortium",
            "deploy",
            "--rpc",
            self.rpc,
            "--keystore",
            str(self.root / "keys" / "hospital-a.json"),
            "--password-file",
            str(self.password_file),
            *members,
            "--admin",
            "hospital-a",
            "--admin",
            "hospital-b",
            "--admin",
            "hospital-c",
            "--threshold",
            "2",
            "--out",
            str(self.deployment),
        )

    def start_store(self) -> subprocess.Popen[bytes]:
        process = self.spawn(
            "store",
            [
                str(FEDLEDGER),
                "store",
                "serve",
                "--dir",
                str(self.root / "blobs"),
                "--rpc",
                self.rpc,
                "--deployment",
                str(self.deployment),
                "--port",
                str(self.store_port),
            ],
        )
        wait_for_port(self.store_port, process)
        return process

    def create_task(self, *, rounds: int, round_duration: int) -> int:
        config = self.root / "task.toml"
        config.write_text(
            f"""
participants = ["all"]
[task]
name = "consortium-e2e"
rounds = {rounds}
seed = 7
dataset = "breast_cancer"
num_classes = 2
[model]
name = "mlp"
kwargs = {{ in_features = 30, hidden = [16], num_classes = 2 }}
[training]
epochs = 1
batch_size = 16
lr = 0.05
momentum = 0.9
[aggregation]
rule = "fedavg"
max_update_norm = 100.0
[protocol]
committee_size = 3
quorum = 2
min_updates = 3
round_duration = {round_duration}
"""
        )
        common = [
            "--rpc",
            self.rpc,
            "--deployment",
            str(self.deployment),
            "--password-file",
            str(self.password_file),
        ]
        output = cli(
            "task",
            "propose",
            "--config",
            str(config),
            "--store",
            self.store_url,
            "--keystore",
            str(self.root / "keys" / "hospital-a.json"),
            "--params-out",
            str(self.root / "task-params.json"),
            *common,
        )
        proposal = output.split("task proposal ", 1)[1].split(":", 1)[0]
        cli("member", "approve", proposal, "--keystore", str(self.root / "keys" / "hospital-b.json"), *common)
        output = cli(
            "task",
            "create",
            "--params",
            str(self.root / "task-params.json"),
            "--keystore",
            str(self.root / "keys" / "hospital-a.json"),
            *common,
        )
        return int(output.strip().splitlines()[-1])

    def member_config(self, name: str, index: int) -> Path:
        path = self.root / f"{name}.toml"
        path.write_text(
            f"""
[member]
name = "{name}"
keystore = "keys/{name}.json"
password_file = "password"
[chain]
rpc_url = "{self.rpc}"
deployment = "deployment.json"
[store]
url = "{self.store_url}"
[data]
dataset = "breast_cancer"
seed = 7
shard_index = {index}
shard_count = {len(MEMBERS)}
partition = "dirichlet"
alpha = 1.0
[node]
poll_seconds = 0.5
"""
        )
        return path

    def start_member(self, name: str) -> subprocess.Popen[bytes]:
        index = list(MEMBERS).index(name)
        config = self.member_config(name, index)
        return self.spawn(name, [str(FEDLEDGER), "node", "--config", str(config), "--exit-when-done"])

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name)

    def wait_members(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                code = self.processes[name].wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"{name} did not finish in {timeout}s; log:\n{self.tail(name)}"
                ) from None
            assert code == 0, f"{name} exited {code}; log:\n{self.tail(name)}"

    def tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])

    def cast_call(self, signature: str, *args: str) -> str:
        deployment = json.loads(self.deployment.read_text())
        result = subprocess.run(
            [str(CAST), "call", deployment["training_task"], signature, *args, "--rpc-url", self.rpc],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()


def running(consortium: Consortium) -> Iterator[Consortium]:
    try:
        yield consortium
    finally:
        consortium.stop_all()
