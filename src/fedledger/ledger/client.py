"""The ledger client: every read and write fedledger makes to the Consortium and TrainingTask contracts.

Only standard JSON-RPC goes through the given ``Web3`` object, so the same code runs against the
embedded chain, anvil, geth or Besu. Sending is built for volume (an in-process simulation sends
thousands of transactions): the ABI is parsed once, calldata is encoded with eth_abi, transactions are
signed locally with a cached chain id, fee and per-sender nonce, and gas limits are fixed per function
instead of estimated.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import EncodingError
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3

from fedledger.errors import LedgerError, TransactionRevertedError, UsageError
from fedledger.ledger.contracts import load_artifact
from fedledger.ledger.types import (
    Deployment,
    LedgerEvent,
    MemberInfo,
    Phase,
    ProposalInfo,
    ProposalKind,
    Role,
    Submission,
    TaskInfo,
    TaskParams,
    TaskState,
    TxResult,
    mask_of_words,
    words_of,
)

__all__ = ["Ledger", "endpoint_of"]

CONSORTIUM = "Consortium"
TRAINING_TASK = "TrainingTask"
ZERO32 = b"\x00" * 32
PPM = 1_000_000

# Fixed gas limits: generous multiples of what the functions use (see tests/test_contracts.py), so no
# eth_estimateGas round trip is needed. Functions whose cost grows with the participant count add a
# per-participant term (for createTask and addParticipants: per participant of the batch sent).
GAS_LIMITS: dict[str, int] = {
    "propose": 600_000,
    "approve": 500_000,
    "createTask": 800_000,
    "addParticipants": 400_000,
    "registerDataset": 300_000,
    "submitUpdate": 250_000,
    "proposeAggregate": 400_000,
    "reopenRound": 150_000,
    "postMetrics": 200_000,
}
GAS_PER_PARTICIPANT: dict[str, int] = {"createTask": 100_000, "addParticipants": 100_000, "proposeAggregate": 1_000}
GAS_PER_HISTOGRAM_BIN = 1_500
#: Founding members per Consortium deployment or bootstrap transaction (Consortium.vy MAX_BOOTSTRAP).
BOOTSTRAP_BATCH = 64
_BOOTSTRAP_TYPES = ["address[]", "string[]", "uint8[]", "bytes32[]", "bytes32"]

_T = TypeVar("_T")


# --------------------------------------------------------------------------- ABI codec

Converter = Callable[[Any], Any]


def _identity(v: Any) -> Any:
    return v


def _checksum(v: Any) -> Any:
    return to_checksum_address(v)


def _type_string(param: dict[str, Any]) -> str:
    """Canonical ABI type of one parameter, tuples spelled out as selectors and eth_abi need."""
    t: str = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(_type_string(c) for c in param["components"])
        return f"({inner}){t[len('tuple') :]}"
    return t


def _converter(param: dict[str, Any]) -> Converter:
    """A function that checksums every address inside a decoded value of this parameter."""
    t: str = param["type"]
    if t.endswith("]"):
        conv = _converter(dict(param, type=t[: t.rindex("[")]))
        if conv is _identity:
            return _identity
        return lambda v: tuple(conv(x) for x in v)
    if t == "tuple":
        convs = [_converter(c) for c in param["components"]]
        if all(c is _identity for c in convs):
            return _identity
        return lambda v: tuple(c(x) for c, x in zip(convs, v, strict=True))
    return _checksum if t == "address" else _identity


@dataclass(frozen=True)
class _Function:
    name: str
    selector: bytes
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    output_converters: tuple[Converter, ...]

    def encode(self, args: Sequence[Any]) -> bytes:
        try:
            return self.selector + abi_encode(list(self.input_types), list(args))
        except (EncodingError, TypeError, ValueError, OverflowError) as e:
            raise UsageError(f"{self.name}: invalid arguments: {e}") from e

    def decode(self, data: bytes) -> Any:
        """The single return value, or a tuple when the function returns several."""
        values = abi_decode(list(self.output_types), data)
        out = tuple(c(v) for c, v in zip(self.output_converters, values, strict=True))
        return out[0] if len(out) == 1 else out


@dataclass(frozen=True)
class _Event:
    name: str
    names: tuple[str, ...]
    indexed: tuple[bool, ...]
    types: tuple[str, ...]
    converters: tuple[Converter, ...]

    def decode(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any]:
        data_types = [t for t, ix in zip(self.types, self.indexed, strict=True) if not ix]
        data_values = iter(abi_decode(data_types, data))
        topic_iter = iter(topics[1:])
        args: dict[str, Any] = {}
        for name, ix, typ, conv in zip(self.names, self.indexed, self.types, self.converters, strict=True):
            if ix:
                raw = bytes(next(topic_iter))
                # An indexed dynamic value is stored as its hash; keep the hash.
                dynamic = typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("(")
                value = raw if dynamic else abi_decode([typ], raw)[0]
            else:
                value = next(data_values)
            args[name] = conv(value)
        return args


class _ContractAbi:
    """Lookup tables for one contract, parsed once: functions by name, events by topic0."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self.functions: dict[str, _Function] = {}
        self.events: dict[bytes, _Event] = {}
        self.constructor_types: tuple[str, ...] = ()
        for item in abi:
            kind = item.get("type")
            if kind == "function":
                ins = tuple(_type_string(p) for p in item["inputs"])
                outs = tuple(_type_string(p) for p in item.get("outputs", []))
                self.functions[item["name"]] = _Function(
                    name=item["name"],
                    selector=keccak(text=f"{item['name']}({','.join(ins)})")[:4],
                    input_types=ins,
                    output_types=outs,
                    output_converters=tuple(_converter(p) for p in item.get("outputs", [])),
                )
            elif kind == "event":
                types = tuple(_type_string(p) for p in item["inputs"])
                self.events[keccak(text=f"{item['name']}({','.join(types)})")] = _Event(
                    name=item["name"],
                    names=tuple(p["name"] for p in item["inputs"]),
                    indexed=tuple(bool(p.get("indexed")) for p in item["inputs"]),
                    types=types,
                    converters=tuple(_converter(p) for p in item["inputs"]),
                )
            elif kind == "constructor":
                self.constructor_types = tuple(_type_string(p) for p in item["inputs"])

    def fn(self, name: str) -> _Function:
        return self.functions[name]

    def encode_constructor(self, args: Sequence[Any]) -> bytes:
        try:
            return abi_encode(list(self.constructor_types), list(args))
        except (EncodingError, TypeError, ValueError, OverflowError) as e:
            raise UsageError(f"constructor: invalid arguments: {e}") from e


# --------------------------------------------------------------------------- RPC plumbing


def endpoint_of(w3: Web3) -> str:
    """A human label for the node behind ``w3`` (its URL when it has one)."""
    uri = getattr(w3.provider, "endpoint_uri", None)
    return str(uri) if uri else type(w3.provider).__name__


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


_ERROR_SELECTOR = keccak(text="Error(string)")[:4]
_REVERT_RE = re.compile(r"(?:execution )?reverted:?\s*(.*)", re.IGNORECASE | re.DOTALL)


def _revert_reason(e: BaseException) -> str | None:
    """The revert reason carried by an eth_call error, or None when the error is not a revert.

    Nodes disagree on the shape: geth/anvil send the Error(string) ABI data, web3 raises
    ContractLogicError, eth-tester raises its own TransactionFailed; all say "execution reverted".
    """
    data = getattr(e, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, (str, bytes)):
        raw = bytes.fromhex(data[2:]) if isinstance(data, str) and data.startswith("0x") else data
        if isinstance(raw, bytes) and raw[:4] == _ERROR_SELECTOR:
            try:
                return str(abi_decode(["string"], raw[4:])[0])
            except Exception:  # malformed revert data: fall back to the message
                pass
    msg = str(getattr(e, "message", None) or e)
    if "revert" not in msg.lower():
        return None
    m = _REVERT_RE.search(msg)
    reason = m.group(1).strip().strip("'\"") if m else msg
    return reason or "no reason given"


def _is_connection_error(e: BaseException) -> bool:
    # requests' and aiohttp's errors are OSError subclasses; web3 wraps some in ProviderConnectionError.
    return isinstance(e, OSError) or type(e).__name__ in ("ProviderConnectionError", "TimeExhausted")


class _RpcResponseError(Exception):
    """A JSON-RPC error response, as the raw path sees it (``data`` and ``message`` as the node sent them)."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.message = str(error.get("message", "error"))
        self.data = error.get("data")
        self.code = error.get("code")
        super().__init__(self.message)


_RECEIPT_INTS = ("status", "gasUsed", "blockNumber", "cumulativeGasUsed", "transactionIndex", "type")
_LOG_INTS = ("blockNumber", "logIndex", "transactionIndex")


def _receipt_from_wire(raw: dict[str, Any]) -> dict[str, Any]:
    """A receipt as JSON-RPC sends it, with the fields the client reads as ints and bytes."""
    receipt = dict(raw)
    for key in _RECEIPT_INTS:
        if isinstance(receipt.get(key), str):
            receipt[key] = int(receipt[key], 16)
    receipt["transactionHash"] = HexBytes(raw["transactionHash"])
    logs = []
    for entry in raw.get("logs") or []:
        log = dict(entry)
        for key in _LOG_INTS:
            if isinstance(log.get(key), str):
                log[key] = int(log[key], 16)
        log["topics"] = [HexBytes(t) for t in entry.get("topics", [])]
        log["data"] = HexBytes(entry.get("data", "0x"))
        log["transactionHash"] = HexBytes(entry["transactionHash"])
        logs.append(log)
    receipt["logs"] = logs
    return receipt


class _TxEngine:
    """Signs and sends transactions and performs calls; shared by a Ledger and its deployment step.

    The calls of every round (eth_call, eth_sendRawTransaction, eth_getTransactionReceipt,
    eth_blockNumber) go straight to the provider as JSON-RPC: web3's middleware and result formatting
    cost as much CPU as the embedded EVM's execution of a view call. The rest goes through web3.
    """

    CONNECT_RETRIES = 3

    def __init__(self, w3: Web3, *, receipt_timeout: float = 120.0) -> None:
        self.w3 = w3
        self.endpoint = endpoint_of(w3)
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._sender_locks: dict[str, threading.Lock] = {}
        self._nonces: dict[str, int] = {}
        self._fees: dict[str, int] | None = None
        self._chain_id: int | None = None
        self._block_gas_limit: int | None = None
        self.tx_count = 0
        self.gas_used = 0

    # -- generic RPC wrapper

    def _request(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC request straight to the provider; an error response raises (revert data kept)."""
        response = self.w3.provider.make_request(cast(Any, method), params)
        error = response.get("error")
        if error:
            raise _RpcResponseError(cast(dict[str, Any], error))
        return response.get("result")

    def raw(self, method: str, params: list[Any], what: str) -> Any:
        """``_request`` with ``rpc``'s retries and errors."""
        return self.rpc(what, partial(self._request, method, params))

    def rpc(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run one RPC; retry briefly on connection errors only; turn every failure into LedgerError."""
        delay = 0.1
        for attempt in range(self.CONNECT_RETRIES):
            try:
                return fn()
            except (LedgerError, UsageError):
                raise
            except Exception as e:
                if _is_connection_error(e):
                    if attempt + 1 < self.CONNECT_RETRIES:
                        time.sleep(delay)
                        delay *= 2
                        continue
                    raise LedgerError(
                        f"cannot reach Ethereum node at {self.endpoint}: {what}: {_one_line(e)}"
                    ) from e
                raise LedgerError(f"{what} failed at {self.endpoint}: {_one_line(e)}") from e
        raise AssertionError("unreachable")

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.rpc("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def block_gas_limit(self) -> int:
        if self._block_gas_limit is None:
            block = self.rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
            self._block_gas_limit = int(block["gasLimit"])
        return self._block_gas_limit

    def fees(self, refresh: bool = False) -> dict[str, int]:
        """EIP-1559 fee fields when the chain has a base fee, else a legacy gas price; cached."""
        if self._fees is None or refresh:
            block = self.rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
            base = block.get("baseFeePerGas")
            if base is not None:
                try:
                    tip = int(self.w3.eth.max_priority_fee)
                except Exception:  # optional RPC; PoA chains often lack it
                    tip = 10**9
                self._fees = {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}
            else:
                self._fees = {"gasPrice": int(self.rpc("eth_gasPrice", lambda: self.w3.eth.gas_price))}
        return self._fees

    # -- calls

    def call(
        self, to: str, data: bytes, what: str, *, sender: str | None = None, block: Any = "latest"
    ) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
        if sender is not None:
            tx["from"] = sender
        tag = hex(block) if isinstance(block, int) else block
        try:
            result = self.raw("eth_call", [tx, tag], what)
            return bytes.fromhex(str(result)[2:])
        except LedgerError as e:
            reason = _revert_reason(e.__cause__) if e.__cause__ is not None else None
            if reason is not None:
                raise LedgerError(f"{what} reverted: {reason}") from e.__cause__
            raise

    # -- transactions

    def _sender_lock(self, address: str) -> threading.Lock:
        with self._lock:
            lock = self._sender_locks.get(address)
            if lock is None:
                lock = self._sender_locks[address] = threading.Lock()
            return lock

    def _next_nonce(self, address: str) -> int:
        nonce = self._nonces.get(address)
        if nonce is None:
            nonce = int(
                self.rpc(
                    "eth_getTransactionCount",
                    lambda: self.w3.eth.get_transaction_count(cast(Any, address), "pending"),
                )
            )
        self._nonces[address] = nonce + 1
        return nonce

    def send(self, account: LocalAccount, to: str | None, data: bytes, gas: int, what: str) -> dict[str, Any]:
        """Sign, send and wait for one transaction; return its receipt or raise on revert."""
        address = account.address
        gas = min(gas, self.block_gas_limit())
        with self._sender_lock(address):
            tx_hash = self._sign_and_send(account, to, data, gas, what)
        receipt = self._wait_receipt(tx_hash, what)
        used = int(receipt["gasUsed"])
        with self._lock:
            self.tx_count += 1
            self.gas_used += used
        if int(receipt["status"]) != 1:
            reason = self._replay_reason(address, to, data, gas, receipt)
            raise TransactionRevertedError(f"{what} reverted: {reason}", reason)
        return receipt

    def _sign_and_send(
        self, account: LocalAccount, to: str | None, data: bytes, gas: int, what: str
    ) -> bytes:
        address = account.address
        retried_fee = retried_nonce = False
        while True:
            tx: dict[str, Any] = {
                "chainId": self.chain_id,
                "nonce": self._next_nonce(address),
                "gas": gas,
                "value": 0,
                "data": data,
                **self.fees(),
            }
            if to is not None:
                tx["to"] = to
            signed = account.sign_transaction(tx)
            raw = bytes(signed.raw_transaction)
            try:
                self.raw("eth_sendRawTransaction", ["0x" + raw.hex()], f"{what}: eth_sendRawTransaction")
                return bytes(signed.hash)
            except LedgerError as e:
                self._nonces.pop(address, None)  # resync from the node next time
                msg = str(e).lower()
                if "already known" in msg or "known transaction" in msg:
                    return bytes(signed.hash)  # an earlier attempt did reach the node
                cause = e.__cause__
                reason = _revert_reason(cause) if cause is not None else None
                if reason is not None:  # some nodes refuse reverting transactions at submission
                    raise TransactionRevertedError(f"{what} reverted: {reason}", reason) from e
                if not retried_nonce and "nonce" in msg:
                    retried_nonce = True
                    continue
                if not retried_fee and ("underpriced" in msg or "fee" in msg):
                    retried_fee = True
                    self.fees(refresh=True)
                    continue
                raise

    def _wait_receipt(self, tx_hash: bytes, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.receipt_timeout
        delay = 0.002
        while True:
            try:
                receipt = self._request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
                if receipt:
                    return _receipt_from_wire(cast(dict[str, Any], receipt))
            except Exception as e:
                if not _is_connection_error(e):
                    raise LedgerError(
                        f"{what}: eth_getTransactionReceipt failed at {self.endpoint}: {_one_line(e)}"
                    ) from e
            if time.monotonic() > deadline:
                raise LedgerError(
                    f"{what}: transaction 0x{tx_hash.hex()} not mined within {self.receipt_timeout:.0f}s "
                    f"at {self.endpoint}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _replay_reason(
        self, sender: str, to: str | None, data: bytes, gas: int, receipt: dict[str, Any]
    ) -> str:
        """Re-run a failed transaction as eth_call at its block to learn the revert reason."""
        tx: dict[str, Any] = {"from": sender, "data": data, "gas": gas}
        if to is not None:
            tx["to"] = to
        try:
            self.w3.eth.call(cast(Any, tx), int(receipt["blockNumber"]), ccip_read_enabled=False)
        except Exception as e:
            reason = _revert_reason(e)
            if reason is not None:
                return reason
            return f"unknown ({_one_line(e)})"
        if int(receipt["gasUsed"]) >= gas:
            return "out of gas"
        return "unknown (replay did not revert)"


# --------------------------------------------------------------------------- the client


def _hex(h: Any) -> str:
    b = bytes(h)
    return "0x" + b.hex()


def _b32(value: bytes, what: str) -> bytes:
    # Only byte strings: bytes(n) of an int would allocate n zero bytes, bytes(str) would raise TypeError.
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UsageError(f"{what} must be 32 bytes, got {type(value).__name__} {value!r:.60}")
    b = bytes(value)
    if len(b) != 32:
        raise UsageError(f"{what} must be 32 bytes, got {len(b)}")
    return b


def _ints(values: Sequence[int], what: str) -> list[int]:
    """A list of Python ints for an ABI array argument; anything else is a UsageError, not a TypeError."""
    if isinstance(values, str | bytes | bytearray) or not isinstance(values, Sequence):
        raise UsageError(f"{what} must be a sequence of integers, got {type(values).__name__}")
    out: list[int] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise UsageError(f"{what} must hold integers, got {type(value).__name__} {value!r:.60}")
        out.append(int(value))
    return out


def _codes(reasons: Sequence[int]) -> bytes:
    """Exclusion reason codes as the contract takes them: one byte per participant."""
    values = _ints(reasons, "reasons")
    bad = next((v for v in values if not 0 <= v <= 255), None)
    if bad is not None:
        raise UsageError(f"reasons must be codes 0..255, got {bad}")
    return bytes(values)


def _word32(value: int) -> bytes:
    """An indexed uint256 argument as its log topic."""
    return int(value).to_bytes(32, "big")


def _addr(value: str, what: str = "address") -> str:
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError) as e:
        raise UsageError(f"invalid {what} {value!r}") from e


def _opt32(b: bytes) -> bytes | None:
    return None if b == ZERO32 else bytes(b)


def _plain_args(args: dict[str, Any]) -> dict[str, Any]:
    """Event arguments in the client's vocabulary: an ``included`` bitmap (256-bit words on chain) as
    one int, bit i for participant i; ``reasons`` (one byte per participant on chain) as a tuple of ints."""
    if isinstance(args.get("included"), tuple | list):
        args["included"] = mask_of_words(args["included"])
    if isinstance(args.get("reasons"), bytes | bytearray):
        args["reasons"] = tuple(args["reasons"])
    return args


def _mask_words(mask: Any, count: int, what: str) -> list[int]:
    """``mask`` as 256-bit words, at least ``count`` of them (more if it has higher bits set)."""
    if isinstance(mask, bool) or not isinstance(mask, numbers.Integral) or int(mask) < 0:
        raise UsageError(f"{what} must be a non-negative integer bitmap, got {type(mask).__name__} {mask!r:.60}")
    mask = int(mask)
    return words_of(mask, max(count, -(-mask.bit_length() // 256)))


def _words_for(num_participants: int) -> int:
    return -(-num_participants // 256)


class Ledger:
    """Typed access to one deployment of the fedledger contracts.

    Thread-safe: actors of an in-process simulation may share one instance. ``tx_count`` and
    ``gas_used`` count the transactions this instance sent (for benchmarks).
    """

    def __init__(self, w3: Web3, deployment: Deployment, *, receipt_timeout: float = 120.0) -> None:
        self._init(w3, deployment, _TxEngine(w3, receipt_timeout=receipt_timeout))
        if self._tx.chain_id != deployment.chain_id:
            raise LedgerError(
                f"node at {self._tx.endpoint} is chain {self._tx.chain_id}, "
                f"but the deployment is on chain {deployment.chain_id}"
            )

    def _init(self, w3: Web3, deployment: Deployment, engine: _TxEngine) -> None:
        self.w3 = w3
        self.deployment = deployment
        self._tx = engine
        self._view_block = -1
        self._views: dict[tuple[Any, ...], Any] = {}
        self._abi = {CONSORTIUM: _abi(CONSORTIUM), TRAINING_TASK: _abi(TRAINING_TASK)}
        self._address = {
            CONSORTIUM: to_checksum_address(deployment.consortium),
            TRAINING_TASK: to_checksum_address(deployment.training_task),
        }
        self._by_address = {a.lower(): name for name, a in self._address.items()}
        self._task_cache: dict[int, TaskInfo] = {}
        self._wrapped_keys: dict[int, dict[str, bytes]] = {}
        # Answers that never change once given: a finalised round's model, a round's committee.
        self._final: dict[tuple[Any, ...], Any] = {}
        self._now_block = -1
        self._now = 0

    # -- deployment

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        deployer: LocalAccount,
        *,
        admins: Sequence[str],
        threshold: int,
        members: Sequence[tuple[str, str, int, bytes]],
        receipt_timeout: float = 120.0,
    ) -> Ledger:
        """Deploy a Consortium (bootstrapped with ``members``) and a TrainingTask bound to it.

        Founding members beyond the first BOOTSTRAP_BATCH follow in ``bootstrap`` transactions, each
        batch hash-chained to the next so the constructor commits to all of them.
        """
        engine = _TxEngine(w3, receipt_timeout=receipt_timeout)
        consortium_abi = _abi(CONSORTIUM)
        founders = [
            (_addr(m[0], "member address"), m[1], int(m[2]), _b32(m[3], f"enc_key of {m[1]!r}")) for m in members
        ]
        batches = _bootstrap_batches(founders)
        args = (
            [_addr(a, "admin address") for a in admins],
            threshold,
            *batches[0],
        )
        c_receipt = _deploy_contract(engine, deployer, CONSORTIUM, consortium_abi.encode_constructor(args))
        consortium = to_checksum_address(c_receipt["contractAddress"])
        bootstrap = consortium_abi.fn("bootstrap")
        for batch in batches[1:]:
            _send_estimated(engine, deployer, consortium, bootstrap.encode(batch), "bootstrap")
        t_receipt = _deploy_contract(
            engine, deployer, TRAINING_TASK, _abi(TRAINING_TASK).encode_constructor([consortium])
        )
        deployment = Deployment(
            chain_id=engine.chain_id,
            consortium=consortium,
            training_task=to_checksum_address(t_receipt["contractAddress"]),
            deploy_block=int(c_receipt["blockNumber"]),
        )
        ledger = cls.__new__(cls)
        ledger._init(w3, deployment, engine)
        return ledger

    # -- stats

    @property
    def tx_count(self) -> int:
        return self._tx.tx_count

    @property
    def gas_used(self) -> int:
        return self._tx.gas_used

    # -- low level

    def _call(self, contract: str, fn: str, *args: Any) -> Any:
        """A view call, answered from a cache while the chain has not moved.

        Contract state changes only with a new block, so within one block every actor asking the same
        question (each trainer reads the task's state on every turn) gets the answer of one ``eth_call``;
        ``eth_blockNumber`` costs a fiftieth of a view call on the embedded chain.
        """
        block = self.block_number()
        if block != self._view_block:
            self._views = {}
            self._view_block = block
        key = (contract, fn, *args)
        try:
            return self._views[key]
        except (KeyError, TypeError):
            pass
        f = self._abi[contract].fn(fn)
        out = self._tx.call(self._address[contract], f.encode(args), f"{contract}.{fn}")
        value = f.decode(out)
        with contextlib.suppress(TypeError):  # unhashable arguments are simply not cached
            self._views[key] = value
        return value

    def _transact(
        self, sender: LocalAccount, contract: str, fn: str, args: Sequence[Any], gas: int
    ) -> TxResult:
        f = self._abi[contract].fn(fn)
        receipt = self._tx.send(sender, self._address[contract], f.encode(args), gas, fn)
        return TxResult(
            tx_hash=_hex(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=tuple(self._decode_logs(receipt.get("logs", []))),
        )

    def _decode_logs(self, logs: Sequence[Any]) -> list[LedgerEvent]:
        out: list[LedgerEvent] = []
        for log in logs:
            contract = self._by_address.get(str(log["address"]).lower())
            if contract is None or not log["topics"]:
                continue
            ev = self._abi[contract].events.get(bytes(log["topics"][0]))
            if ev is None:
                continue
            out.append(
                LedgerEvent(
                    contract=contract,
                    name=ev.name,
                    args=_plain_args(ev.decode([bytes(t) for t in log["topics"]], bytes(log["data"]))),
                    block_number=int(log["blockNumber"]),
                    tx_hash=_hex(log["transactionHash"]),
                    log_index=int(log["logIndex"]),
                )
            )
        return out

    @staticmethod
    def _event_arg(result: TxResult, name: str, arg: str) -> Any:
        for ev in result.events:
            if ev.name == name:
                return ev.args[arg]
        raise LedgerError(f"transaction {result.tx_hash} emitted no {name} event")

    # -- chain reads

    @property
    def chain_id(self) -> int:
        return self._tx.chain_id

    def block_number(self) -> int:
        return int(self._tx.raw("eth_blockNumber", [], "eth_blockNumber"), 16)

    def now(self) -> int:
        """Timestamp of the latest block: the clock the contracts' deadlines use."""
        number = self.block_number()
        if number != self._now_block:  # a block's timestamp is fixed: one read per block
            block = self._tx.raw("eth_getBlockByNumber", [hex(number), False], "eth_getBlockByNumber")
            self._now, self._now_block = int(block["timestamp"], 16), number
        return self._now

    # -- consortium reads

    def member(self, address: str) -> MemberInfo | None:
        """The member record, also for removed members (active=False); None if never a member."""
        a = _addr(address)
        name, roles, enc_key, active = self._call(CONSORTIUM, "member", a)
        if not active and not name and roles == 0 and enc_key == ZERO32:
            return None
        return MemberInfo(
            address=a, name=name, roles=Role(roles), enc_key=bytes(enc_key), active=bool(active)
        )

    def members(self) -> list[MemberInfo]:
        """Every address ever admitted, in admission order (removed ones with active=False)."""
        out: list[MemberInfo] = []
        for i in range(int(self._call(CONSORTIUM, "memberCount"))):
            info = self.member(self._call(CONSORTIUM, "memberAt", i))
            if info is not None:
                out.append(info)
        return out

    def is_admin(self, address: str) -> bool:
        return bool(self._call(CONSORTIUM, "isAdmin", _addr(address)))

    def admins(self) -> tuple[str, ...]:
        return tuple(self._call(CONSORTIUM, "admins"))

    def threshold(self) -> int:
        return int(self._call(CONSORTIUM, "threshold"))

    def task_approved(self, params: TaskParams) -> bool:
        return bool(self._call(CONSORTIUM, "taskApproved", params.params_hash()))

    def proposal_count(self) -> int:
        return int(self._call(CONSORTIUM, "proposalCount"))

    def proposal(self, proposal_id: int) -> ProposalInfo:
        kind, proposer, target, name, roles, enc_key, params_hash, approvals, executed = self._call(
            CONSORTIUM, "proposal", proposal_id
        )
        return ProposalInfo(
            proposal_id=proposal_id,
            kind=ProposalKind(kind),
            proposer=proposer,
            target=target,
            name=name,
            roles=Role(roles),
            enc_key=bytes(enc_key),
            params_hash=bytes(params_hash),
            approvals=int(approvals),
            executed=bool(executed),
        )

    # -- task reads

    def task_count(self) -> int:
        return int(self._call(TRAINING_TASK, "taskCount"))

    def task(self, task_id: int) -> TaskInfo:
        """Static task parameters (cached: they never change once the task exists)."""
        cached = self._task_cache.get(task_id)
        if cached is not None:
            return cached
        (spec, init, num_rounds, committee_size, min_updates, quorum, duration, num_trainers, creator, n) = (
            self._call(TRAINING_TASK, "getTask", task_id)
        )
        info = TaskInfo(
            task_id=task_id,
            spec_hash=bytes(spec),
            initial_model_hash=bytes(init),
            num_rounds=int(num_rounds),
            participants=tuple(self._call(TRAINING_TASK, "participants", task_id)),
            aggregators=tuple(self._call(TRAINING_TASK, "aggregators", task_id)),
            committee_size=int(committee_size),
            min_updates=int(min_updates),
            quorum=int(quorum),
            round_duration=int(duration),
            num_trainers=int(num_trainers),
            creator=creator,
            trainer_mask=mask_of_words(self._call(TRAINING_TASK, "trainerMask", task_id)),
        )
        if len(info.participants) == int(n):  # cache only once every participant batch is in
            self._task_cache[task_id] = info
        return info

    def task_state(self, task_id: int) -> TaskState:
        rnd, phase, opened_at, deadline, mask, count = self._call(TRAINING_TASK, "state", task_id)
        return TaskState(
            task_id=task_id,
            round=int(rnd),
            phase=Phase(phase),
            opened_at=int(opened_at),
            deadline=int(deadline),
            submitted_mask=mask_of_words(mask),
            num_submitted=int(count),
        )

    def pending_participants(self, task_id: int) -> bytes | None:
        """The commitment of the participant batches not yet added to a task (None once all are in)."""
        return _opt32(self._call(TRAINING_TASK, "pendingParticipants", task_id))

    def committee(self, task_id: int, round_: int) -> tuple[str, ...]:
        """The round's committee; fixed once the task is out of set-up (a rotation over aggregators)."""
        key = ("committee", task_id, round_)
        if key in self._final:
            return cast(tuple[str, ...], self._final[key])
        members = tuple(self._call(TRAINING_TASK, "committee", task_id, round_))
        if members:
            self._final[key] = members
        return members

    def submissions(self, task_id: int, round_: int) -> list[Submission]:
        """Submissions of a round in participant order (the canonical aggregation order).

        The blob hashes come from contract state; each sample count from the UpdateSubmitted event of
        the same submission (the contract keeps it in the log only), read at the same block.
        """
        participants = self.task(task_id).participants
        block = self.block_number()
        f = self._abi[TRAINING_TASK].fn("roundSubmissions")
        data = self._tx.call(
            self._address[TRAINING_TASK],
            f.encode((task_id, round_)),
            "TrainingTask.roundSubmissions",
            block=block,
        )
        hashes = f.decode(data)
        committed = [(p, bytes(h)) for p, h in zip(participants, hashes, strict=False) if h != ZERO32]
        if not committed:
            return []
        counts = self._submitted_counts(task_id, round_, None, block)
        return [self._with_count(task_id, round_, p, h, counts) for p, h in committed]

    def submission(self, task_id: int, round_: int, member: str) -> Submission | None:
        member = _addr(member)
        block = self.block_number()
        f = self._abi[TRAINING_TASK].fn("submission")
        data = self._tx.call(
            self._address[TRAINING_TASK],
            f.encode((task_id, round_, member)),
            "TrainingTask.submission",
            block=block,
        )
        h = bytes(f.decode(data))
        if h == ZERO32:
            return None
        return self._with_count(task_id, round_, member, h, self._submitted_counts(task_id, round_, member, block))

    def _submitted_counts(
        self, task_id: int, round_: int, member: str | None, to_block: int
    ) -> dict[str, tuple[bytes, int]]:
        """member (lowercase) -> (blob hash, sample count) from the round's UpdateSubmitted events."""
        topics: list[Any] = [_word32(task_id), _word32(round_)]
        if member is not None:
            topics.append(bytes(12) + bytes.fromhex(member[2:]))
        out: dict[str, tuple[bytes, int]] = {}
        for event in self._logs("UpdateSubmitted", topics, to_block):
            out[str(event.args["member"]).lower()] = (bytes(event.args["blobHash"]), int(event.args["numSamples"]))
        return out

    @staticmethod
    def _with_count(
        task_id: int, round_: int, member: str, blob_hash: bytes, counts: dict[str, tuple[bytes, int]]
    ) -> Submission:
        logged = counts.get(member.lower())
        if logged is None or logged[0] != blob_hash:
            raise LedgerError(
                f"task {task_id} round {round_}: the submission of {member} in contract state has no "
                "matching UpdateSubmitted event"
            )
        return Submission(member=member, blob_hash=blob_hash, num_samples=logged[1])

    def _logs(self, event: str, topics: Sequence[Any], to_block: int | str = "latest") -> list[LedgerEvent]:
        """The TrainingTask's ``event`` logs whose indexed arguments match ``topics`` (after topic0)."""
        topic0 = next(k for k, e in self._abi[TRAINING_TASK].events.items() if e.name == event)
        flt: dict[str, Any] = {
            "address": self._address[TRAINING_TASK],
            "fromBlock": self.deployment.deploy_block,
            "toBlock": to_block,
            "topics": ["0x" + bytes(t).hex() for t in [topic0, *topics]],
        }
        logs = self._tx.rpc(f"eth_getLogs({event})", partial(self.w3.eth.get_logs, cast(Any, flt)))
        return self._decode_logs(logs)

    def round_model(self, task_id: int, round_: int) -> bytes | None:
        """The finalised model of a round (None until final); final means it never changes."""
        key = ("roundModel", task_id, round_)
        if key in self._final:
            return cast(bytes, self._final[key])
        model = _opt32(self._call(TRAINING_TASK, "roundModel", task_id, round_))
        if model is not None:
            self._final[key] = model
        return model

    def round_included(self, task_id: int, round_: int) -> int:
        return mask_of_words(self._call(TRAINING_TASK, "roundIncluded", task_id, round_))

    def proposal_of(self, task_id: int, round_: int, aggregator: str) -> bytes | None:
        return _opt32(self._call(TRAINING_TASK, "proposalOf", task_id, round_, _addr(aggregator)))

    def votes(self, task_id: int, round_: int, key: bytes) -> int:
        return int(self._call(TRAINING_TASK, "votes", task_id, round_, _b32(key, "key")))

    def wrapped_key(self, task_id: int, member: str) -> bytes:
        """``member``'s wrapped task key, from the ParticipantsAdded event of its batch (b"" if none).

        The contract emits a batch's keys only after checking the batch against the approved
        parameters hash, so the log is as binding as storage would be (and ~90 KB cheaper at 1000).
        A participant is in exactly one accepted batch, so the keys found are kept: reading and
        decoding every batch for each of 1000 members took 115 s a task; now the logs are read again
        only for a participant not seen yet (a batch may still be on its way).
        """
        want = _addr(member).lower()
        known = self._wrapped_keys.setdefault(task_id, {})
        if want not in known:
            for event in self._logs("ParticipantsAdded", [_word32(task_id)]):
                for p, key in zip(event.args["participants"], event.args["wrappedKeys"], strict=True):
                    known.setdefault(str(p).lower(), bytes(key))
        return known.get(want, b"")

    def dataset(self, task_id: int, member: str) -> tuple[int, bytes] | None:
        n, root = self._call(TRAINING_TASK, "dataset", task_id, _addr(member))
        return None if n == 0 else (int(n), bytes(root))

    @staticmethod
    def proposal_key(model_hash: bytes, included: int, reasons: Sequence[int]) -> bytes:
        """The vote key proposeAggregate counts: keccak256(abi.encode(modelHash, included, reasons)),
        with ``included`` as 256-bit words (one per 256 participants) and ``reasons`` one byte each."""
        words = _mask_words(included, _words_for(len(reasons)), "included")
        return keccak(abi_encode(["bytes32", "uint256[]", "bytes"], [bytes(model_hash), words, _codes(reasons)]))

    # -- events

    def events(self, from_block: int = 0, to_block: int | None = None) -> list[LedgerEvent]:
        """Every event of both contracts in chain order: one eth_getLogs per contract.

        The range is fixed first (``to_block`` or the head), so both contracts' logs come from the same
        blocks; a range that starts after it is empty (a reader polling for new blocks).
        """
        lo = max(from_block, self.deployment.deploy_block)
        hi = self.block_number() if to_block is None else to_block
        if lo > hi:
            return []
        logs: list[Any] = []
        for contract in (CONSORTIUM, TRAINING_TASK):
            address = self._address[contract]
            logs.extend(
                self._tx.rpc(
                    f"eth_getLogs({contract})",
                    partial(self.w3.eth.get_logs, {"address": address, "fromBlock": lo, "toBlock": hi}),
                )
            )
        events = self._decode_logs(logs)
        events.sort(key=lambda e: (e.block_number, e.log_index))
        return events

    # -- governance writes

    def _propose(
        self,
        admin: LocalAccount,
        kind: ProposalKind,
        target: str = "0x0000000000000000000000000000000000000000",
        name: str = "",
        roles: int = 0,
        enc_key: bytes = ZERO32,
        params_hash: bytes = ZERO32,
    ) -> int:
        result = self._transact(
            admin,
            CONSORTIUM,
            "propose",
            (
                int(kind),
                _addr(target),
                name,
                int(roles),
                _b32(enc_key, "enc_key"),
                _b32(params_hash, "params_hash"),
            ),
            GAS_LIMITS["propose"],
        )
        return int(self._event_arg(result, "ProposalCreated", "id"))

    def propose_member(self, admin: LocalAccount, address: str, name: str, roles: int, enc_key: bytes) -> int:
        return self._propose(admin, ProposalKind.ADD_MEMBER, address, name, roles, enc_key)

    def propose_remove_member(self, admin: LocalAccount, address: str) -> int:
        return self._propose(admin, ProposalKind.REMOVE_MEMBER, address)

    def propose_set_roles(self, admin: LocalAccount, address: str, roles: int) -> int:
        return self._propose(admin, ProposalKind.SET_ROLES, address, roles=roles)

    def propose_rotate_key(self, admin: LocalAccount, address: str, enc_key: bytes) -> int:
        return self._propose(admin, ProposalKind.ROTATE_KEY, address, enc_key=enc_key)

    def propose_task(self, admin: LocalAccount, params: TaskParams) -> int:
        return self._propose(admin, ProposalKind.APPROVE_TASK, params_hash=params.params_hash())

    def approve(self, admin: LocalAccount, proposal_id: int) -> TxResult:
        return self._transact(admin, CONSORTIUM, "approve", (proposal_id,), GAS_LIMITS["approve"])

    # -- task writes

    def create_task(self, sender: LocalAccount, params: TaskParams) -> int:
        """Create the task, then add its remaining participant batches; round 1 opens with the last.

        A batch after the first that the contract refuses leaves the task in phase SETUP (it cannot
        run): so a repeated participant, which would make that certain, is refused here first.
        """
        batches = params.batches()
        if len(batches) > 1:
            seen: set[str] = set()
            for p in params.participants:
                if p.lower() in seen:
                    raise UsageError(f"participant {p} appears twice in the task parameters")
                seen.add(p.lower())
        gas = GAS_LIMITS["createTask"] + GAS_PER_PARTICIPANT["createTask"] * len(batches[0].participants)
        result = self._transact(sender, TRAINING_TASK, "createTask", params.abi_values(), gas)
        task_id = int(self._event_arg(result, "TaskCreated", "taskId"))
        for number, batch in enumerate(batches[1:], start=2):
            try:
                self.add_participants(
                    sender, task_id, batch.participants, batch.wrapped_keys, batch.next_commitment
                )
            except TransactionRevertedError as e:
                raise TransactionRevertedError(
                    f"task {task_id} was created, but its participant batch {number} of {len(batches)} "
                    f"was refused: {e.reason}; the task waits in SETUP for that batch (add_participants)",
                    e.reason,
                ) from e
        return task_id

    def add_participants(
        self,
        sender: LocalAccount,
        task_id: int,
        participants: Sequence[str],
        wrapped_keys: Sequence[bytes],
        next_commitment: bytes,
    ) -> TxResult:
        """Send one approved participant batch of a task being set up (``TaskParams.batches``)."""
        gas = GAS_LIMITS["addParticipants"] + GAS_PER_PARTICIPANT["addParticipants"] * len(participants)
        args = (
            task_id,
            [_addr(p, "participant") for p in participants],
            [bytes(k) for k in wrapped_keys],
            _b32(next_commitment, "next_commitment"),
        )
        return self._transact(sender, TRAINING_TASK, "addParticipants", args, gas)

    def register_dataset(
        self,
        sender: LocalAccount,
        task_id: int,
        num_samples: int,
        label_histogram: Sequence[int],
        merkle_root: bytes,
    ) -> TxResult:
        histogram = _ints(label_histogram, "label_histogram")
        gas = GAS_LIMITS["registerDataset"] + GAS_PER_HISTOGRAM_BIN * len(histogram)
        args = (task_id, num_samples, histogram, _b32(merkle_root, "merkle_root"))
        return self._transact(sender, TRAINING_TASK, "registerDataset", args, gas)

    def submit_update(
        self, sender: LocalAccount, task_id: int, round_: int, blob_hash: bytes, num_samples: int
    ) -> TxResult:
        args = (task_id, round_, _b32(blob_hash, "blob_hash"), num_samples)
        return self._transact(sender, TRAINING_TASK, "submitUpdate", args, GAS_LIMITS["submitUpdate"])

    def propose_aggregate(
        self,
        sender: LocalAccount,
        task_id: int,
        round_: int,
        model_hash: bytes,
        included: int,
        reasons: Sequence[int],
    ) -> TxResult:
        codes = _codes(reasons)
        words = _mask_words(included, _words_for(len(codes)), "included")
        gas = GAS_LIMITS["proposeAggregate"] + GAS_PER_PARTICIPANT["proposeAggregate"] * len(codes)
        args = (task_id, round_, _b32(model_hash, "model_hash"), words, codes)
        return self._transact(sender, TRAINING_TASK, "proposeAggregate", args, gas)

    def reopen_round(self, sender: LocalAccount, task_id: int) -> TxResult:
        return self._transact(sender, TRAINING_TASK, "reopenRound", (task_id,), GAS_LIMITS["reopenRound"])

    def post_metrics(
        self,
        sender: LocalAccount,
        task_id: int,
        round_: int,
        accuracy: float,
        loss: float,
        num_examples: int,
    ) -> TxResult:
        """Post a validator's evaluation; accuracy in [0, 1] and loss >= 0 go on chain in ppm."""
        numbers_given: list[float] = []
        for name, value in (("accuracy", accuracy), ("loss", loss)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise UsageError(f"{name} must be a number, got {type(value).__name__}")
            try:
                numbers_given.append(float(value))
            except OverflowError:
                raise UsageError(f"{name} out of range: {value!r:.40}") from None
        accuracy, loss = numbers_given
        if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
            raise UsageError(f"accuracy must be in [0, 1], got {accuracy}")
        if not (math.isfinite(loss) and loss >= 0.0):
            raise UsageError(f"loss must be finite and >= 0, got {loss}")
        args = (task_id, round_, round_ppm(accuracy), round_ppm(loss), num_examples)
        return self._transact(sender, TRAINING_TASK, "postMetrics", args, GAS_LIMITS["postMetrics"])


def round_ppm(x: float) -> int:
    """Parts per million, rounded half up, as the contracts store metrics."""
    return math.floor(x * PPM + 0.5)


def _bootstrap_batches(founders: Sequence[tuple[str, str, int, bytes]]) -> list[tuple[Any, ...]]:
    """Founding members as (members, names, roles, encKeys, next) batches, each committing to the rest."""
    starts = list(range(0, len(founders), BOOTSTRAP_BATCH)) or [0]
    out: list[tuple[Any, ...]] = []
    following = ZERO32
    for start in reversed(starts):
        part = founders[start : start + BOOTSTRAP_BATCH]
        batch = ([f[0] for f in part], [f[1] for f in part], [f[2] for f in part], [f[3] for f in part], following)
        try:
            following = keccak(abi_encode(_BOOTSTRAP_TYPES, list(batch)))
        except (EncodingError, TypeError, ValueError, OverflowError) as e:
            raise UsageError(f"founding members: invalid values: {e}") from e
        out.append(batch)
    return out[::-1]


def _send_estimated(engine: _TxEngine, sender: LocalAccount, to: str | None, data: bytes, what: str) -> dict[str, Any]:
    """Send with an estimated gas limit (+25%), for rare transactions whose cost varies a lot."""
    tx: dict[str, Any] = {"from": sender.address, "data": data}
    if to is not None:
        tx["to"] = to
    try:
        estimate = engine.rpc(f"{what}: eth_estimateGas", lambda: engine.w3.eth.estimate_gas(cast(Any, tx)))
    except LedgerError as e:
        reason = _revert_reason(e.__cause__) if e.__cause__ is not None else None
        if reason is None:
            raise
        raise TransactionRevertedError(f"{what} reverted: {reason}", reason) from e
    return engine.send(sender, to, data, int(estimate * 1.25) + 50_000, what)


@cache
def _abi(name: str) -> _ContractAbi:
    return _ContractAbi(load_artifact(name).abi)


def _deploy_contract(
    engine: _TxEngine, deployer: LocalAccount, name: str, ctor_args: bytes
) -> dict[str, Any]:
    """Deploy with an estimated gas limit (+25%): deployments are rare and their cost varies a lot."""
    data = load_artifact(name).bytecode + ctor_args
    receipt = _send_estimated(engine, deployer, None, data, f"deploy {name}")
    if not receipt.get("contractAddress"):
        raise LedgerError(f"deploy {name}: receipt has no contract address")
    return receipt
