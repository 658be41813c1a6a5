"""Deterministic aggregation rules over model deltas (name -> float32 array).

Every honest aggregator of a round must produce the same bytes, so each rule:

* takes the updates in the caller's canonical order (the protocol sorts them, e.g. by member address)
  and never reorders them except by exactly-defined value sorts;
* accumulates in float64 with element-wise operations in a fixed order (no ``np.sum``/BLAS reductions,
  whose association order can vary by machine), and casts to float32 once at the end;
* returns a new dict sorted by tensor name holding C-contiguous float32 arrays.

Rules assume the updates were validated (see ``validation.validate_update``): same names, shapes and
finite values. A structural mismatch is still reported as ``UsageError`` rather than silently broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from fedledger.aggregation._numeric import squared_norm
from fedledger.errors import UsageError

__all__ = [
    "RULE_NAMES",
    "AggregationRule",
    "apply_update",
    "coordinate_median",
    "fedavg",
    "get_rule",
    "multi_krum",
    "multi_krum_select",
    "trimmed_mean",
]

Update = Mapping[str, np.ndarray]
AggregationRule = Callable[[Sequence[Update], Sequence[int]], dict[str, np.ndarray]]


def _layout(
    updates: Sequence[Update], num_samples: Sequence[int], rule: str
) -> list[tuple[str, tuple[int, ...]]]:
    """Check the updates agree structurally; return the sorted (name, shape) layout."""
    if not updates:
        raise UsageError(f"{rule}: no updates to aggregate")
    if len(num_samples) != len(updates):
        raise UsageError(f"{rule}: {len(updates)} updates but {len(num_samples)} sample counts")
    layout = [(name, tuple(np.shape(updates[0][name]))) for name in sorted(updates[0])]
    for index, update in enumerate(updates[1:], start=1):
        if sorted(update) != [name for name, _ in layout]:
            raise UsageError(f"{rule}: update {index} has different tensor names from update 0")
        for name, shape in layout:
            if tuple(np.shape(update[name])) != shape:
                raise UsageError(
                    f"{rule}: update {index} tensor {name!r} has shape {np.shape(update[name])}, "
                    f"update 0 has {shape}"
                )
    return layout


def _as64(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)


def _finish(accumulated: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(accumulated, dtype=np.float32)


def _mean_in_order(updates: Sequence[Update], indices: Sequence[int], name: str) -> np.ndarray:
    accumulator = np.zeros(np.shape(updates[indices[0]][name]), dtype=np.float64)
    for index in indices:
        accumulator += _as64(updates[index][name])
    return _finish(accumulator / len(indices))


def fedavg(updates: Sequence[Update], num_samples: Sequence[int]) -> dict[str, np.ndarray]:
    """Sample-weighted mean (FedAvg): sum(n_i * u_i) / sum(n_i), summed in the given order.

    ``n_i * u_i`` is exact in float64 for n_i < 2**29, so only the running sum rounds.
    """
    layout = _layout(updates, num_samples, "fedavg")
    if any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0 for n in num_samples):
        raise UsageError(f"fedavg: sample counts must be positive integers, got {list(num_samples)}")
    counts = [int(n) for n in num_samples]
    total = float(sum(counts))
    result: dict[str, np.ndarray] = {}
    for name, shape in layout:
        accumulator = np.zeros(shape, dtype=np.float64)
        for update, count in zip(updates, counts, strict=True):
            accumulator += float(count) * _as64(update[name])
        result[name] = _finish(accumulator / total)
    return result


def coordinate_median(updates: Sequence[Update], num_samples: Sequence[int]) -> dict[str, np.ndarray]:
    """Coordinate-wise median, unweighted (sample counts are self-reported, so they cannot buy influence).

    With an even number of updates the two middle values are averaged in float64 (exact for float32).
    """
    layout = _layout(updates, num_samples, "median")
    count = len(updates)
    result: dict[str, np.ndarray] = {}
    for name, _ in layout:
        ordered = np.sort(np.stack([_as64(update[name]) for update in updates]), axis=0)
        middle = ordered[count // 2] if count % 2 else (ordered[count // 2 - 1] + ordered[count // 2]) * 0.5
        result[name] = _finish(middle)
    return result


def trimmed_mean(trim_ratio: float) -> AggregationRule:
    """Coordinate-wise trimmed mean: drop floor(trim_ratio * k) values from each end, average the rest.

    Unweighted, like the median. ``trim_ratio`` is read as the decimal the user wrote (0.1 * 30 trims
    exactly 3), so the trim count cannot depend on binary rounding.
    """
    if isinstance(trim_ratio, bool) or not isinstance(trim_ratio, int | float) or not 0 <= trim_ratio < 0.5:
        raise UsageError(f"trimmed_mean: trim_ratio must be in [0, 0.5), got {trim_ratio!r}")
    ratio = Fraction(str(trim_ratio))

    def rule(updates: Sequence[Update], num_samples: Sequence[int]) -> dict[str, np.ndarray]:
        layout = _layout(updates, num_samples, "trimmed_mean")
        count = len(updates)
        trim = math.floor(ratio * count)
        kept = count - 2 * trim
        result: dict[str, np.ndarray] = {}
        for name, shape in layout:
            ordered = np.sort(np.stack([_as64(update[name]) for update in updates]), axis=0)
            accumulator = np.zeros(shape, dtype=np.float64)
            for row in range(trim, count - trim):
                accumulator += ordered[row]
            result[name] = _finish(accumulator / kept)
        return result

    rule.__name__ = f"trimmed_mean({trim_ratio})"
    return rule


def multi_krum_select(
    updates: Sequence[Update], num_byzantine: int, num_selected: int | None = None
) -> list[int]:
    """Indices (ascending) of the updates Multi-Krum keeps.

    Each update's score is the sum of its k - f - 2 smallest squared Euclidean distances (over all
    tensors flattened in name order, float64) to the other updates; the ``num_selected`` lowest scores
    win, ties going to the lower index. Needs k > 2f + 2 updates (Blanchard et al., 2017).
    ``num_selected`` defaults to k - f and is capped there, so dropouts never make it invalid.
    """
    count = len(updates)
    if count <= 2 * num_byzantine + 2:
        raise UsageError(
            f"multi_krum: {count} updates cannot tolerate num_byzantine={num_byzantine} "
            f"(needs more than {2 * num_byzantine + 2})"
        )
    names = sorted(updates[0])
    vectors = [
        np.concatenate([_as64(update[name]).reshape(-1) for name in names]) if names else np.zeros(0)
        for update in updates
    ]
    distances = np.zeros((count, count), dtype=np.float64)
    for i in range(count):
        for j in range(i + 1, count):
            distances[i, j] = distances[j, i] = squared_norm(vectors[i] - vectors[j])
    neighbours = count - num_byzantine - 2
    scores = []
    for i in range(count):
        others = sorted(float(distances[i, j]) for j in range(count) if j != i)
        scores.append(math.fsum(others[:neighbours]))
    keep = min(count - num_byzantine, num_selected if num_selected is not None else count)
    ranked = sorted(range(count), key=lambda index: (scores[index], index))
    return sorted(ranked[:keep])


def multi_krum(num_byzantine: int, num_selected: int | None = None) -> AggregationRule:
    """Multi-Krum: keep the updates ``multi_krum_select`` picks and average them **unweighted**.

    Unweighted because sample counts are self-reported: weighting would let a selected Byzantine member
    claim a huge count and dominate the average.
    """
    if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int) or num_byzantine < 0:
        raise UsageError(f"multi_krum: num_byzantine must be a non-negative integer, got {num_byzantine!r}")
    if num_selected is not None and (
        isinstance(num_selected, bool) or not isinstance(num_selected, int) or num_selected < 1
    ):
        raise UsageError(f"multi_krum: num_selected must be a positive integer, got {num_selected!r}")

    def rule(updates: Sequence[Update], num_samples: Sequence[int]) -> dict[str, np.ndarray]:
        layout = _layout(updates, num_samples, "multi_krum")
        selected = multi_krum_select(updates, num_byzantine, num_selected)
        return {name: _mean_in_order(updates, selected, name) for name, _ in layout}

    rule.__name__ = f"multi_krum({num_byzantine}, {num_selected})"
    return rule


_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (required parameters, optional parameters)
    "fedavg": ((), ()),
    "median": ((), ()),
    "trimmed_mean": (("trim_ratio",), ()),
    "multi_krum": (("num_byzantine",), ("num_selected",)),
}
RULE_NAMES: tuple[str, ...] = tuple(_PARAMETERS)


def get_rule(name: str, **params: Any) -> AggregationRule:
    """Build the rule a task names (``fedavg``, ``median``, ``trimmed_mean``, ``multi_krum``)."""
    if name not in _PARAMETERS:
        raise UsageError(f"unknown aggregation rule {name!r} (valid: {', '.join(RULE_NAMES)})")
    required, optional = _PARAMETERS[name]
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        accepted = ", ".join(required + optional) or "no parameters"
        raise UsageError(
            f"aggregation rule {name!r} does not take {', '.join(unknown)} (accepts: {accepted})"
        )
    missing = [param for param in required if param not in params]
    if missing:
        raise UsageError(f"aggregation rule {name!r} needs {', '.join(missing)}")
    if name == "fedavg":
        return fedavg
    if name == "median":
        return coordinate_median
    if name == "trimmed_mean":
        return trimmed_mean(params["trim_ratio"])
    return multi_krum(params["num_byzantine"], params.get("num_selected"))


def apply_update(global_model: Mapping[str, np.ndarray], aggregated_delta: Update) -> dict[str, np.ndarray]:
    """New global model: (global as float64 + delta as float64) cast back to each tensor's dtype.

    Integer tensors (e.g. batch-norm counters) are rounded to nearest before the cast.
    """
    if sorted(global_model) != sorted(aggregated_delta):
        missing = sorted(set(global_model) - set(aggregated_delta))
        extra = sorted(set(aggregated_delta) - set(global_model))
        raise UsageError(
            f"apply_update: delta names differ from the model (missing {missing}, extra {extra})"
        )
    result: dict[str, np.ndarray] = {}
    for name in sorted(global_model):
        base = np.asarray(global_model[name])
        delta = np.asarray(aggregated_delta[name])
        if base.shape != delta.shape:
            raise UsageError(f"apply_update: tensor {name!r} has shape {delta.shape}, model has {base.shape}")
        summed = base.astype(np.float64) + delta.astype(np.float64)
        if base.dtype.kind in "iu":
            summed = np.rint(summed)
        result[name] = np.ascontiguousarray(summed.astype(base.dtype))
    return result
