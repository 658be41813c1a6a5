"""The embedded chain behaves like an Ethereum node and keeps everything across restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rlp
import vyper
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from fedledger.errors import UsageError
from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider, RpcError, serve_chain

CHAIN_ID = 4242
ALICE: LocalAccount = Account.from_key(b"\x01" * 32)
BOB: LocalAccount = Account.from_key(b"\x02" * 32)
FUNDS = 10**24

COUNTER_SOURCE = """
counter: public(uint256)

event Bumped:
    who: indexed(address)
    value: uint256

@external
def bump(x: uint256):
    assert x != 13, "unlucky"
    self.counter += x
    log Bumped(who=msg.sender, value=self.counter)
"""
BUMPED_TOPIC = "0x" + keccak(text="Bumped(address,uint256)").hex()


@pytest.fixture(scope="module")
def counter_bytecode() -> str:
    return str(vyper.compile_code(COUNTER_SOURCE, output_formats=["bytecode"])["bytecode"])


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[EmbeddedChain]:
    with EmbeddedChain.create(tmp_path / "chain", CHAIN_ID, {ALICE.address: FUNDS, BOB.address: FUNDS}) as c:
        yield c


def bump_data(x: int) -> HexStr:
    return HexStr("0x" + (keccak(text="bump(uint256)")[:4] + x.to_bytes(32, "big")).hex())


def signed(account: LocalAccount, nonce: int, data: str, to: str | None = None, gas: int = 300_000) -> HexStr:
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "gas": gas,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "value": 0,
        "data": data,
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    return HexStr("0x" + bytes(account.sign_transaction(tx).raw_transaction).hex())


def send(
    chain: EmbeddedChain, account: LocalAccount, data: str, to: str | None = None, gas: int = 300_000
) -> str:
    nonce = int(chain.rpc("eth_getTransactionCount", [account.address, "pending"]), 16)
    return str(chain.rpc("eth_sendRawTransaction", [signed(account, nonce, data, to, gas)]))


def deploy(chain: EmbeddedChain, bytecode: str) -> str:
    receipt = chain.rpc("eth_getTransactionReceipt", [send(chain, ALICE, bytecode)])
    assert receipt["status"] == "0x1"
    return str(receipt["contractAddress"])


def call_counter(chain: EmbeddedChain, address: str, block: str = "latest") -> int:
    selector = "0x" + keccak(text="counter()")[:4].hex()
    return int(chain.rpc("eth_call", [{"to": address, "data": selector}, block]), 16)


def block_number(chain: EmbeddedChain) -> int:
    return int(chain.rpc("eth_blockNumber", []), 16)


def test_state_survives_close_and_reopen(tmp_path: Path, counter_bytecode: str) -> None:
    path = tmp_path / "chain"
    with EmbeddedChain.create(path, CHAIN_ID, {ALICE.address: FUNDS}) as chain:
        address = deploy(chain, counter_bytecode)
        tx_hashes = [send(chain, ALICE, bump_data(x), address) for x in (2, 5)]
        before = {
            "block": chain.rpc("eth_getBlockByNumber", ["latest", True]),
            "balance": chain.rpc("eth_getBalance", [ALICE.address, "latest"]),
            "nonce": chain.rpc("eth_getTransactionCount", [ALICE.address, "latest"]),
            "receipts": [chain.rpc("eth_getTransactionReceipt", [h]) for h in tx_hashes],
            "logs": chain.rpc("eth_getLogs", [{"fromBlock": "0x0", "address": address}]),
            "slot0": chain.rpc("eth_getStorageAt", [address, "0x0", "latest"]),
            "code": chain.rpc("eth_getCode", [address, "latest"]),
        }
    assert before["nonce"] == "0x3"
    assert int(before["slot0"], 16) == 7
    assert len(before["logs"]) == 2

    with EmbeddedChain.open(path) as chain:
        assert chain.chain_id == CHAIN_ID
        assert block_number(chain) == 3
        assert chain.rpc("eth_getBlockByNumber", ["latest", True]) == before["block"]
        assert chain.rpc("eth_getBlockByHash", [before["block"]["hash"], True]) == before["block"]
        assert chain.rpc("eth_getTransactionByHash", [tx_hashes[1]]) == before["block"]["transactions"][0]
        assert chain.rpc("eth_getBalance", [ALICE.address, "latest"]) == before["balance"]
        assert chain.rpc("eth_getTransactionCount", [ALICE.address, "latest"]) == before["nonce"]
        assert [chain.rpc("eth_getTransactionReceipt", [h]) for h in tx_hashes] == before["receipts"]
        assert chain.rpc("eth_getLogs", [{"fromBlock": "0x0", "address": address}]) == before["logs"]
        assert chain.rpc("eth_getStorageAt", [address, "0x0", "latest"]) == before["slot0"]
        assert chain.rpc("eth_getCode", [address, "latest"]) == before["code"]
        assert call_counter(chain, address) == 7
        assert call_counter(chain, address, "0x2") == 2  # historical state is kept too
        send(chain, ALICE, bump_data(1), address)  # and the chain goes on from there
        assert call_counter(chain, address) == 8
        assert block_number(chain) == 4


def test_reverted_transaction_is_mined_with_status_zero(chain: EmbeddedChain, counter_bytecode: str) -> None:
    address = deploy(chain, counter_bytecode)
    tx_hash = send(chain, ALICE, bump_data(13), address, gas=100_000)
    receipt = chain.rpc("eth_getTransactionReceipt", [tx_hash])
    assert receipt["status"] == "0x0"
    assert receipt["blockNumber"] == hex(block_number(chain))
    assert int(receipt["gasUsed"], 16) > 21_000  # the sender paid for the failed execution
    assert chain.rpc("eth_getTransactionCount", [ALICE.address, "latest"]) == "0x2"
    assert call_counter(chain, address) == 0


def test_call_and_estimate_report_the_revert_reason_like_geth(
    chain: EmbeddedChain, counter_bytecode: str
) -> None:
    address = deploy(chain, counter_bytecode)
    call = {"from": ALICE.address, "to": address, "data": bump_data(13)}
    for method in ("eth_call", "eth_estimateGas"):
        with pytest.raises(RpcError) as info:
            chain.rpc(method, [call, "latest"])
        assert info.value.code == 3
        assert info.value.message == "execution reverted: unlucky"
        assert info.value.data is not None and info.value.data.startswith("0x08c379a0")
    gas = int(chain.rpc("eth_estimateGas", [{**call, "data": bump_data(1)}]), 16)
    assert 21_000 < gas < 100_000


def test_web3_provider_raises_contract_logic_error_on_revert(
    chain: EmbeddedChain, counter_bytecode: str
) -> None:
    w3 = Web3(EmbeddedProvider(chain))
    assert w3.is_connected()
    address = deploy(chain, counter_bytecode)
    with pytest.raises(ContractLogicError, match="unlucky"):
        w3.eth.call({"from": ALICE.address, "to": to_checksum_address(address), "data": bump_data(13)})
    with pytest.raises(Web3RPCError, match="nonce too low"):
        w3.eth.send_raw_transaction(signed(ALICE, 0, bump_data(1), address))


@pytest.mark.parametrize(
    ("nonce_shift", "message"),
    [(-1, "nonce too low"), (1, "nonce too high")],
)
def test_wrong_nonce_is_rejected_and_nothing_recorded(
    chain: EmbeddedChain, counter_bytecode: str, nonce_shift: int, message: str
) -> None:
    address = deploy(chain, counter_bytecode)
    height = block_number(chain)
    raw = signed(ALICE, 1 + nonce_shift, bump_data(1), address)
    with pytest.raises(RpcError, match=message) as info:
        chain.rpc("eth_sendRawTransaction", [raw])
    assert info.value.code == -32000
    assert block_number(chain) == height
    assert chain.rpc("eth_getTransactionCount", [ALICE.address, "pending"]) == "0x1"
    assert chain.rpc("eth_getTransactionByHash", ["0x" + keccak(hexstr=raw).hex()]) is None


def test_bad_signature_is_rejected_and_nothing_recorded(chain: EmbeddedChain) -> None:
    raw = bytes.fromhex(signed(ALICE, 0, "0x", BOB.address)[2:])
    fields = rlp.decode(raw[1:])
    fields[10] = b""  # r = 0: no key signs like that
    forged = "0x" + (raw[:1] + rlp.encode(fields)).hex()
    with pytest.raises(RpcError, match="invalid sender") as info:
        chain.rpc("eth_sendRawTransaction", [forged])
    assert info.value.code == -32000
    assert block_number(chain) == 0
    assert chain.rpc("eth_getTransactionByHash", ["0x" + keccak(hexstr=forged).hex()]) is None


def test_unfunded_sender_and_foreign_chain_id_are_rejected(chain: EmbeddedChain) -> None:
    pauper: LocalAccount = Account.from_key(b"\x03" * 32)
    with pytest.raises(RpcError, match="insufficient funds"):
        chain.rpc("eth_sendRawTransaction", [signed(pauper, 0, "0x", BOB.address)])
    foreign = ALICE.sign_transaction(
        {"chainId": 1, "nonce": 0, "gas": 21_000, "gasPrice": 10**10, "to": BOB.address, "value": 1}
    ).raw_transaction
    with pytest.raises(RpcError, match="invalid chain id"):
        chain.rpc("eth_sendRawTransaction", ["0x" + bytes(foreign).hex()])
    assert block_number(chain) == 0


def test_legacy_transaction_transfers_value(chain: EmbeddedChain) -> None:
    gas_price = int(chain.rpc("eth_gasPrice", []), 16)
    raw = ALICE.sign_transaction(
        {
            "chainId": CHAIN_ID,
            "nonce": 0,
            "gas": 21_000,
            "gasPrice": gas_price,
            "to": BOB.address,
            "value": 123,
        }
    ).raw_transaction
    tx_hash = chain.rpc("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
    assert chain.rpc("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"
    assert chain.rpc("eth_getTransactionByHash", [tx_hash])["type"] == "0x0"
    assert int(chain.rpc("eth_getBalance", [BOB.address, "latest"]), 16) == FUNDS + 123
    assert int(chain.rpc("eth_getBalance", [BOB.address, "0x0"]), 16) == FUNDS


def test_increase_time_moves_block_timestamps_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    with EmbeddedChain.create(path, CHAIN_ID, {}) as chain:
        start = int(chain.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        chain.rpc("evm_increaseTime", [7200])
        chain.rpc("evm_mine", [])
        moved = int(chain.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        assert moved >= start + 7200
    with EmbeddedChain.open(path) as chain:
        chain.rpc("evm_mine", [])
        assert int(chain.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) >= start + 7200


def test_fast_blocks_do_not_run_ahead_of_the_wall_clock(chain: EmbeddedChain) -> None:
    for _ in range(30):
        chain.rpc("evm_mine", [])
    timestamps = [int(chain.rpc("eth_getBlockByNumber", [hex(n), False])["timestamp"], 16) for n in range(31)]
    assert timestamps == sorted(timestamps)
    assert timestamps[-1] <= time.time() + 1  # 30 blocks in well under 30 s: no drift


def test_automine_off_batches_transactions_into_one_block(
    chain: EmbeddedChain, counter_bytecode: str
) -> None:
    address = deploy(chain, counter_bytecode)
    chain.rpc("evm_setAutomine", [False])
    hashes = [
        chain.rpc("eth_sendRawTransaction", [signed(ALICE, 1 + i, bump_data(1), address)]) for i in range(5)
    ]
    assert chain.rpc("eth_getTransactionReceipt", [hashes[0]]) is None
    assert chain.rpc("eth_getTransactionByHash", [hashes[0]])["blockHash"] is None
    assert chain.rpc("eth_getTransactionCount", [ALICE.address, "pending"]) == "0x6"
    assert chain.rpc("eth_getTransactionCount", [ALICE.address, "latest"]) == "0x1"
    assert block_number(chain) == 1
    chain.rpc("evm_mine", [])
    receipts = [chain.rpc("eth_getTransactionReceipt", [h]) for h in hashes]
    assert {r["blockNumber"] for r in receipts} == {"0x2"}
    assert [r["transactionIndex"] for r in receipts] == [hex(i) for i in range(5)]
    assert [int(r["logs"][0]["logIndex"], 16) for r in receipts] == list(range(5))
    assert call_counter(chain, address) == 5


def test_get_logs_filters_by_address_topics_and_block(chain: EmbeddedChain, counter_bytecode: str) -> None:
    address = deploy(chain, counter_bytecode)
    send(chain, ALICE, bump_data(1), address)
    send(chain, BOB, bump_data(1), address)
    send(chain, ALICE, bump_data(1), address)

    def topic_of(account: LocalAccount) -> str:
        return "0x" + bytes(12).hex() + account.address[2:].lower()

    def logs(**flt: Any) -> list[dict[str, Any]]:
        query = flt if "blockHash" in flt else {"fromBlock": "earliest", **flt}
        return list(chain.rpc("eth_getLogs", [query]))

    assert len(logs()) == 3
    assert len(logs(address=[address, BOB.address])) == 3
    assert logs(address=BOB.address) == []
    assert len(logs(topics=[BUMPED_TOPIC, topic_of(ALICE)])) == 2
    assert len(logs(topics=[None, [topic_of(ALICE), topic_of(BOB)]])) == 3
    assert logs(topics=[None, None, BUMPED_TOPIC]) == []
    only_bob = logs(topics=[None, topic_of(BOB)])
    assert [entry["blockNumber"] for entry in only_bob] == ["0x3"]
    assert logs(fromBlock="0x3", toBlock="0x3") == only_bob
    assert logs(blockHash=only_bob[0]["blockHash"]) == only_bob
    assert only_bob[0]["data"] == "0x" + (2).to_bytes(32, "big").hex()


def test_unknown_method_and_bad_params(chain: EmbeddedChain) -> None:
    with pytest.raises(RpcError) as info:
        chain.rpc("eth_frobnicate", [])
    assert info.value.code == -32601
    with pytest.raises(RpcError) as info:
        chain.rpc("eth_getBalance", ["0x1234", "latest"])
    assert info.value.code == -32602
    assert chain.rpc("eth_getBlockByNumber", ["0x99", False]) is None
    assert chain.rpc("eth_getTransactionReceipt", ["0x" + "ab" * 32]) is None
    assert chain.rpc("eth_accounts", []) == [] and chain.rpc("eth_syncing", []) is False


def test_http_server_serves_web3_and_batches(chain: EmbeddedChain, counter_bytecode: str) -> None:
    server = serve_chain(chain, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        w3 = Web3(HTTPProvider(url))
        assert w3.eth.chain_id == CHAIN_ID
        assert w3.eth.get_balance(ALICE.address) == FUNDS
        address = to_checksum_address(deploy(chain, counter_bytecode))
        tx_hash = w3.eth.send_raw_transaction(signed(ALICE, 1, bump_data(3), address))
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=5)
        assert receipt["status"] == 1
        logs = w3.eth.get_logs({"fromBlock": 0, "address": address})
        assert len(logs) == 1 and logs[0]["transactionHash"] == tx_hash
        with pytest.raises(ContractLogicError, match="unlucky"):
            w3.eth.call({"to": address, "data": bump_data(13)})

        def post(body: bytes) -> Any:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())

        batch = post(
            json.dumps(
                [
                    {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
                    {"jsonrpc": "2.0", "id": 2, "method": "no_such_method", "params": []},
                ]
            ).encode()
        )
        assert batch[0] == {"jsonrpc": "2.0", "id": 1, "result": "0x2"}
        assert batch[1]["error"]["code"] == -32601
        assert post(b"{not json")["error"]["code"] == -32700
    finally:
        server.shutdown()
        server.server_close()


def test_open_refuses_a_directory_without_a_chain(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"holds no fedledger chain \(chain.sqlite missing\)"):
        EmbeddedChain.open(tmp_path)


def test_create_refuses_an_existing_chain_and_a_second_handle(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    with EmbeddedChain.create(path, CHAIN_ID, {}), pytest.raises(UsageError, match="in use"):
        EmbeddedChain.open(path)
    with pytest.raises(UsageError, match="already holds"):
        EmbeddedChain.create(path, CHAIN_ID, {})


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from eth_account import Account
    from fedledger.ledger.chain import EmbeddedChain

    alice = Account.from_key(b"\\x01" * 32)
    chain = EmbeddedChain.create(Path(sys.argv[1]), 4242, {alice.address: 10**24})
    nonce = 0
    while True:
        tx = {"type": 2, "chainId": 4242, "nonce": nonce, "gas": 21000, "maxFeePerGas": 10**10,
              "maxPriorityFeePerGas": 1, "to": alice.address, "value": 1}
        chain.rpc("eth_sendRawTransaction", ["0x" + bytes(alice.sign_transaction(tx).raw_transaction).hex()])
        nonce += 1
        print(nonce, flush=True)
    """
)


def test_kill_9_leaves_the_last_fully_mined_block(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    script = tmp_path / "miner.py"
    script.write_text(CRASH_SCRIPT)
    miner = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert miner.stdout is not None
        for line in miner.stdout:
            if int(line) >= 40:
                break
        miner.kill()  # SIGKILL, mid-way through some block
    finally:
        miner.kill()
        miner.wait()
    with EmbeddedChain.open(path) as chain:
        height = block_number(chain)
        assert height >= 40
        # one transaction per block: the nonce, the receipts and the index agree with the head
        assert int(chain.rpc("eth_getTransactionCount", [ALICE.address, "latest"]), 16) == height
        last = chain.rpc("eth_getBlockByNumber", ["latest", False])
        assert chain.rpc("eth_getTransactionReceipt", [last["transactions"][0]])["blockNumber"] == hex(height)
        nonce = height
        raw = ALICE.sign_transaction(
            {
                "chainId": CHAIN_ID,
                "nonce": nonce,
                "gas": 21_000,
                "gasPrice": 10**10,
                "to": BOB.address,
                "value": 1,
            }
        ).raw_transaction
        chain.rpc("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
        assert block_number(chain) == height + 1
