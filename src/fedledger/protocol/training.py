"""Where a trainer's local training runs: inline (a member node), or on a pool of threads (a simulation).

A member node trains its one model at a time with every core. A simulation holds many members on one
machine; small models train faster as several single-threaded jobs side by side than one after another
with all cores (one local epoch of ten SmallCNN members on Fashion-MNIST on two cores: 3.8 s against 4.7 s),
which is how Flower's Ray actors run them too. ``ParallelTraining`` lets the simulation start every
trainer's job of a round before any trainer needs its result; the trainer then collects its own.

A job is a pure function of the round's global model, the member's data and the seed, so where and when
it runs changes nothing in the committed update beyond float rounding of multi-threaded kernels.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

__all__ = ["InlineTraining", "LocalTraining", "ParallelTraining", "draws_random_numbers"]

T = TypeVar("T")


def draws_random_numbers(model: nn.Module) -> bool:
    """True if training ``model`` draws from torch's global RNG (dropout): such jobs must run alone,
    since concurrent jobs would interleave their draws and the run would no longer be reproducible."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


class LocalTraining:
    """Runs training jobs for trainers. ``run`` returns the job's result, computing it if not started."""

    def prefetch(self, key: Hashable, job: Callable[[], object]) -> None:
        """Start ``job`` ahead of ``run(key, ...)`` if this engine can; the default does nothing."""

    def started(self, key: Hashable) -> bool:
        """Whether a job for ``key`` was prefetched and not yet collected."""
        return False

    def run(self, key: Hashable, job: Callable[[], T]) -> T:
        return job()

    def forget(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop started jobs whose key ``keep`` rejects (a round that ended before they were collected)."""

    def close(self) -> None:
        """Release threads; the engine is unusable afterwards."""

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The span in which jobs run (a simulation's ``run``); the default changes nothing."""
        yield


class InlineTraining(LocalTraining):
    """Every job runs when its trainer asks, on the caller's thread with torch's default threads."""


class ParallelTraining(LocalTraining):
    """Jobs run on ``workers`` threads with one torch thread each, so they do not oversubscribe cores.

    Inside ``running()`` torch runs single-threaded in the whole process (``torch.set_num_threads``
    is process-wide), so the simulation's own work, evaluation included, also uses one core; the
    previous setting comes back when the span ends, whatever ends it.
    """

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fedledger-train")
        self._jobs: dict[Hashable, Future[object]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def prefetch(self, key: Hashable, job: Callable[[], object]) -> None:
        with self._lock:
            if key not in self._jobs:
                self._jobs[key] = self._pool.submit(job)

    def started(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._jobs

    def run(self, key: Hashable, job: Callable[[], T]) -> T:
        with self._lock:
            future = self._jobs.pop(key, None)
        if future is None:
            return job()
        return future.result()  # type: ignore[return-value]  # prefetched under the same key

    def forget(self, keep: Callable[[Hashable], bool]) -> None:
        with self._lock:
            stale = [key for key in self._jobs if not keep(key)]
            for key in stale:
                self._jobs.pop(key).cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._jobs.clear()
