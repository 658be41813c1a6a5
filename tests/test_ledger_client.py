"""Ledger client pieces that need no chain: parameter hashing, ABI decoding, error shaping, connecting."""

from __future__ import annotations

import itertools
import socket
import time

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError

from fedledger.errors import LedgerError, UsageError
from fedledger.ledger import Deployment, Ledger, TaskParams, connect_rpc
from fedledger.ledger.client import _ContractAbi, _revert_reason, round_ppm
from fedledger.ledger.contracts import load_artifact

ADDR = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"


def _params(**kw: object) -> TaskParams:
    base: dict[str, object] = {
        "spec_hash": b"\x01" * 32,
        "initial_model_hash": b"\x02" * 32,
        "num_rounds": 3,
        "participants": (ADDR.lower(),),
        "wrapped_keys": (b"\x03" * 92,),
        "committee_size": 1,
        "min_updates": 1,
        "quorum": 1,
        "round_duration": 60,
    }
    base.update(kw)
    return TaskParams(**base)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_params_hash_matches_abi_encoding_and_normalises_addresses() -> None:
    p = _params()
    assert p.participants == (ADDR,)
    batch = keccak(encode(["address[]", "bytes[]", "bytes32"], [[ADDR], [b"\x03" * 92], bytes(32)]))
    expected = keccak(
        encode(
            ["bytes32", "bytes32", "uint256", "uint256", "bytes32"] + ["uint256"] * 4,
            [b"\x01" * 32, b"\x02" * 32, 3, 1, batch, 1, 1, 1, 60],
        )
    )
    assert p.params_hash() == expected
    assert _params(num_rounds=4).params_hash() != expected


def test_participant_batches_chain_every_participant_into_the_hash() -> None:
    """Participants go on chain 128 per transaction; each batch commits to the next, so the params hash
    (through the first batch) covers all of them."""
    people = tuple(f"0x{i:040x}" for i in range(1, 301))
    keys = tuple(bytes([i % 256]) * 92 for i in range(300))
    p = _params(participants=people, wrapped_keys=keys)
    batches = p.batches()
    assert [(b.first, len(b.participants)) for b in batches] == [(0, 128), (128, 128), (256, 44)]
    assert batches[-1].next_commitment == bytes(32)
    for b, following in itertools.pairwise(batches):
        assert b.next_commitment == following.commitment()
    changed = _params(participants=people, wrapped_keys=(*keys[:299], b"\x00" * 92))
    assert changed.params_hash() != p.params_hash()  # the last wrapped key is covered
    assert p.abi_values()[3] == 300 and p.abi_values()[-1] == batches[1].commitment()


def test_params_validation() -> None:
    with pytest.raises(UsageError, match="spec_hash"):
        _params(spec_hash=b"\x01")
    with pytest.raises(UsageError, match="92 bytes"):
        _params(wrapped_keys=(b"\x00" * 93,))
    with pytest.raises(UsageError, match="wrapped keys"):
        _params(wrapped_keys=())
    many = tuple(f"0x{i:040x}" for i in range(1, 1026))
    with pytest.raises(UsageError, match="at most 1024 participants"):
        _params(participants=many, wrapped_keys=(b"",) * 1025)


def test_deployment_json_roundtrip_and_errors() -> None:
    d = Deployment(chain_id=7, consortium=ADDR, training_task=ADDR, deploy_block=3)
    assert Deployment.from_json(d.to_json()) == d
    with pytest.raises(UsageError, match="invalid deployment JSON"):
        Deployment.from_json('{"chain_id": 1}')


def test_abi_tables_cover_every_event_and_function() -> None:
    abi = _ContractAbi(load_artifact("TrainingTask").abi)
    names = {e.name for e in abi.events.values()}
    assert {"TaskCreated", "UpdateSubmitted", "AggregateProposed", "RoundFinalized", "MetricsPosted"} <= names
    f = abi.fn("submitUpdate")
    assert f.selector == keccak(text="submitUpdate(uint256,uint256,bytes32,uint256)")[:4]
    assert abi.fn("getTask").output_types == (
        "(bytes32,bytes32,uint256,uint256,uint256,uint256,uint256,uint256,address,uint256)",
    )
    with pytest.raises(UsageError, match="submitUpdate: invalid arguments"):
        f.encode(["one", 1, b"\x00" * 32, 1])


def test_revert_reason_shapes() -> None:
    data = "0x" + (keccak(text="Error(string)")[:4] + encode(["string"], ["not a member"])).hex()
    assert _revert_reason(ContractLogicError("execution reverted: not a member", data)) == "not a member"
    assert _revert_reason(ContractLogicError("execution reverted", {"data": data})) == "not a member"
    assert _revert_reason(RuntimeError("execution reverted: wrong round")) == "wrong round"
    assert _revert_reason(RuntimeError("execution reverted")) == "no reason given"
    assert _revert_reason(RuntimeError("nonce too low")) is None


def test_round_ppm() -> None:
    assert round_ppm(0.9123455) == 912346
    assert round_ppm(1.0) == 1_000_000
    assert round_ppm(0.0) == 0


def test_connect_rpc_unreachable_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(LedgerError, match=f"cannot reach Ethereum node at {url}") as info:
        connect_rpc(url, timeout=2)
    assert "\n" not in str(info.value)
    assert time.monotonic() - t0 < 10


def test_ledger_on_unreachable_node() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    w3 = Web3(HTTPProvider(url, exception_retry_configuration=None))
    dep = Deployment(chain_id=1, consortium=ADDR, training_task=ADDR, deploy_block=0)
    with pytest.raises(LedgerError, match=f"cannot reach Ethereum node at {url}: eth_chainId"):
        Ledger(w3, dep)
