"""The consortium's administration, as the command line drives it against any chain.

Members publish a *member card* (name, address, X25519 public key: nothing secret); admins deploy the
contracts with the founding members' cards, then every later change (a member in or out, roles, keys,
a new task) is a proposal that executes once the admins' threshold approved it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from fedledger.crypto import MemberIdentity, from_hex, new_identity, save_keystore, to_hex
from fedledger.errors import UsageError
from fedledger.ledger import Ledger
from fedledger.ledger.types import Deployment, Role, TaskParams
from fedledger.node.config import TaskProposalConfig
from fedledger.protocol.ports import AeadSealer
from fedledger.protocol.setup import RoundRules, prepare_task
from fedledger.protocol.spec import TaskSpec
from fedledger.sim.rundir import write_atomic, write_json
from fedledger.store import BlobStore

ROLE_NAMES = {"trainer": Role.TRAINER, "aggregator": Role.AGGREGATOR, "validator": Role.VALIDATOR}


def parse_roles(text: str) -> int:
    """``trainer,aggregator`` -> role bits; an unknown role is a usage error naming the valid ones."""
    bits = 0
    for name in (part.strip().lower() for part in text.split(",") if part.strip()):
        if name not in ROLE_NAMES:
            raise UsageError(f"unknown role '{name}' (roles: {', '.join(ROLE_NAMES)})")
        bits |= int(ROLE_NAMES[name])
    if bits == 0:
        raise UsageError("give at least one role (trainer, aggregator, validator)")
    return bits


def role_names(bits: int) -> list[str]:
    return [name for name, bit in ROLE_NAMES.items() if bits & bit]


@dataclass(frozen=True)
class MemberCard:
    """What a member publishes so admins can register it: no secret in it."""

    name: str
    address: str
    enc_key: bytes

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address, "enc_key": to_hex(self.enc_key)}

    @classmethod
    def read(cls, path: Path) -> MemberCard:
        try:
            raw = json.loads(path.read_text())
            address = str(raw["address"])
            if not is_address(address):
                raise ValueError(f"address {address!r} is not an Ethereum address")
            enc_key = from_hex(str(raw["enc_key"]))
            return cls(name=str(raw["name"]), address=to_checksum_address(address), enc_key=enc_key)
        except FileNotFoundError:
            raise UsageError(f"{path}: member card not found") from None
        except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
            raise UsageError(f"{path}: not a member card ({exc})") from None


def create_member(name: str, keystore: Path, password: str, *, light: bool = False) -> MemberCard:
    """A new identity in an encrypted keystore; returns its public card."""
    if keystore.exists():
        raise UsageError(f"{keystore} already exists; not overwriting a member's key")
    identity = new_identity(name)
    save_keystore(keystore, identity, password, light=light)
    return card_of(identity)


def card_of(identity: MemberIdentity) -> MemberCard:
    return MemberCard(name=identity.name, address=identity.address, enc_key=identity.enc_public_key)


def deploy_consortium(
    ledger_w3: Any,
    deployer: MemberIdentity,
    members: Sequence[tuple[MemberCard, int]],
    admins: Sequence[str],
    threshold: int,
    out: Path,
) -> Deployment:
    """Deploy both contracts with the founding members and write ``deployment.json``."""
    by_name = {card.name: card for card, _ in members}
    admin_addresses: list[str] = []
    for admin in admins:
        if is_address(admin):
            admin_addresses.append(to_checksum_address(admin))
        elif admin in by_name:
            admin_addresses.append(by_name[admin].address)
        else:
            raise UsageError(f"admin '{admin}' is neither an address nor the name of a founding member")
    if not 1 <= threshold <= len(admin_addresses):
        raise UsageError(f"--threshold {threshold} must be between 1 and the {len(admin_addresses)} admins")
    ledger = Ledger.deploy(
        ledger_w3,
        deployer.account,
        admins=admin_addresses,
        threshold=threshold,
        members=[(card.address, card.name, roles, card.enc_key) for card, roles in members],
    )
    deployment = ledger.deployment
    document = json.loads(deployment.to_json())
    document["members"] = [
        {"name": card.name, "address": card.address, "roles": role_names(roles)} for card, roles in members
    ]
    write_json(out, document)
    return deployment


def resolve_member(ledger: Ledger, who: str) -> str:
    """A member's address from an address or its registered name."""
    if is_address(who):
        return to_checksum_address(who)
    matches = [m for m in ledger.members() if m.name == who]
    if not matches:
        raise UsageError(f"no member named '{who}' in the consortium at {ledger.deployment.consortium}")
    return matches[-1].address


def task_params_to_json(params: TaskParams) -> dict[str, Any]:
    return {
        "spec_hash": to_hex(params.spec_hash),
        "initial_model_hash": to_hex(params.initial_model_hash),
        "num_rounds": params.num_rounds,
        "participants": list(params.participants),
        "wrapped_keys": ["0x" + k.hex() for k in params.wrapped_keys],
        "committee_size": params.committee_size,
        "min_updates": params.min_updates,
        "quorum": params.quorum,
        "round_duration": params.round_duration,
    }


def task_params_from_file(path: Path) -> TaskParams:
    try:
        raw = json.loads(path.read_text())
        return TaskParams(
            spec_hash=from_hex(raw["spec_hash"]),
            initial_model_hash=from_hex(raw["initial_model_hash"]),
            num_rounds=int(raw["num_rounds"]),
            participants=tuple(to_checksum_address(p) for p in raw["participants"]),
            wrapped_keys=tuple(bytes.fromhex(str(k).removeprefix("0x")) for k in raw["wrapped_keys"]),
            committee_size=int(raw["committee_size"]),
            min_updates=int(raw["min_updates"]),
            quorum=int(raw["quorum"]),
            round_duration=int(raw["round_duration"]),
        )
    except FileNotFoundError:
        raise UsageError(f"{path}: task parameters file not found") from None
    except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
        raise UsageError(f"{path}: not a task parameters file ({exc})") from None


def propose_task(
    ledger: Ledger, store: BlobStore, admin: MemberIdentity, config: TaskProposalConfig, params_out: Path
) -> tuple[int, TaskParams]:
    """Seal the spec and initial model, wrap the key for each participant, and propose the task."""
    spec = TaskSpec(
        name=config.task.name,
        seed=config.task.seed,
        dataset=config.task.dataset,
        num_classes=config.task.num_classes,
        model=config.model,
        training=config.training,
        aggregation=config.aggregation,
    )
    if config.participants == ["all"]:
        members = [m for m in ledger.members() if m.active]
    else:
        members = []
        for who in config.participants:
            info = ledger.member(resolve_member(ledger, who))
            if info is None or not info.active:
                raise UsageError(f"participant '{who}' is not an active member")
            members.append(info)
    params = prepare_task(
        chain_id=ledger.chain_id,
        contract=ledger.deployment.training_task,
        store=store,
        sealer=AeadSealer(),
        spec=spec,
        participants=[(m.address, m.enc_key) for m in members],
        rules=RoundRules(
            num_rounds=config.task.rounds,
            committee_size=config.protocol.committee_size,
            min_updates=config.protocol.min_updates,
            quorum=config.protocol.quorum,
            round_duration=config.protocol.round_duration,
        ),
    )
    write_atomic(params_out, (json.dumps(task_params_to_json(params), indent=2) + "\n").encode())
    proposal = ledger.propose_task(admin.account, params)
    return proposal, params
