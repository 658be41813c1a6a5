"""The ledger layer: contracts on an Ethereum-compatible chain, seen through typed Python values.

Knows nothing of torch, crypto or the blob store; talks only standard JSON-RPC through web3.
Exports resolve lazily so ``python -m fedledger.ledger.contracts`` and ``fedledger.ledger.chain`` can
be run or imported without pulling in web3 first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedledger.ledger.client import Ledger
    from fedledger.ledger.connect import connect_rpc
    from fedledger.ledger.contracts import Artifact, compile_all, load_artifact
    from fedledger.ledger.types import (
        Deployment,
        LedgerEvent,
        MemberInfo,
        Phase,
        ProposalInfo,
        ProposalKind,
        Role,
        Submission,
        TaskInfo,
        TaskParams,
        TaskState,
        TxResult,
    )

_EXPORTS: dict[str, str] = {
    "Ledger": "client",
    "connect_rpc": "connect",
    "Artifact": "contracts",
    "compile_all": "contracts",
    "load_artifact": "contracts",
    **{
        name: "types"
        for name in (
            "Deployment",
            "LedgerEvent",
            "MemberInfo",
            "Phase",
            "ProposalInfo",
            "ProposalKind",
            "Role",
            "Submission",
            "TaskInfo",
            "TaskParams",
            "TaskState",
            "TxResult",
        )
    },
}

__all__ = [
    "Artifact",
    "Deployment",
    "Ledger",
    "LedgerEvent",
    "MemberInfo",
    "Phase",
    "ProposalInfo",
    "ProposalKind",
    "Role",
    "Submission",
    "TaskInfo",
    "TaskParams",
    "TaskState",
    "TxResult",
    "compile_all",
    "connect_rpc",
    "load_artifact",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
