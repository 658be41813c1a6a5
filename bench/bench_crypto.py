"""What fedledger's security adds per model update: serialise, hash, seal, open, store, on one core.

For payloads of about 0.8 MB, 40 MB and 400 MB of float32 tensors (safetensors, keys sorted) it times
each step on its own and the pipeline every trainer runs once per round: serialise -> seal -> SHA-256 of
the sealed blob (the content address committed on chain). Throughput is plaintext bytes per second.
Each figure is the median of ``--repeat`` runs after one warm-up run (the first touch of fresh memory in a
VM is much slower than steady state and would say more about the hypervisor than about fedledger).

    python bench/bench_crypto.py [--sizes 0.8,40,400] [--repeat 5] [--tune-malloc] [--json out.json]

``--tune-malloc`` asks glibc to keep freed large buffers for reuse instead of unmapping them, as a
long-running member process would want: every round handles same-sized buffers, and in a VM faulting
fresh pages in costs more than the hashing and encryption themselves.

Prints a markdown table, then the JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cryptography
import numpy as np
from safetensors.numpy import save

from fedledger.crypto import BlobContext, TaskKey, content_address, open_blob, seal
from fedledger.store import LocalBlobStore, MemoryBlobStore

CONTEXT = BlobContext(
    chain_id=1337,
    contract="0x" + "5a" * 20,
    task_id=1,
    round=3,
    sender="0x" + "c3" * 20,
    kind="update",
)


def make_tensors(total_bytes: int) -> dict[str, np.ndarray]:
    """A model-shaped state dict: a few large weight matrices and small biases, float32."""
    rng = np.random.default_rng(0)
    floats = total_bytes // 4
    shares = [0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.015, 0.005]
    tensors: dict[str, np.ndarray] = {}
    used = 0
    for i, share in enumerate(shares):
        n = int(floats * share) if i < len(shares) - 1 else floats - used
        used += n
        tensors[f"layer{i}.weight"] = rng.standard_normal(n, dtype=np.float32)
    return dict(sorted(tensors.items()))


def timed(fn: Callable[[], object], repeat: int, setup: Callable[[], None] | None = None) -> list[float]:
    """Run ``fn`` once to warm up, then ``repeat`` timed times; ``setup`` runs untimed before each call."""
    times = []
    for i in range(repeat + 1):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        if i:  # the first run is the warm-up: first touch of fresh pages, lazy imports, caches
            times.append(time.perf_counter() - start)
    return times


def bench_size(megabytes: float, repeat: int, workdir: Path) -> dict[str, Any]:
    tensors = make_tensors(int(megabytes * 1e6))
    plaintext = save(tensors)
    size = len(plaintext)
    key = TaskKey.generate()
    blob = seal(key, plaintext, CONTEXT)
    assert open_blob(key, blob, CONTEXT) == plaintext

    def pipeline() -> bytes:
        return content_address(seal(key, save(tensors), CONTEXT))

    def pipeline_deterministic() -> bytes:
        return content_address(seal(key, save(tensors), CONTEXT, deterministic=True))

    def pipeline_off() -> bytes:  # the "security off" engine still serialises and hashes
        return content_address(save(tensors))

    local = LocalBlobStore(workdir / "get", fsync=True)
    memory = MemoryBlobStore()
    address = local.put(blob)
    memory.put(blob)
    put_root = workdir / "put"
    put_store = [LocalBlobStore(put_root)]

    def fresh_put_store() -> None:
        # A put of a blob already present is a no-op by design, so each timed put gets an empty store.
        shutil.rmtree(put_root, ignore_errors=True)
        put_store[0] = LocalBlobStore(put_root, fsync=True)

    steps: dict[str, tuple[Callable[[], object], Callable[[], None] | None]] = {
        "serialise (safetensors)": (lambda: save(tensors), None),
        "sha256": (lambda: hashlib.sha256(plaintext).digest(), None),
        "seal (random nonce)": (lambda: seal(key, plaintext, CONTEXT), None),
        "seal (deterministic)": (lambda: seal(key, plaintext, CONTEXT, deterministic=True), None),
        "open": (lambda: open_blob(key, blob, CONTEXT), None),
        "local put (fsync)": (lambda: put_store[0].put(blob), fresh_put_store),
        "local get (verified)": (lambda: local.get(address), None),
        "memory get (verified)": (lambda: memory.get(address), None),
        "PIPELINE serialise+seal+hash": (pipeline, None),
        "PIPELINE deterministic": (pipeline_deterministic, None),
        "baseline serialise+hash (security off)": (pipeline_off, None),
    }
    results = {}
    for name, (fn, setup) in steps.items():
        times = timed(fn, repeat, setup)
        median = statistics.median(times)
        results[name] = {
            "median_s": median,
            "best_s": min(times),
            "gb_per_s": size / median / 1e9,
            "best_gb_per_s": size / min(times) / 1e9,
        }
    return {"payload_bytes": size, "tensors": len(tensors), "repeat": repeat, "steps": results}


def tune_malloc() -> bool:
    """The allocator setting the fedledger command line applies at start-up (fedledger.runtime)."""
    from fedledger.runtime import tune_allocator

    return tune_allocator()


def environment() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
    }


def markdown(report: dict[str, Any]) -> str:
    sizes = report["results"]
    headers = [f"{r['payload_bytes'] / 1e6:.1f} MB" for r in sizes]
    lines = [
        "| step | " + " | ".join(headers) + " |",
        "| --- | " + " | ".join("---:" for _ in headers) + " |",
    ]
    for step in sizes[0]["steps"]:
        cells = []
        for r in sizes:
            s = r["steps"][step]
            cells.append(f"{s['gb_per_s']:.2f} GB/s ({s['median_s'] * 1e3:.1f} ms)")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.8,40,400", help="payload sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--tune-malloc", action="store_true", help="keep freed buffers for reuse (glibc)")
    args = parser.parse_args()
    tuned = tune_malloc() if args.tune_malloc else False
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-") as tmp:
        results = []
        for mb in sizes:
            workdir = Path(tmp) / f"{mb}MB"
            results.append(bench_size(mb, args.repeat if mb < 100 else max(3, args.repeat // 2), workdir))
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "crypto",
        "environment": {**environment(), "malloc_tuned": tuned},
        "results": results,
    }
    print(markdown(report))
    print()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
