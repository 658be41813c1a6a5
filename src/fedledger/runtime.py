"""Process-wide settings the command line applies once at start-up."""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the OS.

    Every round allocates and frees model-sized buffers (serialise, seal, hash). With glibc's defaults
    each one is a fresh mmap whose pages fault in again: measured here, that halves the throughput of
    serialise + hash + encrypt (0.5-0.6 GB/s instead of 0.85-1.2 GB/s, bench/bench_crypto.py). The
    cost is that the process keeps its peak heap, as PyTorch's own caching allocators do. A no-op (False)
    where the C library has no ``mallopt``.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
