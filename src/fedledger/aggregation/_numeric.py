"""Reductions whose result is fixed by IEEE-754 alone, not by numpy's summation strategy or the CPU.

``np.sum`` and ``np.dot`` may change their association order with SIMD width, BLAS library or thread
count. Aggregators on different machines must agree bit for bit, so every reduction that can change a
decision (norm bound, Krum score) goes through here: element-wise float64 adds in a fixed block order,
then ``math.fsum`` (correctly rounded) over the block.
"""

from __future__ import annotations

import math

import numpy as np

_BLOCK = 16384


def exact_order_sum(values: np.ndarray) -> float:
    """Sum a float64 vector with a result that depends only on its values and length."""
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    full = flat.size - flat.size % _BLOCK
    accumulator = np.zeros(_BLOCK, dtype=np.float64)
    for start in range(0, full, _BLOCK):
        accumulator += flat[start : start + _BLOCK]
    return math.fsum(accumulator.tolist() + flat[full:].tolist())


def squared_norm(values: np.ndarray) -> float:
    """Deterministic squared L2 norm in float64."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return exact_order_sum(flat * flat)
