"""Why an update is left out of an aggregate, and the checks that decide it.

``ExclusionReason`` values are written on chain next to each excluded submission, so the numbers are a
stable wire format: never renumber or reuse one, only append.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedledger.aggregation._numeric import squared_norm

__all__ = ["ExclusionReason", "Rejection", "update_norm", "validate_update"]


class ExclusionReason(enum.IntEnum):
    """On-chain code for why a member's update was not aggregated."""

    NOT_SUBMITTED = 1
    BLOB_MISSING = 2
    BLOB_CORRUPT = 3
    DECRYPT_FAILED = 4
    MALFORMED = 5
    WRONG_NAMES = 6
    WRONG_SHAPE = 7
    WRONG_DTYPE = 8
    NON_FINITE = 9
    NORM_BOUND = 10
    OVERSIZED = 11

    @property
    def label(self) -> str:
        """Short human-readable description for reports and the audit."""
        return _LABELS[self]


_LABELS: dict[ExclusionReason, str] = {
    ExclusionReason.NOT_SUBMITTED: "no update submitted",
    ExclusionReason.BLOB_MISSING: "blob missing from the store",
    ExclusionReason.BLOB_CORRUPT: "blob does not match its hash",
    ExclusionReason.DECRYPT_FAILED: "blob does not decrypt",
    ExclusionReason.MALFORMED: "not a valid tensor payload",
    ExclusionReason.WRONG_NAMES: "wrong tensor names",
    ExclusionReason.WRONG_SHAPE: "wrong tensor shape",
    ExclusionReason.WRONG_DTYPE: "wrong tensor dtype",
    ExclusionReason.NON_FINITE: "NaN or infinite values",
    ExclusionReason.NORM_BOUND: "norm above the bound",
    ExclusionReason.OVERSIZED: "blob larger than allowed",
}


@dataclass(frozen=True)
class Rejection:
    """An excluded update: the on-chain reason plus a one-line detail for logs."""

    reason: ExclusionReason
    detail: str


def update_norm(update: Mapping[str, np.ndarray]) -> float:
    """L2 norm over all tensors in float64, identical on every machine (fixed summation order)."""
    total = math.fsum(squared_norm(np.asarray(update[name])) for name in sorted(update))
    return math.sqrt(total)


def validate_update(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], *, max_norm: float | None
) -> Rejection | None:
    """Check an update against the reference model; ``None`` if it may be aggregated.

    Checks run in a fixed order (names, shapes, dtypes, finiteness, norm) so every aggregator records
    the same reason for the same update.
    """
    names, expected = sorted(update), sorted(reference)
    if names != expected:
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        return Rejection(ExclusionReason.WRONG_NAMES, f"missing {missing[:5]}, unexpected {extra[:5]}")
    arrays = {name: np.asarray(update[name]) for name in names}
    for name in names:
        want = np.shape(reference[name])
        if arrays[name].shape != want:
            return Rejection(
                ExclusionReason.WRONG_SHAPE,
                f"tensor {name!r} has shape {arrays[name].shape}, expected {want}",
            )
    for name in names:
        want_dtype = np.asarray(reference[name]).dtype
        if arrays[name].dtype != want_dtype:
            return Rejection(
                ExclusionReason.WRONG_DTYPE,
                f"tensor {name!r} has dtype {arrays[name].dtype}, expected {want_dtype}",
            )
    for name in names:
        array = arrays[name]
        if array.dtype.kind in "fc" and not bool(np.isfinite(array).all()):
            return Rejection(ExclusionReason.NON_FINITE, f"tensor {name!r} holds NaN or infinite values")
    if max_norm is not None:
        norm = update_norm(arrays)
        if not norm <= max_norm:
            return Rejection(
                ExclusionReason.NORM_BOUND, f"L2 norm {norm:.6g} exceeds the bound {max_norm:.6g}"
            )
    return None
