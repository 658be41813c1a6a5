"""The run configuration: one TOML file, validated strictly so a typo is an error, not a default.

Errors name the file and the dotted field, in one line, because the user fixes them in an editor.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedledger.errors import ConfigError
from fedledger.ledger.types import MAX_PARTICIPANTS
from fedledger.protocol.spec import AggregationSpec, ModelSpec, TrainingSpec

RoleName = Literal["trainer", "aggregator", "validator"]
#: Model-poisoning behaviours a simulated trainer can play (see ``fedledger.sim.adversary``).
AttackName = Literal["sign_flip", "scale", "noise", "label_flip", "alie"]
ROLE_BITS: dict[str, int] = {"trainer": 1, "aggregator": 2, "validator": 4}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]+")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSection(_Strict):
    name: str = Field("fedledger-task", min_length=1, max_length=64)
    rounds: int = Field(10, ge=1, le=10_000)
    seed: int = 0


class DataSection(_Strict):
    dataset: Literal["breast_cancer", "digits", "fashion_mnist", "csv"] = "breast_cancer"
    path: str | None = None
    label_column: str = "label"
    test_fraction: float = Field(0.25, gt=0, lt=1)
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    alpha: float = Field(0.5, gt=0)
    min_samples: int = Field(8, ge=1)


class ProtocolSection(_Strict):
    committee_size: int = Field(3, ge=1, le=32)
    quorum: int = Field(2, ge=1, le=32)
    min_updates: int | None = Field(None, ge=1)
    round_duration: int = Field(600, ge=1)
    admin_threshold: int = Field(2, ge=1)


class ChainSection(_Strict):
    backend: Literal["embedded"] = "embedded"
    chain_id: int = Field(1337, ge=1)


class SecuritySection(_Strict):
    enabled: bool = True


class MemberSection(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    roles: list[RoleName] = Field(default_factory=lambda: list[RoleName](["trainer", "aggregator"]))
    admin: bool = False
    drop_out_rounds: list[int] = Field(default_factory=list)
    #: Simulation only: this member poisons its updates (``fedledger.sim.adversary``); never a real member.
    attack: AttackName | None = None

    @property
    def role_bits(self) -> int:
        bits = 0
        for role in self.roles:
            bits |= ROLE_BITS[role]
        return bits


class RunConfig(_Strict):
    """Everything a simulated consortium run needs; the task spec is derived from it."""

    task: TaskSection = Field(default_factory=TaskSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    protocol: ProtocolSection = Field(default_factory=ProtocolSection)
    chain: ChainSection = Field(default_factory=ChainSection)
    security: SecuritySection = Field(default_factory=SecuritySection)
    device: str = "cpu"
    #: Trainers whose local training runs at once, one torch thread each (0: one per CPU; 1: in turn).
    train_workers: int = Field(default=0, ge=0, le=256)
    members: list[MemberSection] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        names = [m.name for m in self.members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"member names must be unique; repeated: {', '.join(duplicates)}")
        if len(self.members) > MAX_PARTICIPANTS:
            raise ValueError(f"at most {MAX_PARTICIPANTS} members take part in one task")
        trainers = self.trainers
        aggregators = [m for m in self.members if "aggregator" in m.roles]
        if not trainers:
            raise ValueError("no member has the 'trainer' role")
        if not any("validator" in m.roles for m in self.members):
            raise ValueError("no member has the 'validator' role (someone must evaluate the model)")
        if self.protocol.committee_size > len(aggregators):
            raise ValueError(
                f"protocol.committee_size {self.protocol.committee_size} exceeds the "
                f"{len(aggregators)} members with the 'aggregator' role"
            )
        if self.protocol.quorum > self.protocol.committee_size:
            raise ValueError(
                f"protocol.quorum {self.protocol.quorum} exceeds protocol.committee_size "
                f"{self.protocol.committee_size}"
            )
        if self.min_updates > len(trainers):
            raise ValueError(f"protocol.min_updates {self.min_updates} exceeds the {len(trainers)} trainers")
        if self.protocol.admin_threshold > len(self.admins):
            raise ValueError(
                f"protocol.admin_threshold {self.protocol.admin_threshold} exceeds the {len(self.admins)} admins"
            )
        for member in self.members:
            if member.attack is not None and "trainer" not in member.roles:
                raise ValueError(f"members '{member.name}': attack needs the 'trainer' role")
            bad = [r for r in member.drop_out_rounds if not 1 <= r <= self.task.rounds]
            if bad:
                raise ValueError(
                    f"members '{member.name}': drop_out_rounds {bad} outside 1..{self.task.rounds}"
                )
        return self

    @property
    def trainers(self) -> list[MemberSection]:
        return [m for m in self.members if "trainer" in m.roles]

    @property
    def admins(self) -> list[MemberSection]:
        """Members marked admin; if none are, the first three members govern the consortium."""
        marked = [m for m in self.members if m.admin]
        return marked or self.members[: min(3, len(self.members))]

    @property
    def min_updates(self) -> int:
        """Default: two thirds of the trainers, so one dropout in three does not stall a round."""
        if self.protocol.min_updates is not None:
            return self.protocol.min_updates
        return max(1, math.ceil(2 * len(self.trainers) / 3))


def _field_path(loc: tuple[int | str, ...], config: dict[str, object]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) and parts and parts[-1] == "members":
            members = config.get("members")
            name = None
            if isinstance(members, list) and item < len(members) and isinstance(members[item], dict):
                name = members[item].get("name")
            label = ""
            if isinstance(name, str) and name:
                label = f" ('{name}')" if _PLAIN_KEY.fullmatch(name) else f" ({json.dumps(name)})"
            parts[-1] = f"members[{item}]{label}"
        elif isinstance(item, str) and not _PLAIN_KEY.fullmatch(item):
            parts.append(json.dumps(item))  # quoted and escaped: an odd key never breaks the one-line message
        else:
            parts.append(str(item))
    return ".".join(parts)


def parse_config(raw: dict[str, object], source: str) -> RunConfig:
    """Validate a decoded TOML document; ``source`` names it in every error."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            where = _field_path(tuple(error["loc"]), raw)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            messages.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"{source}: " + "; ".join(messages)) from None


def load_config(path: Path) -> RunConfig:
    """Read and validate a run configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path))
