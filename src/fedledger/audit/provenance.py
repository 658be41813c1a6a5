"""``fedledger provenance``: where a model file came from, proven from the record.

A model file is matched by content against every finalised global model of the run (the metadata it
carries only says where to look first), then described by what the chain records about that round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedledger.audit.verify import OpenRun, open_run, session_plaintext
from fedledger.codec import decode_metadata
from fedledger.crypto import content_address, to_hex
from fedledger.errors import CodecError, FedledgerError, UsageError, VerificationError
from fedledger.ledger.types import Phase


@dataclass(frozen=True)
class Contributor:
    member: str
    address: str
    num_samples: int
    blob: str
    submit_tx: str
    dataset_samples: int | None
    dataset_merkle_root: str | None
    label_histogram: list[int] | None


def model_provenance(
    model_path: Path, root: Path, *, member: str | None = None, password_file: Path | None = None
) -> dict[str, Any]:
    """Find the round whose finalised model is byte-identical to ``model_path`` and describe it."""
    try:
        data = model_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{model_path}: cannot read model file ({exc.strerror})") from None
    try:
        metadata = decode_metadata(data)
    except CodecError as exc:
        raise UsageError(f"{model_path}: not a safetensors model ({exc})") from None
    opened = open_run(root, member=member, password_file=password_file)
    try:
        return _provenance(opened, data, metadata, model_path)
    finally:
        opened.close()


def _provenance(opened: OpenRun, data: bytes, metadata: dict[str, str], model_path: Path) -> dict[str, Any]:
    ledger, session = opened.ledger, opened.session
    task = session.task
    state = ledger.task_state(task.task_id)
    finalised = task.num_rounds if state.phase == Phase.DONE else state.round - 1
    hinted = metadata.get("fedledger.round", "")
    order = list(range(finalised, 0, -1))
    if hinted.isdigit() and int(hinted) in order:
        order.remove(int(hinted))
        order.insert(0, int(hinted))
    for round_ in order:
        model_hash = ledger.round_model(task.task_id, round_)
        if model_hash is None:
            continue
        try:
            plaintext = session_plaintext(session, opened.store, model_hash, round_)
        except FedledgerError:
            continue
        if plaintext == data:
            return _describe(opened, round_, model_hash, data)
    raise VerificationError(
        f"{model_path}: matches no finalised model of task {task.task_id} in {opened.run.root} "
        f"(sha256 {to_hex(content_address(data))})"
    )


def _describe(opened: OpenRun, round_: int, model_hash: bytes, data: bytes) -> dict[str, Any]:
    ledger, session = opened.ledger, opened.session
    task = session.task
    events = ledger.events(from_block=ledger.deployment.deploy_block)
    datasets: dict[str, Any] = {}
    submit_tx: dict[str, str] = {}
    finalized_tx = ""
    proposals = []
    for event in events:
        args = event.args
        if args.get("taskId") != task.task_id:
            continue
        if event.name == "DatasetRegistered":
            datasets[str(args["member"]).lower()] = args
        elif event.name == "UpdateSubmitted" and args["round"] == round_:
            submit_tx[str(args["member"]).lower()] = event.tx_hash
        elif event.name == "RoundFinalized" and args["round"] == round_:
            finalized_tx = event.tx_hash
        elif event.name == "AggregateProposed" and args["round"] == round_:
            proposals.append(
                {
                    "aggregator": opened.name(str(args["aggregator"])),
                    "model_hash": to_hex(bytes(args["modelHash"])),
                    "agreed": bytes(args["modelHash"]) == model_hash,
                    "tx": event.tx_hash,
                }
            )
    included = ledger.round_included(task.task_id, round_)
    contributors = []
    for sub in ledger.submissions(task.task_id, round_):
        index = session.participant_index(sub.member)
        if not (included >> index) & 1:
            continue
        registered = datasets.get(sub.member.lower())
        contributors.append(
            Contributor(
                member=opened.name(sub.member),
                address=sub.member,
                num_samples=sub.num_samples,
                blob=to_hex(sub.blob_hash),
                submit_tx=submit_tx.get(sub.member.lower(), ""),
                dataset_samples=int(registered["numSamples"]) if registered else None,
                dataset_merkle_root=to_hex(bytes(registered["merkleRoot"])) if registered else None,
                label_histogram=[int(x) for x in registered["labelHistogram"]] if registered else None,
            ).__dict__
        )
    return {
        "model_sha256": to_hex(content_address(data)),
        "chain_id": session.chain_id,
        "contract": session.contract,
        "task_id": task.task_id,
        "round": round_,
        "final": round_ == task.num_rounds,
        "model_blob": to_hex(model_hash),
        "finalized_tx": finalized_tx,
        "committee": [opened.name(a) for a in ledger.committee(task.task_id, round_)],
        "proposals": proposals,
        "contributors": contributors,
        "total_samples": sum(c["num_samples"] for c in contributors),
    }
