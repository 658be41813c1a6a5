"""Where the time of each round went, split the way the summary reports it."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

CATEGORIES = ("train", "crypto", "ledger", "store", "aggregate", "evaluate")


class RoundTimer:
    """Accumulates wall seconds per round and category (instrumentation, not communication)."""

    def __init__(self) -> None:
        self._seconds: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0.0))

    @contextmanager
    def measure(self, round_: int, category: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[round_][category] += time.perf_counter() - start

    def round_seconds(self, round_: int) -> dict[str, float]:
        return dict(self._seconds[round_])

    def totals(self) -> dict[str, float]:
        total = dict.fromkeys(CATEGORIES, 0.0)
        for per_round in self._seconds.values():
            for key, value in per_round.items():
                total[key] += value
        return total
