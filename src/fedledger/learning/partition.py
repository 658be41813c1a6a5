"""Split one dataset among simulated members: IID or label-skewed (Dirichlet).

Both return one sorted int64 index array per member; together they cover every record exactly once.
All randomness comes from ``np.random.default_rng(seed)``, so a seed names a partition.
"""

from __future__ import annotations

import numpy as np

from fedledger.errors import UsageError

__all__ = ["partition_dirichlet", "partition_iid"]

_MAX_DIRICHLET_ATTEMPTS = 1000


def _check(labels: np.ndarray, num_members: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise UsageError(f"partition: labels must be one-dimensional, got shape {array.shape}")
    if num_members < 1:
        raise UsageError(f"partition: num_members must be at least 1, got {num_members}")
    if len(array) < num_members:
        raise UsageError(f"partition: {len(array)} records cannot give each of {num_members} members one")
    return array


def partition_iid(labels: np.ndarray, num_members: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into ``num_members`` parts whose sizes differ by at most one."""
    array = _check(labels, num_members)
    order = np.random.default_rng(seed).permutation(len(array))
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_members)]


def partition_dirichlet(
    labels: np.ndarray, num_members: int, alpha: float, seed: int, min_size: int = 10
) -> list[np.ndarray]:
    """Label skew as in Hsu et al. 2019 / NIID-Bench: per class, shares drawn from Dir(alpha).

    For each class the records are shuffled and cut by proportions p ~ Dir(alpha * 1); a member already
    holding more than N / num_members records gets no further share (the usual balancing step). The
    whole draw repeats, continuing the same random stream, until every member has ``min_size``
    records. Small ``alpha`` means strong skew; large ``alpha`` approaches IID.
    """
    array = _check(labels, num_members)
    if not alpha > 0:
        raise UsageError(f"partition: Dirichlet alpha must be positive, got {alpha}")
    if min_size < 0 or min_size * num_members > len(array):
        raise UsageError(
            f"partition: {len(array)} records cannot give each of {num_members} members {min_size}"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(array)
    by_class = [np.flatnonzero(array == value) for value in classes]
    target = len(array) / num_members
    for _ in range(_MAX_DIRICHLET_ATTEMPTS):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_members)]
        sizes = np.zeros(num_members, dtype=np.int64)
        for members_of_class in by_class:
            shuffled = rng.permutation(members_of_class)
            shares = rng.dirichlet(np.full(num_members, alpha))
            shares = np.where(sizes < target, shares, 0.0)
            total = shares.sum()
            shares = shares / total if total > 0 else np.full(num_members, 1.0 / num_members)
            cuts = (np.cumsum(shares) * len(shuffled)).astype(np.int64)[:-1]
            for member, piece in enumerate(np.split(shuffled, cuts)):
                shards[member].append(piece)
                sizes[member] += len(piece)
        if int(sizes.min()) >= min_size:
            return [np.sort(np.concatenate(parts)).astype(np.int64) for parts in shards]
    raise UsageError(
        f"partition: no Dirichlet(alpha={alpha}) split gave all {num_members} members {min_size} records "
        f"in {_MAX_DIRICHLET_ATTEMPTS} draws; raise alpha or lower min_size"
    )
