"""The deterministic round aggregate: the one computation every committee member and the auditor repeat.

Given the submissions recorded on chain and the blobs in the store, every honest party must produce the
same bytes. So updates are taken in participant order, validated with fixed rules, aggregated with
float64 accumulation, and the new model is sealed with a deterministic nonce: equal models give equal
blobs, hence equal content addresses, which the contract can compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedledger.aggregation import (
    AggregationRule,
    ExclusionReason,
    apply_update,
    coordinate_median,
    get_rule,
    validate_update,
)
from fedledger.codec import decode_tensors, encode_tensors
from fedledger.crypto import content_address
from fedledger.errors import BlobCorruptError, BlobNotFoundError, CodecError, DecryptionError
from fedledger.ledger.types import Submission
from fedledger.protocol.ports import Sealer
from fedledger.protocol.session import TaskSession
from fedledger.store import BlobStore


@dataclass(frozen=True)
class Exclusion:
    """Why one participant's update did not enter a round's aggregate."""

    member: str
    reason: ExclusionReason
    detail: str


@dataclass(frozen=True)
class RoundAggregate:
    """The outcome of aggregating one round, ready to be stored and proposed."""

    round: int
    model: dict[str, np.ndarray]
    plaintext: bytes
    blob: bytes
    model_hash: bytes
    included: int
    reasons: tuple[int, ...]
    exclusions: tuple[Exclusion, ...]
    sample_counts: dict[str, int]


class NothingToAggregateError(Exception):
    """Every submitted update was rejected: there is no aggregate to propose."""


def model_metadata(session: TaskSession, round_: int) -> dict[str, str]:
    """Provenance written into every global model file: which chain, contract, task and round."""
    return {
        "fedledger.chain_id": str(session.chain_id),
        "fedledger.contract": session.contract.lower(),
        "fedledger.task_id": str(session.task_id),
        "fedledger.round": str(round_),
    }


def round_rule(name: str, params: dict[str, object], num_valid: int) -> AggregationRule:
    """The task's rule, adapted deterministically to how many updates survived validation.

    Multi-Krum needs more than 2f + 2 updates; with fewer, the tolerated f shrinks to what the count
    allows, and with two or fewer the coordinate median (their mean) is used, so dropouts never stall
    a round. Every aggregator applies the same adaptation, so they still agree bit for bit.
    """
    if name == "multi_krum":
        raw_byzantine = params.get("num_byzantine", 0)
        byzantine = raw_byzantine if isinstance(raw_byzantine, int) else 0
        if num_valid <= 2:
            return coordinate_median
        allowed = min(byzantine, max(0, (num_valid - 3) // 2))
        selected = params.get("num_selected")
        if isinstance(selected, int):
            selected = min(selected, num_valid - allowed)
        return get_rule(name, num_byzantine=allowed, num_selected=selected)
    return get_rule(name, **params)


def fetch_update(
    session: TaskSession,
    store: BlobStore,
    sealer: Sealer,
    submission: Submission,
    round_: int,
    reference: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray] | None, Exclusion | None]:
    """Fetch, check, decrypt, decode and validate one committed update; never raises for a bad peer."""
    member = submission.member
    try:
        blob = store.get(submission.blob_hash)
    except BlobNotFoundError:
        return None, Exclusion(member, ExclusionReason.BLOB_MISSING, "blob not in the store")
    except BlobCorruptError:
        return None, Exclusion(member, ExclusionReason.BLOB_CORRUPT, "stored bytes do not match the hash")
    # Any other StoreError (store unreachable) propagates: a transient outage must delay the aggregate,
    # not exclude an honest member.
    if len(blob) > session.spec.aggregation.max_blob_bytes:
        detail = f"{len(blob)} bytes > limit {session.spec.aggregation.max_blob_bytes}"
        return None, Exclusion(member, ExclusionReason.OVERSIZED, detail)
    try:
        plaintext = sealer.open(session.key, blob, session.update_context(round_, member))
    except DecryptionError:
        return None, Exclusion(
            member, ExclusionReason.DECRYPT_FAILED, "does not decrypt for this round and sender"
        )
    try:
        update = decode_tensors(plaintext)
    except CodecError as exc:
        return None, Exclusion(member, ExclusionReason.MALFORMED, str(exc))
    rejection = validate_update(update, reference, max_norm=session.spec.aggregation.max_update_norm)
    if rejection is not None:
        return None, Exclusion(member, rejection.reason, rejection.detail)
    return update, None


def aggregate_round(
    session: TaskSession,
    store: BlobStore,
    sealer: Sealer,
    round_: int,
    submissions: list[Submission],
    global_model: dict[str, np.ndarray],
) -> RoundAggregate:
    """Validate every committed update of ``round_`` and aggregate the valid ones bit-exactly."""
    participants = session.task.participants
    reasons = [int(ExclusionReason.NOT_SUBMITTED)] * len(participants)
    by_member = {s.member.lower(): s for s in submissions}
    exclusions: list[Exclusion] = []
    updates: list[dict[str, np.ndarray]] = []
    weights: list[int] = []
    included = 0
    sample_counts: dict[str, int] = {}
    for index, participant in enumerate(participants):
        submission = by_member.get(participant.lower())
        if submission is None:
            continue
        update, exclusion = fetch_update(session, store, sealer, submission, round_, global_model)
        if exclusion is not None:
            reasons[index] = int(exclusion.reason)
            exclusions.append(exclusion)
            continue
        assert update is not None
        reasons[index] = 0
        included |= 1 << index
        updates.append(update)
        weights.append(submission.num_samples)
        sample_counts[participant] = submission.num_samples
    if not updates:
        raise NothingToAggregateError(f"round {round_}: every submitted update was rejected")
    rule = round_rule(session.spec.aggregation.rule, session.spec.aggregation.rule_params(), len(updates))
    delta = rule(updates, weights)
    model = apply_update(global_model, delta)
    plaintext = encode_tensors(model, metadata=model_metadata(session, round_))
    blob = sealer.seal(session.key, plaintext, session.model_context(round_), deterministic=True)
    return RoundAggregate(
        round=round_,
        model=model,
        plaintext=plaintext,
        blob=blob,
        model_hash=content_address(blob),
        included=included,
        reasons=tuple(reasons),
        exclusions=tuple(exclusions),
        sample_counts=sample_counts,
    )
