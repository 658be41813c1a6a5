"""An Ethereum chain run in-process on py-evm and persisted in one sqlite file.

It is the default ledger: no node to install, the same EVM bytecode as production, and a run
directory that survives restarts. Clients talk to it only through Ethereum JSON-RPC
(:meth:`EmbeddedChain.rpc`), so the code above it cannot tell it from geth or anvil.

Storage layout of ``<path>/chain.sqlite``:

* ``kv``: py-evm's key-value database (state trie, headers, bodies, receipts, indices);
* ``blocks``, ``txs``, ``logs``: the JSON-RPC view of every mined block, written with it,
  so reads by hash and ``eth_getLogs`` are one indexed query instead of trie walks;
* ``meta``: format version, chain id and the ``evm_increaseTime`` offset.

Every mined block, its state and its index rows are committed in one sqlite transaction, so a
process killed at any moment reopens at the last fully mined block.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import rlp
from eth.abc import (
    BlockAPI,
    BlockHeaderAPI,
    ComputationAPI,
    ReceiptAPI,
    SignedTransactionAPI,
    StateAPI,
    VirtualMachineAPI,
)
from eth.chains.base import Chain
from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth.exceptions import HeaderNotFound, Revert, VMError
from eth.vm.forks.london.headers import calculate_expected_base_fee_per_gas
from eth.vm.forks.prague import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_keys.exceptions import BadSignature
from eth_typing import Address, BlockNumber
from eth_utils.address import to_canonical_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

from fedledger.errors import LedgerError, UsageError

from .rpc_errors import (
    EXECUTION_REVERTED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    SERVER_ERROR,
    RpcError,
)

__all__ = ["BLOCK_GAS_LIMIT", "DB_FILENAME", "EmbeddedChain"]

DB_FILENAME = "chain.sqlite"
LOCK_FILENAME = "chain.lock"
FORMAT = "fedledger-chain/1"
CLIENT_VERSION = "fedledger-embedded/0.1.0/py-evm-0.12"

BLOCK_GAS_LIMIT = 30_000_000
GENESIS_BASE_FEE = 1_000_000_000  # 1 gwei, py-evm's London default
PRIORITY_FEE = 1_000_000_000  # tip suggested by eth_maxPriorityFeePerGas, as geth's default
COINBASE = bytes(20)
ZERO_HASH = bytes(32)
EIP838_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
SUPPORTED_TX_TYPES = (0, 1, 2)
KV_CACHE_ENTRIES = 50_000  # committed trie nodes and headers kept in memory (~30 MB)


# ---------------------------------------------------------------------------------------------
# wire encoding
# ---------------------------------------------------------------------------------------------


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _qty(value: int) -> str:
    return hex(value)


def _word(value: int) -> str:
    return _hex(value.to_bytes(32, "big"))


def _invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"invalid params: {message}")


def _param(params: Sequence[Any], index: int, name: str, default: Any = ...) -> Any:
    if index < len(params):
        return params[index]
    if default is ...:
        raise _invalid(f"missing value for required argument {name}")
    return default


def _to_int(value: Any, name: str) -> int:
    """A JSON-RPC quantity: a 0x-hex string (or, leniently, a JSON integer)."""
    if isinstance(value, bool):
        raise _invalid(f"{name} must be a hex quantity, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise _invalid(f"{name} must be a hex quantity, got {value!r}")


def _to_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise _invalid(f"{name} must be 0x-prefixed hex bytes, got {value!r}")


def _to_fixed(value: Any, size: int, name: str) -> bytes:
    data = _to_bytes(value, name)
    if len(data) != size:
        raise _invalid(f"{name} must be {size} bytes, got {len(data)}")
    return data


def _to_address(value: Any, name: str = "address") -> Address:
    return Address(_to_fixed(value, 20, name))


def _revert_message(output: bytes) -> str:
    """geth's message for a revert: the Error(string) reason when the data carries one."""
    if output[:4] == EIP838_SELECTOR and len(output) >= 68:
        try:
            length = int.from_bytes(output[36:68], "big")
            reason = output[68 : 68 + length].decode("utf-8")
        except (UnicodeDecodeError, ValueError, OverflowError):
            return "execution reverted"
        return f"execution reverted: {reason}"
    return "execution reverted"


def _raise_if_failed(computation: ComputationAPI) -> None:
    """Turn a failed execution into the error object geth returns for eth_call."""
    if not computation.is_error:
        return
    error = computation.error
    if isinstance(error, Revert):
        output = computation.output
        raise RpcError(EXECUTION_REVERTED, _revert_message(output), _hex(output))
    raise RpcError(SERVER_ERROR, str(error) or type(error).__name__)


# ---------------------------------------------------------------------------------------------
# storage
# ---------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    header TEXT NOT NULL,
    tx_hashes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    hash BLOB PRIMARY KEY,
    block_number INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    tx TEXT NOT NULL,
    receipt TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS txs_by_block ON txs (block_number, tx_index);
CREATE TABLE IF NOT EXISTS logs (
    block_number INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    block_hash BLOB NOT NULL,
    address BLOB NOT NULL,
    topic0 BLOB, topic1 BLOB, topic2 BLOB, topic3 BLOB,
    data BLOB NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX IF NOT EXISTS logs_by_address ON logs (address, block_number);
CREATE INDEX IF NOT EXISTS logs_by_topic0 ON logs (topic0, block_number);
"""


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-32768")  # 32 MiB page cache
    return conn


class _SqliteKV(BaseDB):
    """py-evm's key-value store on sqlite, buffering writes until the block is committed.

    py-evm writes a block in several independent batches (state trie, bodies, canonical head);
    holding them in memory and flushing them in the block's own sqlite transaction is what makes
    a block all-or-nothing on disk. Reads go through a bounded cache of committed values.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._pending: dict[bytes, bytes | None] = {}  # None marks a delete
        self._cache: dict[bytes, bytes] = {}

    def __getitem__(self, key: bytes) -> bytes:
        if key in self._pending:
            value = self._pending[key]
            if value is None:
                raise KeyError(key)
            return value
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        value = bytes(row[0])
        self._remember(key, value)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._pending[key] = value

    def __delitem__(self, key: bytes) -> None:
        if not self._exists(key):
            raise KeyError(key)
        self._pending[key] = None

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def _remember(self, key: bytes, value: bytes) -> None:
        if len(self._cache) >= KV_CACHE_ENTRIES:
            # dicts keep insertion order: drop the oldest quarter rather than track recency
            for old in list(itertools.islice(self._cache, KV_CACHE_ENTRIES // 4)):
                del self._cache[old]
        self._cache[key] = value

    def write_pending(self, conn: sqlite3.Connection) -> None:
        """Write buffered changes inside the caller's open transaction."""
        puts = [(k, v) for k, v in self._pending.items() if v is not None]
        deletes = [(k,) for k, v in self._pending.items() if v is None]
        conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", puts)
        if deletes:
            conn.executemany("DELETE FROM kv WHERE k = ?", deletes)

    def committed(self) -> None:
        """The buffered changes are on disk: serve them from the cache from now on."""
        for key, value in self._pending.items():
            if value is None:
                self._cache.pop(key, None)
            else:
                self._remember(key, value)
        self._pending.clear()

    def discard(self) -> None:
        """Forget uncommitted writes (a block that failed to mine)."""
        self._pending.clear()


# ---------------------------------------------------------------------------------------------
# py-evm chain
# ---------------------------------------------------------------------------------------------


class _DevVM(PragueVM):
    """Prague rules, except that a block may carry its parent's timestamp.

    Mainnet requires strictly increasing timestamps. A dev chain that mines one block per
    transaction would then run ahead of the wall clock by one second per block, and contract
    deadlines (``block.timestamp > deadline``) would fire early. Allowing equal timestamps keeps
    chain time equal to wall time plus the ``evm_increaseTime`` offset, as anvil does. Only the
    timestamp comparison is relaxed: every other header rule is checked against the real parent.
    """

    @classmethod
    def validate_header(cls, header: BlockHeaderAPI, parent_header: BlockHeaderAPI) -> None:
        if parent_header is not None and header.timestamp == parent_header.timestamp:
            parent_header = parent_header.copy(timestamp=parent_header.timestamp - 1)
        super().validate_header(header, parent_header)


def _chain_class(chain_id: int) -> type[Chain]:
    return cast(
        "type[Chain]",
        type("FedledgerChain", (Chain,), {"chain_id": chain_id, "vm_configuration": ((0, _DevVM),)}),
    )


@dataclass
class _PendingBlock:
    """The block under construction: transactions already executed on ``vm``'s state."""

    vm: VirtualMachineAPI
    header: BlockHeaderAPI
    txs: list[SignedTransactionAPI] = field(default_factory=list)
    receipts: list[ReceiptAPI] = field(default_factory=list)
    hashes: set[bytes] = field(default_factory=set)


@dataclass(frozen=True)
class _BlockRows:
    """The JSON-RPC index rows of one mined block."""

    number: int
    block_hash: bytes
    header_json: str
    tx_hashes: bytes
    txs: list[tuple[bytes, int, int, str, str]]
    logs: list[tuple[Any, ...]]


# ---------------------------------------------------------------------------------------------
# JSON views of blocks, transactions and receipts
# ---------------------------------------------------------------------------------------------


def _base_fee(header: BlockHeaderAPI) -> int:
    """Every header of this chain is post-London; the API types the field as optional."""
    return int(header.base_fee_per_gas or 0)


def _header_json(header: BlockHeaderAPI, size: int) -> dict[str, Any]:
    return {
        "number": _qty(header.block_number),
        "hash": _hex(header.hash),
        "parentHash": _hex(header.parent_hash),
        "nonce": _hex(header.nonce),
        "mixHash": _hex(header.mix_hash),
        "sha3Uncles": _hex(header.uncles_hash),
        "logsBloom": _hex(header.bloom.to_bytes(256, "big")),
        "transactionsRoot": _hex(header.transaction_root),
        "stateRoot": _hex(header.state_root),
        "receiptsRoot": _hex(header.receipt_root),
        "miner": _hex(header.coinbase),
        "difficulty": _qty(header.difficulty),
        "totalDifficulty": _qty(0),
        "extraData": _hex(header.extra_data),
        "size": _qty(size),
        "gasLimit": _qty(header.gas_limit),
        "gasUsed": _qty(header.gas_used),
        "timestamp": _qty(header.timestamp),
        "baseFeePerGas": _qty(_base_fee(header)),
        "withdrawalsRoot": _hex(header.withdrawals_root or b""),
        "blobGasUsed": _qty(header.blob_gas_used or 0),
        "excessBlobGas": _qty(header.excess_blob_gas or 0),
        "parentBeaconBlockRoot": _hex(header.parent_beacon_block_root or b""),
        "requestsHash": _hex(getattr(header, "requests_hash", b"")),
        "uncles": [],
        "withdrawals": [],
    }


def _effective_gas_price(tx: SignedTransactionAPI, base_fee: int) -> int:
    return min(tx.max_fee_per_gas, tx.max_priority_fee_per_gas + base_fee)


def _tx_json(
    tx: SignedTransactionAPI,
    location: tuple[bytes, int, int, int] | None,
) -> dict[str, Any]:
    """A transaction as eth_getTransactionByHash shows it; ``location`` is (block hash, number,
    index, base fee), or None while the transaction is pending."""
    type_id = tx.type_id or 0
    out: dict[str, Any] = {
        "type": _qty(type_id),
        "hash": _hex(tx.hash),
        "nonce": _qty(tx.nonce),
        "blockHash": None,
        "blockNumber": None,
        "transactionIndex": None,
        "from": _hex(tx.sender),
        "to": _hex(tx.to) if tx.to else None,
        "value": _qty(tx.value),
        "gas": _qty(tx.gas),
        "input": _hex(tx.data),
    }
    if location is not None:
        block_hash, number, index, _ = location
        out["blockHash"] = _hex(block_hash)
        out["blockNumber"] = _qty(number)
        out["transactionIndex"] = _qty(index)
    if type_id == 0:
        out["gasPrice"] = _qty(tx.gas_price)
        v = _legacy_v(tx)
        out["v"] = _qty(v)
        if v >= 35:
            out["chainId"] = _qty((v - 35) // 2)
    else:
        out["chainId"] = _qty(tx.chain_id or 0)
        out["accessList"] = [
            {"address": _hex(address), "storageKeys": [_word(int(key)) for key in keys]}
            for address, keys in tx.access_list
        ]
        out["yParity"] = _qty(tx.y_parity)
        out["v"] = _qty(tx.y_parity)
        if type_id == 1:
            out["gasPrice"] = _qty(tx.gas_price)
        else:
            out["maxFeePerGas"] = _qty(tx.max_fee_per_gas)
            out["maxPriorityFeePerGas"] = _qty(tx.max_priority_fee_per_gas)
            price = tx.max_fee_per_gas if location is None else _effective_gas_price(tx, location[3])
            out["gasPrice"] = _qty(price)
    out["r"] = _qty(tx.r)
    out["s"] = _qty(tx.s)
    return out


def _legacy_v(tx: SignedTransactionAPI) -> int:
    """``v`` of a legacy transaction (typed transactions carry ``y_parity`` instead)."""
    return int(tx.v)  # type: ignore[attr-defined]


def _log_json(row: Sequence[Any]) -> dict[str, Any]:
    number, log_index, tx_index, tx_hash, block_hash, address, t0, t1, t2, t3, data = row
    return {
        "address": _hex(address),
        "topics": [_hex(t) for t in (t0, t1, t2, t3) if t is not None],
        "data": _hex(data),
        "blockNumber": _qty(number),
        "blockHash": _hex(block_hash),
        "transactionHash": _hex(tx_hash),
        "transactionIndex": _qty(tx_index),
        "logIndex": _qty(log_index),
        "removed": False,
    }


def _block_rows(block: BlockAPI, receipts: Sequence[ReceiptAPI]) -> _BlockRows:
    header = block.header
    block_hash = header.hash
    number = header.block_number
    base_fee = _base_fee(header)
    txs: list[tuple[bytes, int, int, str, str]] = []
    logs: list[tuple[Any, ...]] = []
    log_index = 0
    previous_cumulative = 0
    for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        tx_hash = tx.hash
        receipt_logs = []
        for log in receipt.logs:
            topics = [int(t).to_bytes(32, "big") for t in log.topics]
            padded: list[bytes | None] = [*topics, None, None, None, None][:4]
            row = (number, log_index, index, tx_hash, block_hash, log.address, *padded, log.data)
            logs.append(row)
            receipt_logs.append(_log_json(row))
            log_index += 1
        contract = None
        if not tx.to:
            contract = _hex(_contract_address(tx.sender, tx.nonce))
        receipt_json = {
            "transactionHash": _hex(tx_hash),
            "transactionIndex": _qty(index),
            "blockHash": _hex(block_hash),
            "blockNumber": _qty(number),
            "from": _hex(tx.sender),
            "to": _hex(tx.to) if tx.to else None,
            "cumulativeGasUsed": _qty(receipt.gas_used),
            "gasUsed": _qty(receipt.gas_used - previous_cumulative),
            "effectiveGasPrice": _qty(_effective_gas_price(tx, base_fee)),
            "contractAddress": contract,
            "logs": receipt_logs,
            "logsBloom": _hex(receipt.bloom.to_bytes(256, "big")),
            "status": _qty(1 if receipt.state_root == b"\x01" else 0),
            "type": _qty(tx.type_id or 0),
        }
        previous_cumulative = receipt.gas_used
        tx_json = _tx_json(tx, (block_hash, number, index, base_fee))
        txs.append((tx_hash, number, index, json.dumps(tx_json), json.dumps(receipt_json)))
    return _BlockRows(
        number=number,
        block_hash=block_hash,
        header_json=json.dumps(_header_json(header, len(rlp.encode(block)))),
        tx_hashes=b"".join(t[0] for t in txs),
        txs=txs,
        logs=logs,
    )


def _contract_address(sender: bytes, nonce: int) -> bytes:
    return keccak(rlp.encode([sender, nonce]))[12:]


# ---------------------------------------------------------------------------------------------
# the chain
# ---------------------------------------------------------------------------------------------


class EmbeddedChain:
    """A persistent single-node Ethereum chain spoken to through JSON-RPC.

    Use :meth:`create` for a new chain and :meth:`open` to reopen one. Every :meth:`rpc` call
    holds one lock, so the object may be shared by the threads of an HTTP server.

    Mining: with automine on (the default) each accepted transaction is mined at once in its
    own block, so its receipt exists when ``eth_sendRawTransaction`` returns. With automine off
    (``evm_setAutomine``) transactions execute into a pending block that ``evm_mine`` seals;
    a pending block that would exceed the block gas limit is sealed first. :meth:`close` seals
    any pending block so that no accepted transaction is lost on a clean shutdown.

    Time: a block's timestamp is ``max(wall clock + offset, parent timestamp)``; the offset
    only grows, through ``evm_increaseTime``, and is persisted. A pending block takes its
    timestamp when its first transaction arrives.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int) -> None:
        """Use :meth:`create` or :meth:`open`."""
        self._path = path
        self._conn = conn
        self._lock_fd: int | None = lock_fd
        self._lock = threading.RLock()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != FORMAT:
            raise UsageError(f"{path / DB_FILENAME} is not a fedledger chain (format {meta.get('format')!r})")
        self._chain_id = int(meta["chain_id"])
        self._time_offset = int(meta.get("time_offset", "0"))
        self._kv = _SqliteKV(conn)
        self._chain = _chain_class(self._chain_id)(AtomicDB(self._kv))
        self._head = self._chain.get_canonical_head()
        indexed = conn.execute("SELECT MAX(number) FROM blocks").fetchone()[0]
        if indexed != self._head.block_number:
            raise LedgerError(
                f"{path / DB_FILENAME} is inconsistent: chain head #{self._head.block_number} "
                f"but index head #{indexed}"
            )
        self._read_state: StateAPI | None = None
        self._pending: _PendingBlock | None = None
        self._automine = True
        self._closed = False
        self._methods: dict[str, Callable[[Sequence[Any]], Any]] = {
            "web3_clientVersion": lambda p: CLIENT_VERSION,
            "net_version": lambda p: str(self._chain_id),
            "net_listening": lambda p: True,
            "net_peerCount": lambda p: _qty(0),
            "eth_chainId": lambda p: _qty(self._chain_id),
            "eth_syncing": lambda p: False,
            "eth_mining": lambda p: False,
            "eth_accounts": lambda p: [],
            "eth_blockNumber": lambda p: _qty(self._head.block_number),
            "eth_gasPrice": lambda p: _qty(self._next_base_fee() + PRIORITY_FEE),
            "eth_maxPriorityFeePerGas": lambda p: _qty(PRIORITY_FEE),
            "eth_feeHistory": self._fee_history,
            "eth_getBlockByNumber": self._get_block_by_number,
            "eth_getBlockByHash": self._get_block_by_hash,
            "eth_getBlockTransactionCountByNumber": self._get_block_tx_count_by_number,
            "eth_getBlockReceipts": self._get_block_receipts,
            "eth_getTransactionByHash": self._get_transaction_by_hash,
            "eth_getTransactionReceipt": self._get_transaction_receipt,
            "eth_getLogs": self._get_logs,
            "eth_getBalance": self._get_balance,
            "eth_getTransactionCount": self._get_transaction_count,
            "eth_getCode": self._get_code,
            "eth_getStorageAt": self._get_storage_at,
            "eth_call": self._call,
            "eth_estimateGas": self._estimate_gas,
            "eth_sendRawTransaction": self._send_raw_transaction,
            "evm_increaseTime": self._increase_time,
            "evm_mine": self._evm_mine,
            "evm_setAutomine": self._set_automine,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, chain_id: int, alloc: Mapping[str, int]) -> EmbeddedChain:
        """Make a new chain in directory ``path`` whose genesis gives ``alloc`` (address -> wei)."""
        path = Path(path)
        db_path = path / DB_FILENAME
        if db_path.exists():
            raise UsageError(f"{path} already holds a fedledger chain; open it instead of creating one")
        if not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id <= 0:
            raise UsageError(f"chain id must be a positive integer, got {chain_id!r}")
        genesis_state: dict[Address, Any] = {}
        for address, balance in alloc.items():
            try:
                canonical = Address(to_canonical_address(address))
            except (ValueError, TypeError) as exc:
                raise UsageError(f"genesis alloc: {address!r} is not an Ethereum address") from exc
            if not isinstance(balance, int) or balance < 0:
                raise UsageError(f"genesis alloc: balance of {address} must be a non-negative int")
            genesis_state[canonical] = {"balance": balance, "nonce": 0, "code": b"", "storage": {}}
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the chain directory {path}: {exc}") from exc
        lock_fd = _lock_directory(path)
        try:
            tmp_path = path / (DB_FILENAME + ".creating")
            for stale in (tmp_path, Path(f"{tmp_path}-wal"), Path(f"{tmp_path}-shm")):
                stale.unlink(missing_ok=True)
            conn = _connect(tmp_path)
            try:
                conn.executescript(SCHEMA)
                kv = _SqliteKV(conn)
                genesis_params: dict[str, Any] = {
                    "coinbase": COINBASE,
                    "difficulty": 0,
                    "gas_limit": BLOCK_GAS_LIMIT,
                    "extra_data": b"fedledger",
                    "mix_hash": ZERO_HASH,
                    "nonce": bytes(8),
                    "timestamp": int(time.time()),
                    "base_fee_per_gas": GENESIS_BASE_FEE,
                }
                chain = _chain_class(chain_id).from_genesis(AtomicDB(kv), genesis_params, genesis_state)
                genesis = chain.get_canonical_block_by_number(BlockNumber(0))
                rows = _block_rows(genesis, ())
                conn.execute("BEGIN")
                kv.write_pending(conn)
                _insert_block_rows(conn, rows)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("format", FORMAT), ("chain_id", str(chain_id)), ("time_offset", "0")],
                )
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            os.replace(tmp_path, db_path)
            for leftover in (Path(f"{tmp_path}-wal"), Path(f"{tmp_path}-shm")):
                leftover.unlink(missing_ok=True)
            return cls(path, _connect(db_path), lock_fd)
        except BaseException:
            _unlock_directory(lock_fd)
            raise

    @classmethod
    def open(cls, path: Path) -> EmbeddedChain:
        """Reopen the chain in ``path`` at its last fully mined block."""
        path = Path(path)
        db_path = path / DB_FILENAME
        if not db_path.is_file():
            raise UsageError(f"{path} holds no fedledger chain ({DB_FILENAME} missing)")
        lock_fd = _lock_directory(path)
        try:
            conn = _connect(db_path)
            try:
                return cls(path, conn, lock_fd)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            _unlock_directory(lock_fd)
            raise UsageError(f"{db_path} is not a readable fedledger chain: {exc}") from exc
        except BaseException:
            _unlock_directory(lock_fd)
            raise

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def automine(self) -> bool:
        return self._automine

    def close(self) -> None:
        """Seal any pending block, then release the database and the directory lock."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._pending is not None:
                    self._mine()
            finally:
                self._closed = True
                self._conn.close()
                if self._lock_fd is not None:
                    _unlock_directory(self._lock_fd)
                    self._lock_fd = None

    def __enter__(self) -> EmbeddedChain:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- JSON-RPC entry point ----------------------------------------------------------------

    def rpc(self, method: str, params: Sequence[Any] | None = None) -> Any:
        """Answer one JSON-RPC request; failures raise :class:`RpcError` with geth's codes."""
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        if not isinstance(params, list | tuple):
            raise _invalid("params must be an array")
        with self._lock:
            if self._closed:
                raise LedgerError(f"the chain at {self._path} is closed")
            try:
                return handler(params)
            except RpcError:
                raise
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise _invalid(f"{type(exc).__name__}: {exc}") from exc
            except (ValidationError, VMError, HeaderNotFound) as exc:
                raise RpcError(SERVER_ERROR, str(exc)) from exc
            except sqlite3.Error as exc:
                raise RpcError(INTERNAL_ERROR, f"chain database error: {exc}") from exc

    # -- blocks and time -----------------------------------------------------------------------

    def _now(self) -> int:
        return int(time.time()) + self._time_offset

    def _next_base_fee(self) -> int:
        if self._pending is not None:
            return _base_fee(self._pending.header)
        return int(calculate_expected_base_fee_per_gas(self._head))

    def _resolve_block(self, tag: Any) -> int:
        """A block parameter (tag, hex number or EIP-1898 object) as an existing block number."""
        head = self._head.block_number
        if tag is None or tag in ("latest", "pending", "safe", "finalized"):
            return head
        if tag == "earliest":
            return 0
        if isinstance(tag, dict):
            if "blockHash" in tag:
                number = self._number_of_hash(_to_fixed(tag["blockHash"], 32, "blockHash"))
                if number is None:
                    raise RpcError(SERVER_ERROR, f"header for hash {tag['blockHash']} not found")
                return number
            if "blockNumber" in tag:
                return self._resolve_block(tag["blockNumber"])
            raise _invalid("block object needs blockHash or blockNumber")
        number = _to_int(tag, "block")
        if number > head:
            raise RpcError(SERVER_ERROR, "header not found")
        return number

    def _number_of_hash(self, block_hash: bytes) -> int | None:
        row = self._conn.execute("SELECT number FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else int(row[0])

    def _open_pending(self) -> _PendingBlock:
        parent = self._head
        header = self._chain.create_header_from_parent(
            parent,
            timestamp=max(self._now(), parent.timestamp),
            gas_limit=BLOCK_GAS_LIMIT,
            coinbase=COINBASE,
            mix_hash=keccak(parent.hash),  # prevrandao: varies per block, reproducible
        )
        vm = self._chain.get_vm(header)
        vm.block_preprocessing(vm.get_block())  # type: ignore[attr-defined]  # system contracts (EIP-4788, EIP-2935)
        pending = _PendingBlock(vm=vm, header=header)
        self._pending = pending
        return pending

    def _mine(self) -> None:
        """Seal the pending block (opening an empty one if none) and commit it atomically."""
        pending = self._pending if self._pending is not None else self._open_pending()
        try:
            vm = pending.vm
            filled = vm.set_block_transactions_and_withdrawals(
                vm.get_block(), pending.header, pending.txs, pending.receipts
            )
            processed = vm.block_postprocessing(filled)  # type: ignore[attr-defined]
            block = vm.mine_block(processed).block
            self._chain.chaindb.persist_block(block)
            rows = _block_rows(block, pending.receipts)
            self._conn.execute("BEGIN")
            try:
                self._kv.write_pending(self._conn)
                _insert_block_rows(self._conn, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except BaseException:
            self._kv.discard()
            self._pending = None
            self._head = self._chain.get_canonical_head()
            self._read_state = None
            raise
        self._kv.committed()
        self._pending = None
        self._head = block.header
        self._read_state = None

    def _increase_time(self, params: Sequence[Any]) -> int:
        seconds = _to_int(_param(params, 0, "seconds"), "seconds")
        if seconds < 0:
            raise _invalid("evm_increaseTime only moves time forward")
        self._time_offset += seconds
        self._conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('time_offset', ?)", (str(self._time_offset),)
        )
        return self._time_offset

    def _evm_mine(self, params: Sequence[Any]) -> str:
        if params and params[0] is not None:
            raise _invalid("evm_mine takes no timestamp here; use evm_increaseTime to move time")
        self._mine()
        return "0x0"

    def _set_automine(self, params: Sequence[Any]) -> bool:
        enabled = _param(params, 0, "enabled")
        if not isinstance(enabled, bool):
            raise _invalid("evm_setAutomine takes a boolean")
        self._automine = enabled
        if enabled and self._pending is not None:
            self._mine()
        return True

    # -- block and transaction queries ------------------------------------------------------

    def _block_json(self, number: int, full: bool) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT header, tx_hashes FROM blocks WHERE number = ?", (number,)
        ).fetchone()
        if row is None:
            return None
        block: dict[str, Any] = json.loads(row[0])
        if full:
            block["transactions"] = [
                json.loads(tx)
                for (tx,) in self._conn.execute(
                    "SELECT tx FROM txs WHERE block_number = ? ORDER BY tx_index", (number,)
                )
            ]
        else:
            hashes = bytes(row[1])
            block["transactions"] = [_hex(hashes[i : i + 32]) for i in range(0, len(hashes), 32)]
        return block

    def _get_block_by_number(self, params: Sequence[Any]) -> dict[str, Any] | None:
        tag = _param(params, 0, "block")
        full = bool(_param(params, 1, "full", False))
        if tag in ("latest", "pending", "safe", "finalized"):
            number = int(self._head.block_number)
        elif tag == "earliest":
            number = 0
        else:
            number = _to_int(tag, "block")
        return self._block_json(number, full)

    def _get_block_by_hash(self, params: Sequence[Any]) -> dict[str, Any] | None:
        number = self._number_of_hash(_to_fixed(_param(params, 0, "hash"), 32, "hash"))
        if number is None:
            return None
        return self._block_json(number, bool(_param(params, 1, "full", False)))

    def _get_block_tx_count_by_number(self, params: Sequence[Any]) -> str | None:
        block = self._get_block_by_number([_param(params, 0, "block"), False])
        return None if block is None else _qty(len(block["transactions"]))

    def _get_block_receipts(self, params: Sequence[Any]) -> list[Any] | None:
        tag = _param(params, 0, "block")
        try:
            number = self._resolve_block(tag)
        except RpcError:
            return None
        return [
            json.loads(receipt)
            for (receipt,) in self._conn.execute(
                "SELECT receipt FROM txs WHERE block_number = ? ORDER BY tx_index", (number,)
            )
        ]

    def _get_transaction_by_hash(self, params: Sequence[Any]) -> dict[str, Any] | None:
        tx_hash = _to_fixed(_param(params, 0, "hash"), 32, "hash")
        row = self._conn.execute("SELECT tx FROM txs WHERE hash = ?", (tx_hash,)).fetchone()
        if row is not None:
            return cast("dict[str, Any]", json.loads(row[0]))
        if self._pending is not None and tx_hash in self._pending.hashes:
            for tx in self._pending.txs:
                if tx.hash == tx_hash:
                    return _tx_json(tx, None)
        return None

    def _get_transaction_receipt(self, params: Sequence[Any]) -> dict[str, Any] | None:
        tx_hash = _to_fixed(_param(params, 0, "hash"), 32, "hash")
        row = self._conn.execute("SELECT receipt FROM txs WHERE hash = ?", (tx_hash,)).fetchone()
        return None if row is None else cast("dict[str, Any]", json.loads(row[0]))

    def _get_logs(self, params: Sequence[Any]) -> list[dict[str, Any]]:
        flt = _param(params, 0, "filter")
        if not isinstance(flt, dict):
            raise _invalid("eth_getLogs takes a filter object")
        clauses: list[str] = []
        args: list[Any] = []
        if flt.get("blockHash") is not None:
            if flt.get("fromBlock") is not None or flt.get("toBlock") is not None:
                raise _invalid("cannot specify both blockHash and fromBlock/toBlock")
            number = self._number_of_hash(_to_fixed(flt["blockHash"], 32, "blockHash"))
            if number is None:
                raise RpcError(SERVER_ERROR, "unknown block")
            clauses.append("block_number = ?")
            args.append(number)
        else:
            head = self._head.block_number
            first = self._filter_bound(flt.get("fromBlock"), head)
            last = self._filter_bound(flt.get("toBlock"), head)
            if first > last:
                raise _invalid("invalid block range params")
            clauses.append("block_number BETWEEN ? AND ?")
            args.extend((first, last))
        address = flt.get("address")
        if address is not None:
            addresses = address if isinstance(address, list) else [address]
            if addresses:
                clauses.append(f"address IN ({','.join('?' * len(addresses))})")
                args.extend(_to_address(a) for a in addresses)
        topics = flt.get("topics") or []
        if not isinstance(topics, list) or len(topics) > 4:
            raise _invalid("topics must be a list of at most 4 entries")
        for position, topic in enumerate(topics):
            if topic is None:
                continue
            options = topic if isinstance(topic, list) else [topic]
            if not options or any(o is None for o in options):
                continue  # an empty or null alternative matches anything
            clauses.append(f"topic{position} IN ({','.join('?' * len(options))})")
            args.extend(_to_fixed(o, 32, "topic") for o in options)
        sql = (
            "SELECT block_number, log_index, tx_index, tx_hash, block_hash, address, "
            "topic0, topic1, topic2, topic3, data FROM logs WHERE "
            + " AND ".join(clauses)
            + " ORDER BY block_number, log_index"
        )
        return [_log_json(row) for row in self._conn.execute(sql, args)]

    def _filter_bound(self, tag: Any, head: int) -> int:
        if tag is None or tag in ("latest", "pending", "safe", "finalized"):
            return head
        if tag == "earliest":
            return 0
        return _to_int(tag, "block")

    def _fee_history(self, params: Sequence[Any]) -> dict[str, Any]:
        count = _to_int(_param(params, 0, "blockCount"), "blockCount")
        newest = self._resolve_block(_param(params, 1, "newestBlock"))
        percentiles = _param(params, 2, "rewardPercentiles", None) or []
        count = max(1, min(count, 1024, newest + 1))
        oldest = newest - count + 1
        base_fees: list[str] = []
        ratios: list[float] = []
        rewards: list[list[str]] = []
        for number in range(oldest, newest + 1):
            header = self._chain.get_canonical_block_header_by_number(BlockNumber(number))
            base_fees.append(_qty(_base_fee(header)))
            ratios.append(header.gas_used / header.gas_limit)
            if percentiles:
                rewards.append(self._block_rewards(number, _base_fee(header), percentiles))
        last = self._chain.get_canonical_block_header_by_number(BlockNumber(newest))
        base_fees.append(_qty(calculate_expected_base_fee_per_gas(last)))
        result: dict[str, Any] = {
            "oldestBlock": _qty(oldest),
            "baseFeePerGas": base_fees,
            "gasUsedRatio": ratios,
        }
        if percentiles:
            result["reward"] = rewards
        return result

    def _block_rewards(self, number: int, base_fee: int, percentiles: Sequence[Any]) -> list[str]:
        """Tips paid in a block at the given gas-weighted percentiles, as geth computes them."""
        tips: list[tuple[int, int]] = []
        for (receipt_text,) in self._conn.execute(
            "SELECT receipt FROM txs WHERE block_number = ?", (number,)
        ):
            receipt = json.loads(receipt_text)
            price = int(receipt["effectiveGasPrice"], 16)
            tips.append((max(price - base_fee, 0), int(receipt["gasUsed"], 16)))
        if not tips:
            return [_qty(0) for _ in percentiles]
        tips.sort()
        total = sum(gas for _, gas in tips)
        out: list[str] = []
        for p in percentiles:
            threshold = total * float(p) / 100
            acc, chosen = 0, tips[-1][0]
            for tip, gas in tips:
                acc += gas
                if acc >= threshold:
                    chosen = tip
                    break
            out.append(_qty(chosen))
        return out

    # -- state queries -------------------------------------------------------------------------

    def _state_at(self, number: int) -> StateAPI:
        """State after block ``number``, with that block's context and a zero base fee (as
        geth's eth_call uses); the head's state is cached until the next block."""
        if number == self._head.block_number and self._read_state is not None:
            return self._read_state
        header = self._chain.get_canonical_block_header_by_number(BlockNumber(number))
        state = self._chain.get_vm(header.copy(base_fee_per_gas=0)).state
        if number == self._head.block_number:
            self._read_state = state
        return state

    def _get_balance(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        state = self._state_at(self._resolve_block(_param(params, 1, "block", "latest")))
        return _qty(state.get_balance(address))

    def _get_transaction_count(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        tag = _param(params, 1, "block", "latest")
        if tag == "pending" and self._pending is not None:
            return _qty(self._pending.vm.state.get_nonce(address))
        return _qty(self._state_at(self._resolve_block(tag)).get_nonce(address))

    def _get_code(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        state = self._state_at(self._resolve_block(_param(params, 1, "block", "latest")))
        return _hex(state.get_code(address))

    def _get_storage_at(self, params: Sequence[Any]) -> str:
        address = _to_address(_param(params, 0, "address"))
        slot = _to_int(_param(params, 1, "slot"), "slot")
        state = self._state_at(self._resolve_block(_param(params, 2, "block", "latest")))
        return _word(state.get_storage(address, slot))

    # -- execution without a transaction ---------------------------------------------------

    def _call_transaction(self, obj: Any, state: StateAPI, gas: int) -> SignedTransactionAPI:
        """The call object as an unsigned transaction sent from ``from`` (zero address if absent)."""
        if not isinstance(obj, dict):
            raise _invalid("transaction argument must be an object")
        sender = _to_address(obj["from"], "from") if obj.get("from") else Address(bytes(20))
        to = _to_address(obj["to"], "to") if obj.get("to") else Address(b"")
        value = _to_int(obj["value"], "value") if obj.get("value") is not None else 0
        raw_data = obj.get("input") if obj.get("input") is not None else obj.get("data")
        data = _to_bytes(raw_data, "input") if raw_data is not None else b""
        nonce = _to_int(obj["nonce"], "nonce") if obj.get("nonce") is not None else state.get_nonce(sender)
        builder: Any = _DevVM.get_transaction_builder()  # the API type lacks the typed-tx builders
        unsigned: Any
        if obj.get("maxFeePerGas") is not None or obj.get("maxPriorityFeePerGas") is not None:
            max_fee = _to_int(obj.get("maxFeePerGas") or "0x0", "maxFeePerGas")
            tip = _to_int(obj.get("maxPriorityFeePerGas") or "0x0", "maxPriorityFeePerGas")
            unsigned = builder.new_unsigned_dynamic_fee_transaction(
                chain_id=self._chain_id,
                nonce=nonce,
                max_priority_fee_per_gas=min(tip, max_fee) if max_fee else tip,
                max_fee_per_gas=max(max_fee, tip),
                gas=gas,
                to=to,
                value=value,
                data=data,
                access_list=_access_list(obj.get("accessList")),
            )
        else:
            price = _to_int(obj["gasPrice"], "gasPrice") if obj.get("gasPrice") is not None else 0
            unsigned = builder.create_unsigned_transaction(
                nonce=nonce, gas_price=price, gas=gas, to=to, value=value, data=data
            )
        return cast(SignedTransactionAPI, SpoofTransaction(unsigned, from_=sender))

    def _execute(self, obj: Any, state: StateAPI, gas: int) -> tuple[SignedTransactionAPI, ComputationAPI]:
        tx = self._call_transaction(obj, state, gas)
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        except ValidationError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        finally:
            state.revert(snapshot)
        return tx, computation

    def _call_gas(self, obj: Any, number: int) -> int:
        cap = self._chain.get_canonical_block_header_by_number(BlockNumber(number)).gas_limit
        if isinstance(obj, dict) and obj.get("gas") is not None:
            return _to_int(obj["gas"], "gas")
        return int(cap)

    def _call(self, params: Sequence[Any]) -> str:
        obj = _param(params, 0, "transaction")
        number = self._resolve_block(_param(params, 1, "block", "latest"))
        if len(params) > 2 and params[2]:
            raise _invalid("state overrides are not supported by the embedded chain")
        _, computation = self._execute(obj, self._state_at(number), self._call_gas(obj, number))
        _raise_if_failed(computation)
        return _hex(computation.output)

    def _estimate_gas(self, params: Sequence[Any]) -> str:
        """geth's search: run once at the cap, then bisect down to within 1.5% of the minimum."""
        obj = _param(params, 0, "transaction")
        number = self._resolve_block(_param(params, 1, "block", "latest"))
        state = self._state_at(number)
        cap = self._call_gas(obj, number)
        tx, computation = self._execute(obj, state, cap)
        if computation.is_error and not isinstance(computation.error, Revert):
            raise RpcError(SERVER_ERROR, f"gas required exceeds allowance ({cap}): {computation.error}")
        _raise_if_failed(computation)
        used = _DevVM.finalize_gas_used(tx, computation)
        gross = cap - computation.get_gas_remaining()
        low, high = max(used, tx.intrinsic_gas) - 1, cap

        def succeeds(gas: int) -> bool:
            return not self._execute(obj, state, gas)[1].is_error

        if low < used < high and succeeds(used):  # plain transfers and most simple calls
            return _qty(used)
        low = max(low, used)
        optimistic = (gross + 2300) * 64 // 63
        if low < optimistic < high:
            if succeeds(optimistic):
                high = optimistic
            else:
                low = optimistic
        while high - low > 1 and (high - low) / high >= 0.015:
            middle = (low + high) // 2
            if succeeds(middle):
                high = middle
            else:
                low = middle
        return _qty(high)

    # -- transactions ------------------------------------------------------------------------

    def _decode_transaction(self, raw: bytes) -> SignedTransactionAPI:
        if not raw:
            raise RpcError(SERVER_ERROR, "empty raw transaction")
        if raw[0] < 0x7F and raw[0] not in SUPPORTED_TX_TYPES:
            raise RpcError(SERVER_ERROR, f"transaction type {raw[0]} not supported")
        try:
            tx = _DevVM.get_transaction_builder().decode(raw)
        except Exception as exc:  # malformed RLP raises a zoo of types
            raise RpcError(SERVER_ERROR, f"invalid raw transaction: {exc}") from exc
        try:
            tx.sender  # noqa: B018  # recover once: a bad signature fails here
        except (BadSignature, ValidationError, ValueError) as exc:
            raise RpcError(SERVER_ERROR, f"invalid sender: {exc}") from exc
        return tx

    def _check_transaction(self, tx: SignedTransactionAPI, pending: _PendingBlock) -> None:
        """Reject what geth's txpool rejects, with its wording, before anything is executed."""
        sender = _hex(tx.sender)
        if (tx.type_id or 0) == 0:
            v = _legacy_v(tx)
            if v in (27, 28):
                raise RpcError(SERVER_ERROR, "only replay-protected (EIP-155) transactions allowed over RPC")
            tx_chain_id = (v - 35) // 2
        else:
            tx_chain_id = tx.chain_id or 0
        if tx_chain_id != self._chain_id:
            raise RpcError(
                SERVER_ERROR, f"invalid chain id for signer: have {tx_chain_id} want {self._chain_id}"
            )
        if tx.gas < tx.intrinsic_gas:
            raise RpcError(SERVER_ERROR, f"intrinsic gas too low: have {tx.gas}, want {tx.intrinsic_gas}")
        if tx.gas > pending.header.gas_limit:
            raise RpcError(SERVER_ERROR, "exceeds block gas limit")
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
            raise RpcError(
                SERVER_ERROR,
                f"max priority fee per gas higher than max fee per gas: address {sender}, "
                f"maxPriorityFeePerGas: {tx.max_priority_fee_per_gas}, maxFeePerGas: {tx.max_fee_per_gas}",
            )
        base_fee = _base_fee(pending.header)
        if tx.max_fee_per_gas < base_fee:
            raise RpcError(
                SERVER_ERROR,
                f"max fee per gas less than block base fee: address {sender}, "
                f"maxFeePerGas: {tx.max_fee_per_gas}, baseFee: {base_fee}",
            )
        state = pending.vm.state
        nonce = state.get_nonce(tx.sender)
        if tx.nonce < nonce:
            raise RpcError(SERVER_ERROR, f"nonce too low: address {sender}, tx: {tx.nonce} state: {nonce}")
        if tx.nonce > nonce:
            raise RpcError(SERVER_ERROR, f"nonce too high: address {sender}, tx: {tx.nonce} state: {nonce}")
        balance = state.get_balance(tx.sender)
        cost = tx.gas * tx.max_fee_per_gas + tx.value
        if balance < cost:
            raise RpcError(
                SERVER_ERROR,
                f"insufficient funds for gas * price + value: address {sender} have {balance} want {cost}",
            )
        try:  # py-evm's own rules, as a backstop for anything not covered above
            pending.vm.validate_transaction_against_header(pending.header, tx)
            state.validate_transaction(tx)
        except ValidationError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc

    def _apply(self, pending: _PendingBlock, tx: SignedTransactionAPI) -> ReceiptAPI:
        """``VM.apply_transaction`` with a snapshot, so a transaction that fails py-evm's own
        validation leaves the pending block exactly as it was."""
        vm, state = pending.vm, pending.vm.state
        vm.validate_transaction_against_header(pending.header, tx)
        state.lock_changes()
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        except ValidationError as exc:
            state.revert(snapshot)
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        except BaseException:
            state.revert(snapshot)
            raise
        receipt = vm.make_receipt(pending.header, tx, computation, state)
        vm.validate_receipt(receipt)
        return receipt

    def _send_raw_transaction(self, params: Sequence[Any]) -> str:
        tx = self._decode_transaction(_to_bytes(_param(params, 0, "data"), "data"))
        tx_hash = tx.hash
        known = self._conn.execute("SELECT 1 FROM txs WHERE hash = ?", (tx_hash,)).fetchone()
        if known is not None or (self._pending is not None and tx_hash in self._pending.hashes):
            raise RpcError(SERVER_ERROR, "already known")
        pending = self._pending
        if pending is not None and pending.header.gas_used + tx.gas > pending.header.gas_limit:
            self._mine()  # the pending block is full: seal it and start the next
            pending = None
        opened = pending is None
        if pending is None:
            pending = self._open_pending()
        try:
            self._check_transaction(tx, pending)
            receipt = self._apply(pending, tx)
        except BaseException:
            if opened and not pending.txs:
                self._pending = None  # nothing executed: drop the empty block we opened
            raise
        header = pending.vm.add_receipt_to_header(pending.header, receipt)
        pending.header = pending.vm.increment_blob_gas_used(header, tx)
        pending.txs.append(tx)
        pending.receipts.append(receipt)
        pending.hashes.add(tx_hash)
        if self._automine:
            self._mine()
        return _hex(tx_hash)


def _access_list(value: Any) -> tuple[tuple[bytes, tuple[int, ...]], ...]:
    if not value:
        return ()
    if not isinstance(value, list):
        raise _invalid("accessList must be a list")
    return tuple(
        (
            _to_address(entry["address"], "accessList.address"),
            tuple(_to_int(key, "accessList.storageKeys") for key in entry.get("storageKeys", [])),
        )
        for entry in value
    )


def _insert_block_rows(conn: sqlite3.Connection, rows: _BlockRows) -> None:
    conn.execute(
        "INSERT INTO blocks (number, hash, header, tx_hashes) VALUES (?, ?, ?, ?)",
        (rows.number, rows.block_hash, rows.header_json, rows.tx_hashes),
    )
    if rows.txs:
        conn.executemany(
            "INSERT INTO txs (hash, block_number, tx_index, tx, receipt) VALUES (?, ?, ?, ?, ?)", rows.txs
        )
    if rows.logs:
        conn.executemany(
            "INSERT INTO logs (block_number, log_index, tx_index, tx_hash, block_hash, address, "
            "topic0, topic1, topic2, topic3, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows.logs,
        )


def _lock_directory(path: Path) -> int:
    """Hold an exclusive lock on the chain directory: two processes writing one chain would
    corrupt each other's view of the head."""
    fd = os.open(path / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no cross-process guard
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise UsageError(f"the chain in {path} is in use by another process (or another handle)") from exc
    return fd


def _unlock_directory(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)  # closing the descriptor releases the flock
