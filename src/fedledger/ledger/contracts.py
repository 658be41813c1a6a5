"""Vyper sources and their precompiled artifacts.

The artifacts in ``contracts/build/`` are committed so that running fedledger never needs the compiler
(compiling takes seconds; loading JSON takes microseconds). ``compile_all`` regenerates them, and each
artifact records the SHA-256 of its source so a test can catch a stale build.

Regenerate with ``python -m fedledger.ledger.contracts``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fedledger.errors import LedgerError

CONTRACT_NAMES: tuple[str, ...] = ("Consortium", "TrainingTask")
CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
BUILD_DIR = CONTRACTS_DIR / "build"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI (JSON list) and creation bytecode."""

    abi: tuple[dict[str, Any], ...]
    bytecode: bytes


def source_path(name: str) -> Path:
    return CONTRACTS_DIR / f"{name}.vy"


def source_sha256(name: str) -> str:
    return hashlib.sha256(source_path(name).read_bytes()).hexdigest()


def artifact_path(name: str) -> Path:
    return BUILD_DIR / f"{name}.json"


@cache
def load_artifact(name: str) -> Artifact:
    """Read a committed artifact (cached: the ABI is consulted on every transaction)."""
    if name not in CONTRACT_NAMES:
        raise LedgerError(f"unknown contract {name!r}; expected one of {', '.join(CONTRACT_NAMES)}")
    path = artifact_path(name)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LedgerError(
            f"cannot read contract artifact {path}: {e}; run `python -m fedledger.ledger.contracts`"
        ) from e
    return Artifact(abi=tuple(data["abi"]), bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")))


# Paris (no PUSH0, MCOPY or transient storage): the bytecode then runs on every chain a consortium may
# use, including geth 1.13's Clique and Besu's QBFT with older milestones, not only on Cancun chains.
EVM_VERSION = "paris"


def compile_source(name: str) -> dict[str, Any]:
    """Compile one source into the artifact's JSON form (needs the vyper package)."""
    import vyper
    from vyper.compiler.settings import Settings

    source = source_path(name).read_text()
    out = vyper.compile_code(
        source, output_formats=["abi", "bytecode"], settings=Settings(evm_version=EVM_VERSION)
    )
    return {
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "source_sha256": source_sha256(name),
        "vyper_version": vyper.__version__,
        "evm_version": EVM_VERSION,
    }


def compile_all() -> None:
    """Recompile every contract and rewrite ``contracts/build/*.json``."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    for name in CONTRACT_NAMES:
        artifact = compile_source(name)
        artifact_path(name).write_text(json.dumps(artifact, indent=1, sort_keys=True) + "\n")
    load_artifact.cache_clear()


if __name__ == "__main__":
    compile_all()
    for _name in CONTRACT_NAMES:
        print(f"wrote {artifact_path(_name)}")
