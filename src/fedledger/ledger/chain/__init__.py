"""The embedded Ethereum chain: py-evm in-process, persisted on disk, spoken to via JSON-RPC."""

from .embedded import EmbeddedChain
from .provider import EmbeddedProvider
from .rpc_errors import RpcError
from .server import serve_chain

__all__ = ["EmbeddedChain", "EmbeddedProvider", "RpcError", "serve_chain"]
