"""Hostile members, for simulations and tests only: never part of a real member's process.

Each adversary is the honest actor with one step overridden, so it reaches the rest of the consortium
the only way a real attacker could: through signed transactions on the chain and bytes in the store.

Two families:

* **Model poisoning** (``attack = "..."`` on a ``[[members]]`` table of a simulated run): updates that
  are well-formed and pass validation but pull the model the wrong way. Robust aggregation rules are the
  defence. See :data:`POISONING_ATTACKS` and :func:`make_trainer`.
* **Protocol attacks** (used by ``tests/test_attacks.py``): malformed, replayed, withheld, swapped or
  impersonated updates, double submissions, a dishonest aggregator, a non-member and a removed member.
  Validation, the AEAD's associated data, content addressing and the contracts are the defence.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from fedledger.codec import encode_tensors
from fedledger.crypto import MemberIdentity, content_address, new_identity
from fedledger.errors import LedgerError, TransactionRevertedError
from fedledger.learning import Dataset
from fedledger.ledger import Ledger
from fedledger.ledger.types import Phase, Submission
from fedledger.protocol.actors import Actor, Aggregator, Trainer, derive_seed
from fedledger.protocol.ports import LedgerPort, Sealer
from fedledger.protocol.rounds import RoundAggregate, model_metadata
from fedledger.protocol.session import TaskSession
from fedledger.protocol.timing import RoundTimer
from fedledger.protocol.training import LocalTraining
from fedledger.store import BlobStore, LocalBlobStore, MemoryBlobStore

log = logging.getLogger(__name__)

Update = dict[str, np.ndarray]

#: The model-poisoning behaviours ``[[members]] attack = ...`` accepts (simulation only).
POISONING_ATTACKS = ("sign_flip", "scale", "noise", "label_flip", "alie")
#: ``scale``: the honest delta multiplied by this.
SCALE_FACTOR = 10.0
#: ``noise``: the update is N(0, NOISE_STD^2) per coordinate instead of a trained delta.
NOISE_STD = 1.0


def _map_floats(update: Update, fn: Any) -> Update:
    """Apply ``fn`` to every floating-point tensor, keeping names, shapes and dtypes."""
    out: Update = {}
    for name in sorted(update):
        array = np.asarray(update[name])
        out[name] = np.ascontiguousarray(fn(array).astype(array.dtype)) if array.dtype.kind == "f" else array
    return out


# --------------------------------------------------------------------------- model poisoning


class SignFlipTrainer(Trainer):
    """Trains honestly, then submits the negated delta (gradient ascent)."""

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        delta, count = super().local_update(session, round_)
        return _map_floats(delta, lambda a: -a), count


class ScaleTrainer(Trainer):
    """Trains honestly, then submits its delta scaled by :data:`SCALE_FACTOR` (model replacement)."""

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        delta, count = super().local_update(session, round_)
        return _map_floats(delta, lambda a: a * SCALE_FACTOR), count


class NoiseTrainer(Trainer):
    """Does not train: submits Gaussian noise N(0, NOISE_STD^2) of the model's shape, seeded per round."""

    trains_own_data = False

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        reference = self.global_model(session, round_)
        index = session.participant_index(self.identity.address)
        rng = np.random.default_rng(derive_seed(session.spec.seed, index, round_) ^ 0x6E6F697365)
        noise = _map_floats(reference, lambda a: rng.normal(0.0, NOISE_STD, size=a.shape))
        return noise, len(self.data)


class LabelFlipTrainer(Trainer):
    """Data poisoning: trains honestly on its records with every label y replaced by C - 1 - y."""

    def __init__(self, *args: Any, data: Dataset, **kwargs: Any) -> None:
        flipped = Dataset(
            features=data.features,
            labels=np.ascontiguousarray((data.num_classes - 1) - data.labels, dtype=np.int64),
            num_classes=data.num_classes,
            name=f"{data.name}/label-flipped",
        )
        super().__init__(*args, data=flipped, **kwargs)


class AlieCollusion:
    """The colluding "a little is enough" attackers of one run (Baruch et al., NeurIPS 2019).

    The attackers do not see honest members' updates. They estimate the benign distribution from
    their own honest local training: every colluder trains normally on its own records, and the group
    takes the coordinate-wise mean mu and standard deviation sigma (ddof=1) of those deltas. Every
    colluder then submits the same update mu - z * sigma, where z = Phi^-1((n - s) / n) with
    s = floor(n / 2 + 1) - f for n trainers and f colluders: the largest shift that keeps the malicious
    updates inside the spread that median- and distance-based rules accept. With a single attacker sigma
    is zero, so the "attack" is its own honest update.
    """

    def __init__(self) -> None:
        self.members: list[AlieTrainer] = []
        self._cache: dict[tuple[int, int], Update] = {}

    def z_score(self, num_trainers: int) -> float:
        f = len(self.members)
        supporters = math.floor(num_trainers / 2 + 1) - f
        p = (num_trainers - supporters) / num_trainers
        return NormalDist().inv_cdf(min(max(p, 0.5), 0.999))

    def update(self, caller: Trainer, session: TaskSession, round_: int) -> Update:
        key = (session.task_id, round_)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        benign = [
            caller.train_delta(session, round_, m.data, session.participant_index(m.identity.address))[0]
            for m in self.members
        ]
        z = self.z_score(session.task.num_trainers)
        malicious: Update = {}
        for name in sorted(benign[0]):
            stack = np.stack([np.asarray(b[name], dtype=np.float64) for b in benign])
            mean = stack.mean(axis=0)
            std = stack.std(axis=0, ddof=1) if len(benign) > 1 else np.zeros_like(mean)
            malicious[name] = np.ascontiguousarray((mean - z * std).astype(benign[0][name].dtype))
        self._cache = {key: malicious}
        return malicious


class AlieTrainer(Trainer):
    """A member of an :class:`AlieCollusion`: submits the group's crafted update."""

    trains_own_data = False  # the collusion trains every colluder's data in the first one's turn

    collusion: AlieCollusion

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        return self.collusion.update(self, session, round_), len(self.data)


_POISONERS: dict[str, type[Trainer]] = {
    "sign_flip": SignFlipTrainer,
    "scale": ScaleTrainer,
    "noise": NoiseTrainer,
    "label_flip": LabelFlipTrainer,
    "alie": AlieTrainer,
}


def make_trainer(
    attack: str | None,
    identity: MemberIdentity,
    ledger: LedgerPort,
    store: BlobStore,
    sealer: Sealer,
    timer: RoundTimer,
    *,
    data: Dataset,
    device: str,
    training: LocalTraining | None = None,
) -> Trainer:
    """An honest :class:`Trainer` (``attack=None``) or the poisoning trainer ``attack`` names."""
    cls = Trainer if attack is None else _POISONERS[attack]
    return cls(identity, ledger, store, sealer, timer, data=data, device=device, training=training)


def link_colluders(trainers: list[Trainer]) -> None:
    """Put every ALIE attacker of a run into one collusion (they estimate the benign spread together)."""
    collusion = AlieCollusion()
    for trainer in trainers:
        if isinstance(trainer, AlieTrainer):
            trainer.collusion = collusion
            collusion.members.append(trainer)


# --------------------------------------------------------------------------- malformed updates


def _first_float(update: Update) -> str:
    return next(name for name in sorted(update) if np.asarray(update[name]).dtype.kind == "f")


class NonFiniteTrainer(Trainer):
    """Submits its honest delta with one value replaced by NaN (or +Inf)."""

    def __init__(self, *args: Any, value: float = float("nan"), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.value = value

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        delta, count = super().local_update(session, round_)
        name = _first_float(delta)
        poisoned = np.array(delta[name], copy=True)
        poisoned.reshape(-1)[0] = self.value
        return {**delta, name: poisoned}, count


class WrongNamesTrainer(Trainer):
    """Renames one tensor of its delta."""

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        delta, count = super().local_update(session, round_)
        name = sorted(delta)[0]
        renamed = {k: v for k, v in delta.items() if k != name}
        renamed[name + ".evil"] = delta[name]
        return renamed, count


class WrongShapeTrainer(Trainer):
    """Drops the last row of one tensor of its delta."""

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        delta, count = super().local_update(session, round_)
        name = next(n for n in sorted(delta) if np.asarray(delta[n]).shape and delta[n].shape[0] > 1)
        return {**delta, name: np.ascontiguousarray(delta[name][:-1])}, count


class WrongDtypeTrainer(Trainer):
    """Sends one tensor as float64 instead of the model's float32."""

    def local_update(self, session: TaskSession, round_: int) -> tuple[Update, int]:
        delta, count = super().local_update(session, round_)
        name = _first_float(delta)
        return {**delta, name: np.asarray(delta[name], dtype=np.float64)}, count


class _Trap:
    """Unpickling this creates a directory: proof that somebody ran pickle on peer data."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.mkdir, (str(self.marker),))


class PickleTrainer(Trainer):
    """Sends a pickle (what ``torch.save`` would produce) whose loading runs code: it makes ``marker``."""

    def __init__(self, *args: Any, marker: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marker = marker

    def encode_update(self, delta: Update) -> bytes:
        return pickle.dumps({"state": delta, "hook": _Trap(self.marker)})


class GarbageTrainer(Trainer):
    """Sends random bytes shaped like a safetensors file (a plausible little-endian header length)."""

    def encode_update(self, delta: Update) -> bytes:
        body = hashlib.sha256(self.identity.address.encode()).digest() * 64
        return (len(body) // 2).to_bytes(8, "little") + body


class OversizedTrainer(Trainer):
    """Sends a valid update padded with ``pad_bytes`` of metadata, to exceed the task's blob limit."""

    def __init__(self, *args: Any, pad_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pad_bytes = pad_bytes

    def encode_update(self, delta: Update) -> bytes:
        return encode_tensors(delta, metadata={"padding": "x" * self.pad_bytes})


# --------------------------------------------------------------------------- commitment attacks


class WithholdingTrainer(Trainer):
    """Commits the hash of a sealed update but never writes the blob to the store."""

    def store_update(self, blob: bytes) -> bytes:
        return content_address(blob)


class ReplayTrainer(Trainer):
    """From round 2 on, commits its own blob of the previous round again instead of a new update."""

    def _train_and_submit(self, session: TaskSession, round_: int) -> None:
        if round_ == 1:
            super()._train_and_submit(session, round_)
            return
        previous = self.ledger.submissions(session.task_id, round_ - 1)
        mine = [s for s in previous if s.member.lower() == self.identity.address.lower()]
        if not mine:
            super()._train_and_submit(session, round_)
            return
        self.submit(session, round_, mine[0].blob_hash, mine[0].num_samples)


class ImpersonatingTrainer(Trainer):
    """Waits for ``victim`` to submit, then commits the victim's blob hash under its own name."""

    def __init__(self, *args: Any, victim: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.victim = victim

    def _victim_submission(self, task_id: int, round_: int) -> Submission | None:
        for submission in self.ledger.submissions(task_id, round_):
            if submission.member.lower() == self.victim.lower():
                return submission
        return None

    def step(self, task_id: int) -> bool:
        state = self.ledger.task_state(task_id)
        if state.phase == Phase.TRAINING and self._victim_submission(task_id, state.round) is None:
            return False
        return super().step(task_id)

    def _train_and_submit(self, session: TaskSession, round_: int) -> None:
        stolen = self._victim_submission(session.task_id, round_)
        assert stolen is not None
        self.submit(session, round_, stolen.blob_hash, min(stolen.num_samples, len(self.data)))


class StoreSwapTrainer(Trainer):
    """After its hash is on chain, overwrites its blob in the store with a different valid update
    (its delta times 100, sealed for the same round and sender): what a hostile store could do."""

    def _train_and_submit(self, session: TaskSession, round_: int) -> None:
        delta, count = self.local_update(session, round_)
        blob = self.seal_update(session, round_, self.encode_update(delta))
        blob_hash = self.store_update(blob)
        if not self.submit(session, round_, blob_hash, count):
            return
        bigger = _map_floats(delta, lambda a: a * 100.0)
        swapped = self.seal_update(session, round_, self.encode_update(bigger))
        overwrite_blob(self.store, blob_hash, swapped)


def overwrite_blob(store: BlobStore, address: bytes, data: bytes) -> None:
    """Replace the bytes stored under ``address`` (breaking content addressing on purpose)."""
    if isinstance(store, LocalBlobStore):
        path = store.path_for(address)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif isinstance(store, MemoryBlobStore):
        store._blobs[address] = bytes(data)
    else:
        raise TypeError(f"cannot overwrite blobs in {type(store).__name__}")


class DoubleSubmitTrainer(Trainer):
    """Submits honestly, then tries a second, different update for the same round."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: round -> revert reason of the second submission
        self.second_refused: dict[int, str] = {}

    def _train_and_submit(self, session: TaskSession, round_: int) -> None:
        delta, count = self.local_update(session, round_)
        first = self.store_update(self.seal_update(session, round_, self.encode_update(delta)))
        if not self.submit(session, round_, first, count):
            return
        doubled = _map_floats(delta, lambda a: a * 2.0)
        second = self.store_update(self.seal_update(session, round_, self.encode_update(doubled)))
        try:
            self.ledger.submit_update(self.identity.account, session.task_id, round_, second, count)
        except TransactionRevertedError as exc:
            self.second_refused[round_] = exc.reason


# --------------------------------------------------------------------------- committee and membership


class DishonestAggregator(Aggregator):
    """Proposes a tampered model (the honest aggregate plus 0.5 on one tensor), stored and sealed properly."""

    def aggregate(
        self,
        session: TaskSession,
        round_: int,
        submissions: list[Submission],
        global_state: dict[str, np.ndarray],
    ) -> RoundAggregate:
        honest = super().aggregate(session, round_, submissions, global_state)
        model = dict(honest.model)
        name = _first_float(model)
        model[name] = np.ascontiguousarray(model[name] + np.float32(0.5))
        plaintext = encode_tensors(model, metadata=model_metadata(session, round_))
        blob = self.sealer.seal(session.key, plaintext, session.model_context(round_), deterministic=True)
        return replace(honest, model=model, plaintext=plaintext, blob=blob, model_hash=content_address(blob))


class Intruder(Actor):
    """Not a member: a funded account that tries to commit an update in every round.

    ``sponsor`` (a member) pays its gas once, so its transactions reach the contract and revert there.
    Refusals are kept in ``refused`` (round -> revert reason).
    """

    def __init__(self, ledger: Ledger, store: BlobStore, sealer: Sealer, *, sponsor: MemberIdentity) -> None:
        super().__init__(new_identity("intruder"), ledger, store, sealer)
        self.chain_ledger = ledger
        self.sponsor = sponsor
        self.refused: dict[int, str] = {}
        self._funded = False

    def _fund(self) -> None:
        w3 = self.chain_ledger.w3
        sponsor = self.sponsor.account
        fees = {"maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9}
        tx: dict[str, Any] = {
            "chainId": self.chain_ledger.chain_id,
            "nonce": w3.eth.get_transaction_count(sponsor.address, "pending"),
            "to": self.identity.address,
            "value": 10**18,
            "gas": 21_000,
            **fees,
        }
        signed = sponsor.sign_transaction(tx)
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        self._funded = True

    def step(self, task_id: int) -> bool:
        state = self.ledger.task_state(task_id)
        if state.phase != Phase.TRAINING or state.round in self.refused:
            return False
        if not self._funded:
            self._fund()
        fake = hashlib.sha256(f"intruder:{task_id}:{state.round}".encode()).digest()
        try:
            self.ledger.submit_update(self.identity.account, task_id, state.round, fake, 1)
        except TransactionRevertedError as exc:
            self.refused[state.round] = exc.reason
        except LedgerError as exc:  # refused before execution (e.g. no funds): also a refusal
            self.refused[state.round] = str(exc)
        else:
            self.refused[state.round] = ""
        return True


class MemberRemoval(Actor):
    """Governance during a run: when ``at_round`` opens, two admins remove ``target`` from the consortium."""

    def __init__(
        self,
        ledger: Ledger,
        store: BlobStore,
        sealer: Sealer,
        *,
        admins: tuple[MemberIdentity, MemberIdentity],
        target: str,
        at_round: int,
    ) -> None:
        super().__init__(admins[0], ledger, store, sealer)
        self.chain_ledger = ledger
        self.admins = admins
        self.target = target
        self.at_round = at_round
        self.done = False

    def step(self, task_id: int) -> bool:
        if self.done or self.ledger.task_state(task_id).round < self.at_round:
            return False
        proposal = self.chain_ledger.propose_remove_member(self.admins[0].account, self.target)
        self.chain_ledger.approve(self.admins[1].account, proposal)
        self.done = True
        return True


__all__ = [
    "NOISE_STD",
    "POISONING_ATTACKS",
    "SCALE_FACTOR",
    "AlieCollusion",
    "AlieTrainer",
    "DishonestAggregator",
    "DoubleSubmitTrainer",
    "GarbageTrainer",
    "ImpersonatingTrainer",
    "Intruder",
    "LabelFlipTrainer",
    "MemberRemoval",
    "NoiseTrainer",
    "NonFiniteTrainer",
    "OversizedTrainer",
    "PickleTrainer",
    "ReplayTrainer",
    "ScaleTrainer",
    "SignFlipTrainer",
    "StoreSwapTrainer",
    "WithholdingTrainer",
    "WrongDtypeTrainer",
    "WrongNamesTrainer",
    "WrongShapeTrainer",
    "link_colluders",
    "make_trainer",
    "overwrite_blob",
]
