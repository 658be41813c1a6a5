"""JSON-RPC 2.0 over HTTP for an :class:`EmbeddedChain`, so any Ethereum tool can use it.

Stdlib only (``http.server``): one thread per connection, the chain's own lock serialising
the calls. HTTP/1.1 keep-alive is on, since clients like web3.py and cast reuse connections.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fedledger.errors import LedgerError

from .embedded import EmbeddedChain
from .rpc_errors import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError

__all__ = ["serve_chain"]

MAX_BODY_BYTES = 32 * 1024 * 1024
logger = logging.getLogger(__name__)


def _error(request_id: Any, code: int, message: str, data: str | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": RpcError(code, message, data).to_json()}


def handle_payload(chain: EmbeddedChain, payload: Any) -> Any:
    """Answer a decoded JSON-RPC payload (one request or a batch); None means no reply."""
    if isinstance(payload, list):
        if not payload:
            return _error(None, INVALID_REQUEST, "empty batch")
        replies = [reply for item in payload if (reply := _handle_one(chain, item)) is not None]
        return replies or None
    return _handle_one(chain, payload)


def _handle_one(chain: EmbeddedChain, request: Any) -> dict[str, Any] | None:
    if not isinstance(request, dict):
        return _error(None, INVALID_REQUEST, "request must be an object")
    request_id = request.get("id")
    method = request.get("method")
    params = request.get("params", [])
    if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return _error(request_id, INVALID_REQUEST, "invalid request: needs jsonrpc '2.0' and a method")
    if params is None:
        params = []
    if not isinstance(params, list):
        return _error(request_id, INVALID_REQUEST, "params must be an array")
    try:
        result = chain.rpc(method, params)
    except RpcError as exc:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()}
    except LedgerError as exc:
        reply = _error(request_id, INTERNAL_ERROR, str(exc))
    except Exception as exc:  # never let one bad request kill the connection thread
        logger.exception("embedded chain failed on %s", method)
        reply = _error(request_id, INTERNAL_ERROR, f"internal error: {exc}")
    else:
        reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return reply if "id" in request else None  # a request without id is a notification


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle on, a keep-alive client's delayed ACK
    # would add ~40 ms to every request
    disable_nagle_algorithm = True
    server: _ChainServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, _error(None, INVALID_REQUEST, "request body too large"))
            return
        body = self.rfile.read(length)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self._send(200, _error(None, PARSE_ERROR, f"parse error: {exc}"))
            return
        reply = handle_payload(self.server.chain, payload)
        if reply is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, reply)

    def do_GET(self) -> None:
        self._send(405, _error(None, INVALID_REQUEST, "JSON-RPC requests must use POST"))

    def _send(self, status: int, reply: Any) -> None:
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


class _ChainServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], chain: EmbeddedChain) -> None:
        self.chain = chain
        super().__init__(address, _Handler)


def serve_chain(chain: EmbeddedChain, host: str = "127.0.0.1", port: int = 8545) -> ThreadingHTTPServer:
    """An HTTP JSON-RPC server for ``chain``, bound but not yet serving.

    The caller runs ``serve_forever()`` (often in a thread) and ``shutdown()``; port 0 picks
    a free port, readable from ``server.server_address``.
    """
    return _ChainServer((host, port), chain)
