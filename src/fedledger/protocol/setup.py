"""Preparing a task before the admins approve it: sealed spec, sealed initial model, wrapped keys.

Whoever proposes a task generates its key, seals the spec and the round-0 model with it, and wraps it
for each participant's registered X25519 key. Only hashes and wrapped keys go on chain; the key itself
is never stored anywhere in the clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedledger.codec import encode_tensors
from fedledger.crypto import TaskKey
from fedledger.learning import build_model, state_to_numpy
from fedledger.ledger.types import TaskParams
from fedledger.protocol.ports import Sealer
from fedledger.protocol.session import KIND_MODEL, KIND_SPEC, key_wrap_context, task_blob_context
from fedledger.protocol.spec import TaskSpec
from fedledger.store import BlobStore


@dataclass(frozen=True)
class RoundRules:
    """The round protocol's numbers, fixed on chain at task creation."""

    num_rounds: int
    committee_size: int
    min_updates: int
    quorum: int
    round_duration: int


def initial_model(spec: TaskSpec) -> dict[str, np.ndarray]:
    """The round-0 model, seeded by the task so every run with the same seed starts alike."""
    torch.manual_seed(spec.seed)
    return state_to_numpy(build_model(spec.model.name, **spec.model.kwargs))


def prepare_task(
    *,
    chain_id: int,
    contract: str,
    store: BlobStore,
    sealer: Sealer,
    spec: TaskSpec,
    participants: Sequence[tuple[str, bytes]],
    rules: RoundRules,
) -> TaskParams:
    """Seal and store spec and initial model, wrap a fresh task key for each (address, X25519 key)."""
    key = TaskKey.generate()
    spec_blob = sealer.seal(key, spec.to_bytes(), task_blob_context(chain_id, contract, 0, 0, KIND_SPEC))
    spec_hash = store.put(spec_blob)
    plaintext = encode_tensors(
        initial_model(spec), metadata={"fedledger.round": "0", "fedledger.contract": contract.lower()}
    )
    model_blob = sealer.seal(
        key, plaintext, task_blob_context(chain_id, contract, 0, 0, KIND_MODEL), deterministic=True
    )
    model_hash = store.put(model_blob)
    context = key_wrap_context(chain_id, contract, spec_hash)
    return TaskParams(
        spec_hash=spec_hash,
        initial_model_hash=model_hash,
        num_rounds=rules.num_rounds,
        participants=tuple(address for address, _ in participants),
        wrapped_keys=tuple(sealer.wrap_key(key, enc_key, context=context) for _, enc_key in participants),
        committee_size=rules.committee_size,
        min_updates=rules.min_updates,
        quorum=rules.quorum,
        round_duration=rules.round_duration,
    )
