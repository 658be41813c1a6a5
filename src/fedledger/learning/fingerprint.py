"""A commitment to a member's training data that reveals nothing but its size and label counts.

The Merkle root lets a member later prove that a given record was (or a whole dataset is) the one it
committed, without publishing the data.

Canonical record bytes: the record's features as little-endian float32 in C order, followed by its
label as a little-endian int64.

Tree (domain-separated as in RFC 6962, so a leaf can never pass for an inner node):

* leaf  = SHA-256(0x00 || record bytes), in record order;
* inner = SHA-256(0x01 || left || right);
* levels are built pairwise from the left; a level's last node without a partner is promoted
  unchanged to the next level;
* the root of an empty dataset is SHA-256(b"").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedledger.learning.datasets import Dataset

__all__ = ["DatasetFingerprint", "dataset_fingerprint", "leaf_hashes", "merkle_root", "record_bytes"]

_LEAF = b"\x00"
_NODE = b"\x01"


@dataclass(frozen=True)
class DatasetFingerprint:
    """Record count, per-class label histogram (length num_classes) and Merkle root of the records."""

    num_samples: int
    label_histogram: tuple[int, ...]
    merkle_root: bytes


def record_bytes(data: Dataset) -> np.ndarray:
    """[N, record size] uint8 matrix whose row i is record i's canonical bytes (one vectorised copy)."""
    count = len(data)
    features = np.ascontiguousarray(data.features.reshape(count, -1), dtype="<f4").view(np.uint8)
    labels = np.ascontiguousarray(data.labels, dtype="<i8").view(np.uint8).reshape(count, 8)
    return np.concatenate([features.reshape(count, -1), labels], axis=1)


def leaf_hashes(data: Dataset) -> list[bytes]:
    """The Merkle leaves, one per record in order."""
    prefix = hashlib.sha256(_LEAF)
    leaves = []
    for row in record_bytes(data):
        digest = prefix.copy()
        digest.update(row)  # a contiguous row: hashed in place, no copy
        leaves.append(digest.digest())
    return leaves


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree described in the module docstring."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        paired = [
            hashlib.sha256(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def dataset_fingerprint(data: Dataset) -> DatasetFingerprint:
    """Fingerprint of ``data`` as committed on chain."""
    histogram = np.bincount(data.labels, minlength=data.num_classes)
    return DatasetFingerprint(
        num_samples=len(data),
        label_histogram=tuple(int(count) for count in histogram[: data.num_classes]),
        merkle_root=merkle_root(leaf_hashes(data)),
    )
