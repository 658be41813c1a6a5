"""A web3.py provider that answers from an :class:`EmbeddedChain` in the same process."""

from __future__ import annotations

import itertools
import json
from typing import Any, cast

from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from fedledger.errors import LedgerError

from .embedded import EmbeddedChain
from .rpc_errors import INTERNAL_ERROR, RpcError

__all__ = ["EmbeddedProvider"]


class EmbeddedProvider(JSONBaseProvider):
    """``Web3(EmbeddedProvider(chain))``: JSON-RPC without a socket.

    Responses carry the same envelope an HTTP node returns, so web3 raises its usual
    ``ContractLogicError`` for reverts and ``Web3RPCError`` for rejected transactions.
    """

    def __init__(self, chain: EmbeddedChain, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chain = chain
        self._ids = itertools.count()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        request_id = next(self._ids)
        # web3 hands over HexBytes and ints; the wire form is what the chain expects
        wire_params = json.loads(self.encode_rpc_request(method, params))["params"]
        response: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        try:
            result = self.chain.rpc(str(method), wire_params)
        except RpcError as exc:
            response["error"] = exc.to_json()
        except LedgerError as exc:
            response["error"] = {"code": INTERNAL_ERROR, "message": str(exc)}
        else:
            response["result"] = result  # built fresh for each call: nothing shared with the chain
        return cast(RPCResponse, response)

    def make_batch_request(self, requests: list[tuple[RPCEndpoint, Any]]) -> list[RPCResponse]:
        return [self.make_request(method, params) for method, params in requests]

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            self.chain.rpc("web3_clientVersion", [])
        except (RpcError, LedgerError):
            if show_traceback:
                raise
            return False
        return True
