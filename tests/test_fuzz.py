"""Property-based tests on every place fedledger takes bytes or values it did not make.

Sealed blobs from the store, update payloads from peers (through the whole fetch -> decrypt -> decode ->
validate path), run configurations, and the arguments the ledger client turns into transactions: any
input gives a result or a clear fedledger error, never another exception, and never a hang (each
example has a deadline). tests/test_codec.py fuzzes the safetensors decoder on its own; here it is
reached the way an aggregator reaches it.
"""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedledger.aggregation import ExclusionReason
from fedledger.codec import encode_tensors
from fedledger.crypto import BlobContext, TaskKey, open_blob, seal
from fedledger.errors import ConfigError, DecryptionError, LedgerError, TransactionRevertedError, UsageError
from fedledger.ledger import Deployment, Ledger
from fedledger.ledger.client import _revert_reason
from fedledger.ledger.types import Submission, TaskInfo
from fedledger.protocol.ports import AeadSealer
from fedledger.protocol.rounds import fetch_update
from fedledger.protocol.session import TaskSession
from fedledger.protocol.spec import AggregationSpec, TaskSpec
from fedledger.sim.config import load_config, parse_config
from fedledger.sim.templates import EXAMPLE_CONFIG
from fedledger.store import MemoryBlobStore

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FUZZ, max_examples=40)

CONTRACT = "0x" + "11" * 20
SENDER = "0x" + "22" * 20
OTHER = "0x" + "33" * 20
KEY = TaskKey(bytes(range(32)))
CTX = BlobContext(chain_id=1337, contract=CONTRACT, task_id=1, round=2, sender=SENDER, kind="update")
VALID_BLOB = seal(KEY, b"a plaintext that is not an update", CTX)

# --------------------------------------------------------------------------- sealed blobs


@FUZZ
@given(st.binary(max_size=300))
def test_open_blob_on_arbitrary_bytes_only_fails_to_decrypt(blob: bytes) -> None:
    with pytest.raises(DecryptionError) as failure:
        open_blob(KEY, blob, CTX)
    assert "\n" not in str(failure.value)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID_BLOB) - 1), st.integers(1, 255)), min_size=1, max_size=6))
def test_any_change_to_a_sealed_blob_is_detected(flips: list[tuple[int, int]]) -> None:
    blob = bytearray(VALID_BLOB)
    for index, mask in flips:
        blob[index] ^= mask
    assume(bytes(blob) != VALID_BLOB)
    with pytest.raises(DecryptionError):
        open_blob(KEY, bytes(blob), CTX)


@FUZZ
@given(
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**256 - 1),
    st.sampled_from([SENDER, OTHER]),
    st.sampled_from(["update", "model", "spec"]),
)
def test_a_blob_opens_only_in_its_own_context(task_id: int, round_: int, sender: str, kind: str) -> None:
    other = BlobContext(chain_id=1337, contract=CONTRACT, task_id=task_id, round=round_, sender=sender, kind=kind)
    if other.associated_data() == CTX.associated_data():
        assert open_blob(KEY, VALID_BLOB, other) == b"a plaintext that is not an update"
    else:
        with pytest.raises(DecryptionError):
            open_blob(KEY, VALID_BLOB, other)


@FUZZ
@given(
    st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=8)),
    st.one_of(st.text(max_size=44), st.none(), st.integers()),
    st.one_of(st.text(max_size=70), st.none()),
)
def test_blob_context_rejects_bad_fields_with_usage_error(round_: Any, sender: Any, kind: Any) -> None:
    try:
        BlobContext(chain_id=1, contract=CONTRACT, task_id=1, round=round_, sender=sender, kind=kind)
    except UsageError as exc:
        assert "blob context" in str(exc)


# --------------------------------------------------------------------------- untrusted updates, end to end

REFERENCE = {
    "layer.bias": np.zeros(3, dtype=np.float32),
    "layer.weight": np.zeros((3, 2), dtype=np.float32),
}
MAX_BLOB = 4096


def _session() -> TaskSession:
    task = TaskInfo(
        task_id=1,
        spec_hash=bytes(32),
        initial_model_hash=bytes(32),
        num_rounds=3,
        participants=(SENDER, OTHER),
        aggregators=(OTHER,),
        committee_size=1,
        min_updates=1,
        quorum=1,
        round_duration=60,
        num_trainers=2,
        creator=OTHER,
    )
    spec = TaskSpec(
        name="fuzz",
        dataset="breast_cancer",
        num_classes=2,
        aggregation=AggregationSpec(max_update_norm=1e6, max_blob_bytes=MAX_BLOB),
    )
    return TaskSession(task=task, key=KEY, spec=spec, chain_id=1337, contract=CONTRACT)


SESSION = _session()


def _fetch(blob: bytes) -> tuple[dict[str, np.ndarray] | None, Any]:
    store = MemoryBlobStore()
    address = store.put(blob)
    submission = Submission(member=SENDER, blob_hash=address, num_samples=10)
    update, exclusion = fetch_update(SESSION, store, AeadSealer(), submission, 2, REFERENCE)
    assert (update is None) != (exclusion is None)
    if exclusion is not None:
        assert isinstance(exclusion.reason, ExclusionReason) and exclusion.reason != 0
        assert exclusion.member == SENDER and "\n" not in exclusion.detail
    return update, exclusion


@FUZZ
@given(st.binary(max_size=2 * MAX_BLOB))
def test_arbitrary_stored_bytes_are_excluded_not_raised(blob: bytes) -> None:
    update, exclusion = _fetch(blob)
    assert update is None
    expected = {ExclusionReason.DECRYPT_FAILED} if len(blob) <= MAX_BLOB else {ExclusionReason.OVERSIZED}
    assert exclusion.reason in expected


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_plaintext_sealed_properly_is_excluded_as_malformed(plaintext: bytes) -> None:
    update, exclusion = _fetch(seal(KEY, plaintext, SESSION.update_context(2, SENDER)))
    assert update is None and exclusion.reason == ExclusionReason.MALFORMED


_names = st.sampled_from(["layer.bias", "layer.weight", "extra", "layer.bias "])
_dtypes = st.sampled_from(["<f4", "<f8", "<f2", "<i4", "u1", "?"])
_values = st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf, 1e30])


@FUZZ
@given(
    st.dictionaries(_names, st.tuples(_dtypes, st.lists(st.integers(0, 3), max_size=3), _values), max_size=3),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)
def test_peer_tensors_are_included_exactly_when_they_match_and_are_finite(
    spec: dict[str, tuple[str, list[int], float]], metadata: dict[str, str]
) -> None:
    tensors = {}
    for name, (dtype, shape, value) in spec.items():
        with np.errstate(invalid="ignore", over="ignore"):
            tensors[name] = np.full(shape, value).astype(dtype)
    plaintext = encode_tensors(tensors, metadata)
    update, exclusion = _fetch(seal(KEY, plaintext, SESSION.update_context(2, SENDER)))
    matches = sorted(tensors) == sorted(REFERENCE) and all(
        tensors[n].shape == REFERENCE[n].shape and tensors[n].dtype == np.float32 for n in REFERENCE
    )
    finite = all(np.isfinite(a).all() for a in tensors.values() if a.dtype.kind == "f")
    small = all(float(np.abs(a.astype(np.float64)).max(initial=0)) < 1e5 for a in tensors.values())
    if len(seal(KEY, plaintext, CTX)) > MAX_BLOB:
        assert exclusion is not None and exclusion.reason == ExclusionReason.OVERSIZED
    elif matches and finite and small:
        assert update is not None, exclusion
        assert sorted(update) == sorted(REFERENCE)
    else:
        assert exclusion is not None


# --------------------------------------------------------------------------- configuration

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_SECTIONS = ["task", "data", "model", "training", "aggregation", "protocol", "chain", "security", "members"]
VALID_RAW = tomllib.loads(EXAMPLE_CONFIG)


def _parse_or_config_error(raw: Any) -> None:
    try:
        config = parse_config(raw, "fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ") and "\n" not in message, message
    else:
        assert config.members


@FUZZ
@given(st.dictionaries(st.sampled_from(_SECTIONS) | st.text(max_size=6), _json, max_size=6))
def test_config_of_arbitrary_values_is_valid_or_a_config_error(raw: dict[str, Any]) -> None:
    _parse_or_config_error(raw)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


VALID_PATHS = _paths(VALID_RAW)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(VALID_PATHS), _json | st.just("<delete>")), min_size=1, max_size=4))
def test_mutated_example_config_is_valid_or_a_config_error(edits: list[tuple[tuple[Any, ...], Any]]) -> None:
    raw = tomllib.loads(EXAMPLE_CONFIG)
    for path, value in edits:
        target: Any = raw
        for step in path[:-1]:
            try:
                target = target[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            key = path[-1]
            if isinstance(target, dict) and value == "<delete>":
                target.pop(key, None)
            elif isinstance(target, dict) or (
                isinstance(target, list) and isinstance(key, int) and key < len(target)
            ):
                target[key] = value
    _parse_or_config_error(raw)


@FEW
@given(st.text(max_size=200))
def test_config_file_of_arbitrary_text_is_valid_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc).strip()


# --------------------------------------------------------------------------- transaction arguments


class _RecordingEngine:
    """Stands in for the transaction engine: keeps the calldata instead of signing and sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def send(self, account: Any, to: str, data: bytes, gas: int, what: str) -> dict[str, Any]:
        self.sent.append((what, data, gas))
        return {"transactionHash": bytes(32), "blockNumber": 1, "gasUsed": 21_000, "logs": []}


def _offline_ledger() -> tuple[Ledger, _RecordingEngine]:
    engine = _RecordingEngine()
    ledger = Ledger.__new__(Ledger)
    ledger._init(None, Deployment(1337, CONTRACT, OTHER, 0), engine)  # type: ignore[arg-type]
    return ledger, engine


ACCOUNT = Account.from_key(bytes(31) + b"\x01")
_anything = st.one_of(
    st.integers(),
    st.integers(-(2**300), 2**300),
    st.booleans(),
    st.none(),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.lists(st.integers(-5, 300), max_size=4),
)
_uint = st.one_of(st.integers(0, 2**256 - 1), st.integers(-(2**260), 2**260), _anything)
_hash32 = st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=64), _anything)


def _encoded_or_usage_error(call: Any, engine: _RecordingEngine) -> bytes | None:
    before = len(engine.sent)
    try:
        call()
    except UsageError as exc:
        assert "\n" not in str(exc)
        assert len(engine.sent) == before  # nothing was sent
        return None
    return engine.sent[-1][1]


@FUZZ
@given(_uint, _uint, _hash32, _uint)
def test_submit_update_arguments_encode_or_give_a_usage_error(
    task_id: Any, round_: Any, blob_hash: Any, num_samples: Any
) -> None:
    ledger, engine = _offline_ledger()
    data = _encoded_or_usage_error(
        lambda: ledger.submit_update(ACCOUNT, task_id, round_, blob_hash, num_samples), engine
    )
    valid = (
        all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**256 for v in (task_id, round_, num_samples))
        and isinstance(blob_hash, bytes)
        and len(blob_hash) == 32
    )
    assert (data is not None) == valid
    if data is not None:
        assert abi_decode(["uint256", "uint256", "bytes32", "uint256"], data[4:]) == (
            task_id,
            round_,
            blob_hash,
            num_samples,
        )


@FUZZ
@given(_uint, _uint, _hash32, _uint, st.one_of(st.lists(st.integers(-3, 300), max_size=70), _anything))
def test_propose_aggregate_arguments_encode_or_give_a_usage_error(
    task_id: Any, round_: Any, model_hash: Any, included: Any, reasons: Any
) -> None:
    ledger, engine = _offline_ledger()
    data = _encoded_or_usage_error(
        lambda: ledger.propose_aggregate(ACCOUNT, task_id, round_, model_hash, included, reasons), engine
    )
    if data is not None:
        # included goes as 256-bit words (at least one per 256 reasons), reasons as one byte each
        task, rnd, model, words, codes = abi_decode(["uint256", "uint256", "bytes32", "uint256[]", "bytes"], data[4:])
        assert (task, rnd, model) == (task_id, round_, model_hash)
        assert sum(w << (256 * i) for i, w in enumerate(words)) == included
        assert len(words) >= -(-len(reasons) // 256)
        assert codes == bytes(reasons)
        assert engine.sent[-1][2] > 0


@FUZZ
@given(_uint, _uint, st.one_of(st.floats(), _anything), st.one_of(st.floats(), _anything), _uint)
def test_post_metrics_arguments_encode_or_give_a_usage_error(
    task_id: Any, round_: Any, accuracy: Any, loss: Any, num_examples: Any
) -> None:
    ledger, engine = _offline_ledger()
    _encoded_or_usage_error(
        lambda: ledger.post_metrics(ACCOUNT, task_id, round_, accuracy, loss, num_examples), engine
    )


@FUZZ
@given(_uint, _uint, st.one_of(st.lists(st.integers(-3, 2**33), max_size=5), _anything), _hash32)
def test_register_dataset_arguments_encode_or_give_a_usage_error(
    task_id: Any, num_samples: Any, histogram: Any, root: Any
) -> None:
    ledger, engine = _offline_ledger()
    _encoded_or_usage_error(lambda: ledger.register_dataset(ACCOUNT, task_id, num_samples, histogram, root), engine)


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)), st.text(max_size=80))
def test_revert_reason_of_arbitrary_error_data_never_raises(data: Any, message: str) -> None:
    error = Exception(message)
    error.data = data  # type: ignore[attr-defined]
    reason = _revert_reason(error)
    assert reason is None or isinstance(reason, str)


# --------------------------------------------------------------------------- through a real chain


@pytest.fixture(scope="module")
def chain_ledger(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from web3 import Web3

    from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider

    chain = EmbeddedChain.create(tmp_path_factory.mktemp("fuzzchain"), 1337, {ACCOUNT.address: 10**24})
    ledger = Ledger.deploy(
        Web3(EmbeddedProvider(chain)),
        ACCOUNT,
        admins=[ACCOUNT.address],
        threshold=1,
        members=[(ACCOUNT.address, "fuzzer", 7, bytes(32))],
    )
    yield ledger
    chain.close()


@FEW
@given(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1), st.binary(min_size=32, max_size=32), _uint)
def test_well_encoded_but_wrong_transactions_revert_with_a_reason(
    chain_ledger: Ledger, task_id: int, round_: int, blob_hash: bytes, num_samples: Any
) -> None:
    try:
        chain_ledger.submit_update(ACCOUNT, task_id, round_, blob_hash, num_samples)
    except TransactionRevertedError as exc:
        assert exc.reason == "unknown task", exc  # no task exists on this chain
    except UsageError:
        assert not (isinstance(num_samples, int) and not isinstance(num_samples, bool) and 0 <= num_samples < 2**256)
    except LedgerError as exc:  # pragma: no cover - would be a bug: the node refused the transaction
        raise AssertionError(f"not a revert: {exc}") from exc
    else:
        raise AssertionError("a submission to a task that does not exist was accepted")
