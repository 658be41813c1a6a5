"""Configuration of one member process (``fedledger node --config member.toml``) and of a task proposal.

Paths in a config file are relative to the file, so a member's directory can be moved as a whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedledger.errors import ConfigError
from fedledger.protocol.spec import AggregationSpec, ModelSpec, TrainingSpec

_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberSection(_Strict):
    name: str = Field(min_length=1, max_length=64)
    keystore: Path
    password_file: Path | None = None


class ChainSection(_Strict):
    rpc_url: str = Field(pattern=r"^https?://")
    deployment: Path


class StoreSection(_Strict):
    url: str | None = Field(None, pattern=r"^https?://")
    dir: Path | None = None
    ca_file: Path | None = None


class DataSection(_Strict):
    """This member's own data. ``shard_*`` takes one part of a seeded split, for trials on public data."""

    dataset: Literal["breast_cancer", "digits", "fashion_mnist", "csv"]
    path: Path | None = None
    label_column: str = "label"
    test_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = 0
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    alpha: float = Field(1.0, gt=0)
    min_samples: int = Field(8, ge=1)


class NodeSection(_Strict):
    poll_seconds: float = Field(1.0, gt=0)
    device: str = "cpu"
    exit_when_done: bool = False
    tasks: list[int] = Field(default_factory=list)


class MemberNodeConfig(_Strict):
    member: MemberSection
    chain: ChainSection
    store: StoreSection
    data: DataSection
    node: NodeSection = Field(default_factory=NodeSection)


class TaskSection(_Strict):
    name: str = Field(min_length=1, max_length=64)
    rounds: int = Field(ge=1, le=10_000)
    seed: int = 0
    dataset: str
    num_classes: int = Field(ge=2)


class RulesSection(_Strict):
    committee_size: int = Field(3, ge=1, le=32)
    quorum: int = Field(2, ge=1, le=32)
    min_updates: int = Field(ge=1)
    round_duration: int = Field(600, ge=1)


class TaskProposalConfig(_Strict):
    """A task as an admin proposes it: what to train, how, and which members take part."""

    task: TaskSection
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    protocol: RulesSection
    participants: list[str] = Field(min_length=1)


def _read_toml(path: Path) -> dict[str, object]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _validate(model: type[_M], raw: dict[str, object], source: Path) -> _M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            messages.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"{source}: " + "; ".join(messages)) from None


def _resolve(base: Path, path: Path | None) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else (base / path)


def load_member_config(path: Path) -> MemberNodeConfig:
    """Read a member's config; relative paths are resolved against the file's directory."""
    config = _validate(MemberNodeConfig, _read_toml(path), path)
    base = path.parent
    if config.store.url is None and config.store.dir is None:
        raise ConfigError(f"{path}: store: give either url (a blob server) or dir (a local directory)")
    return config.model_copy(
        update={
            "member": config.member.model_copy(
                update={
                    "keystore": _resolve(base, config.member.keystore),
                    "password_file": _resolve(base, config.member.password_file),
                }
            ),
            "chain": config.chain.model_copy(update={"deployment": _resolve(base, config.chain.deployment)}),
            "store": config.store.model_copy(
                update={
                    "dir": _resolve(base, config.store.dir),
                    "ca_file": _resolve(base, config.store.ca_file),
                }
            ),
            "data": config.data.model_copy(update={"path": _resolve(base, config.data.path)}),
        }
    )


def load_task_proposal(path: Path) -> TaskProposalConfig:
    config = _validate(TaskProposalConfig, _read_toml(path), path)
    if config.protocol.quorum > config.protocol.committee_size:
        raise ConfigError(f"{path}: protocol.quorum exceeds protocol.committee_size")
    return config
