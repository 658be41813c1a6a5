"""Deterministic aggregation of model deltas and the validation that decides which ones count (numpy only)."""

from fedledger.aggregation.rules import (
    RULE_NAMES,
    AggregationRule,
    apply_update,
    coordinate_median,
    fedavg,
    get_rule,
    multi_krum,
    multi_krum_select,
    trimmed_mean,
)
from fedledger.aggregation.validation import ExclusionReason, Rejection, update_norm, validate_update

__all__ = [
    "RULE_NAMES",
    "AggregationRule",
    "ExclusionReason",
    "Rejection",
    "apply_update",
    "coordinate_median",
    "fedavg",
    "get_rule",
    "multi_krum",
    "multi_krum_select",
    "trimmed_mean",
    "update_norm",
    "validate_update",
]
