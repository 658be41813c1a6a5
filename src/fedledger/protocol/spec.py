"""The task specification: what every participant must agree on before round 1.

The spec travels as an encrypted blob whose hash is part of the task's approved parameters, so a
member trains exactly the model, optimiser and aggregation rule the consortium's admins approved.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """Which network to build: "mlp", "cnn" or a "package.module:Class" path, with its arguments."""

    name: str = "mlp"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(_Strict):
    """Local training hyper-parameters, identical for every trainer."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    fedprox_mu: float = Field(0.0, ge=0)


class AggregationSpec(_Strict):
    """The aggregation rule and the validation every update must pass."""

    rule: Literal["fedavg", "median", "trimmed_mean", "multi_krum"] = "fedavg"
    trim_ratio: float = Field(0.1, ge=0, lt=0.5)
    byzantine: int = Field(1, ge=0)
    selected: int | None = Field(None, ge=1)
    max_update_norm: float | None = Field(None, gt=0)
    max_blob_bytes: int = Field(256 * 1024 * 1024, ge=1024)

    def rule_params(self) -> dict[str, Any]:
        """Keyword arguments for ``fedledger.aggregation.get_rule``."""
        if self.rule == "trimmed_mean":
            return {"trim_ratio": self.trim_ratio}
        if self.rule == "multi_krum":
            return {"num_byzantine": self.byzantine, "num_selected": self.selected}
        return {}


class TaskSpec(_Strict):
    """Everything about a task that is not on chain as a number but must be agreed."""

    name: str
    seed: int = 0
    dataset: str
    num_classes: int = Field(ge=2)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, so its hash is reproducible."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskSpec:
        return cls.model_validate_json(data)
