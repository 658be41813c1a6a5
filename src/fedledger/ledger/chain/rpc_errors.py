"""The JSON-RPC error the embedded chain raises, shaped like a node's error object."""

from __future__ import annotations

from typing import Any

# JSON-RPC 2.0 and Ethereum node error codes, as geth uses them.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # geth's code for rejected transactions and missing state
EXECUTION_REVERTED = 3  # geth's code for eth_call / eth_estimateGas reverts


class RpcError(Exception):
    """An error a JSON-RPC node would return: ``code``, ``message`` and optional hex ``data``.

    Keeping the wire shape here (rather than a Python-only exception) lets the in-process
    provider and the HTTP server hand clients the very error object geth would.
    """

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __repr__(self) -> str:
        return f"RpcError(code={self.code}, message={self.message!r}, data={self.data!r})"
