"""A blob store reached over HTTP(S), plus the request signatures the blob server checks.

The server (:mod:`fedledger.store.server`) is untrusted like any store, so :class:`HttpBlobStore` keeps the
base class's SHA-256 check on every read. In the other direction the server admits only members: every
request carries an EIP-191 ``personal_sign`` signature of the member's Ethereum key over
:func:`signing_message` (method, path, content hash, timestamp, nonce, chain id, contract), which binds it
to one blob, one verb, one consortium and one moment, so it cannot be replayed or redirected.

Actors are synchronous, so this client is too (stdlib ``http.client``, one keep-alive connection per
thread). Connection failures and 5xx answers are retried with exponential back-off and jitter, re-signed
with a fresh nonce each time; a refusal (400, 401, 413, ...) is final and raised with the server's reason.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address

from fedledger.errors import StoreError, UsageError
from fedledger.store.base import BlobStore, BytesLike

__all__ = [
    "ADDRESS_HEADER",
    "DEFAULT_MAX_BLOB_BYTES",
    "ERROR_HEADER",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_SCHEME",
    "TIMESTAMP_HEADER",
    "HttpBlobStore",
    "RequestSigner",
    "blob_path",
    "sign_request",
    "signing_message",
]

SIGNATURE_SCHEME = "fedledger-blob-v1"
ADDRESS_HEADER = "X-Fedledger-Address"
TIMESTAMP_HEADER = "X-Fedledger-Timestamp"
NONCE_HEADER = "X-Fedledger-Nonce"
SIGNATURE_HEADER = "X-Fedledger-Signature"
#: The server's reason for a refusal; also sent on HEAD, whose answers have no body.
ERROR_HEADER = "X-Fedledger-Error"
DEFAULT_MAX_BLOB_BYTES = 512 * 1024 * 1024
NONCE_BYTES = 16

# Answers worth another attempt: the fault may pass (a restarting server, a chain node briefly away).
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REASON_CHARS = 300
_SEND_CHUNK = 1024 * 1024
# How a keep-alive connection that the server closed in the meantime fails on its next use.
_STALE_CONNECTION = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    http.client.BadStatusLine,
    ssl.SSLEOFError,
)


class RequestSigner(Protocol):
    """Whoever signs requests: a :class:`~fedledger.crypto.keystore.MemberIdentity` fits.

    A protocol rather than the class itself, so the store layer does not import the crypto layer.
    """

    @property
    def account(self) -> LocalAccount: ...


def blob_path(address_hex: str) -> str:
    """The resource path of a blob: what is signed, whatever prefix the server is mounted under."""
    return f"/blobs/{address_hex}"


def signing_message(
    method: str,
    path: str,
    content_hash_hex: str,
    timestamp: int,
    nonce: str,
    chain_id: int,
    contract: str,
) -> str:
    """The text a request's signature covers; client and server must build it byte for byte alike."""
    return "\n".join(
        (
            SIGNATURE_SCHEME,
            method.upper(),
            path,
            content_hash_hex.lower(),
            str(int(timestamp)),
            nonce.lower(),
            str(int(chain_id)),
            contract.lower(),
        )
    )


def sign_request(
    account: LocalAccount,
    method: str,
    address_hex: str,
    *,
    chain_id: int,
    contract: str,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The authentication headers of one request for blob ``address_hex`` (64 lowercase hex digits).

    ``timestamp`` and ``nonce`` default to now and 16 fresh random bytes; tests pass them to forge stale or
    replayed requests.
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    nonce = secrets.token_hex(NONCE_BYTES) if nonce is None else nonce
    message = signing_message(method, blob_path(address_hex), address_hex, ts, nonce, chain_id, contract)
    signature = account.sign_message(encode_defunct(text=message)).signature
    return {
        ADDRESS_HEADER: str(account.address),
        TIMESTAMP_HEADER: str(ts),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: "0x" + bytes(signature).hex(),
    }


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return (text or type(exc).__name__)[:_REASON_CHARS]


class _Refused(Exception):
    """A final answer from the server (a refusal, or something no retry will change)."""


class _Transient(Exception):
    """A failure worth another attempt."""


class HttpBlobStore(BlobStore):
    """The blob server at ``url`` (``http://`` or ``https://``), spoken to as ``identity``.

    ``chain_id`` and ``contract`` (the TrainingTask address of the deployment) go into every signature,
    so the server of another consortium refuses them. ``retries`` is the number of extra attempts after
    the first for connection errors and 5xx answers, waiting ``backoff * 2**n`` seconds (capped at
    ``max_backoff``, with jitter) in between. ``ca_file`` is a PEM bundle to trust for https (e.g. a
    consortium's own CA); the system's trust store is used without it. ``max_blob_bytes`` bounds what a
    GET accepts, since the server is untrusted.
    """

    def __init__(
        self,
        url: str,
        identity: RequestSigner,
        *,
        chain_id: int,
        contract: str,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        ca_file: str | os.PathLike[str] | None = None,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"blob store URL must be http://HOST[:PORT] or https://HOST[:PORT], got {url!r}")
        if parts.query or parts.fragment:
            raise UsageError(f"blob store URL must not have a query or fragment: {url!r}")
        if not is_address(contract):
            raise UsageError(f"contract must be an Ethereum address, got {contract!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or max_backoff < 0 or max_blob_bytes < 0:
            raise UsageError("timeout must be > 0; retries, backoff, max_backoff and max_blob_bytes >= 0")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"blob store URL has an invalid port: {url!r}") from None
        self.url = url.rstrip("/")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self._account = identity.account
        self.chain_id = int(chain_id)
        self.contract = to_checksum_address(contract)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_blob_bytes = int(max_blob_bytes)
        self._ssl: ssl.SSLContext | None = None
        if self._tls:
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"cannot load CA file {ca_file}: {_one_line(exc)}") from None
        elif ca_file is not None:
            raise UsageError(f"ca_file given but {url} is not an https:// URL")
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"the blob store at {self.url}"

    def location(self, address: bytes) -> str:
        return f"{self.url}{blob_path(address.hex())}"

    # -- backend hooks -----------------------------------------------------------------------------------

    def _write(self, address: bytes, data: BytesLike) -> bool:
        view = memoryview(data).cast("B")
        status, _ = self._request("PUT", address, view)
        if status in (200, 201):
            return status == 201
        raise StoreError(f"{self.where} answered PUT of blob 0x{address.hex()} with HTTP {status}")

    def _read(self, address: bytes) -> bytes | None:
        status, body = self._request("GET", address)
        if status == 404:
            return None
        if status == 200:
            return body
        raise StoreError(f"{self.where} answered GET of blob 0x{address.hex()} with HTTP {status}")

    def _exists(self, address: bytes) -> bool:
        status, _ = self._request("HEAD", address)
        if status in (200, 404):
            return status == 200
        raise StoreError(f"{self.where} answered HEAD of blob 0x{address.hex()} with HTTP {status}")

    # -- other requests ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's unauthenticated self-description (chain id, contract, size limit)."""
        status, body = self._attempts("GET /health", lambda conn: self._send(conn, "GET", "/health"))
        if status != 200:
            raise StoreError(f"{self.where} answered GET /health with HTTP {status}")
        try:
            value = json.loads(body)
        except ValueError:
            raise StoreError(f"{self.where} answered GET /health with something that is not JSON") from None
        if not isinstance(value, dict):
            raise StoreError(f"{self.where} answered GET /health with something that is not an object")
        return value

    def close(self) -> None:
        """Close every pooled connection (each thread reconnects on its next request)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> HttpBlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------------

    def _request(self, method: str, address: bytes, body: memoryview | None = None) -> tuple[int, bytes]:
        address_hex = address.hex()
        path = blob_path(address_hex)

        def attempt(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
            # Signed afresh for every attempt: a retry must not look like a replay.
            headers = sign_request(
                self._account, method, address_hex, chain_id=self.chain_id, contract=self.contract
            )
            return self._send(conn, method, path, body, headers)

        return self._attempts(f"{method} of blob 0x{address_hex}", attempt)

    def _attempts(
        self, what: str, attempt: Callable[[http.client.HTTPConnection], tuple[int, bytes]]
    ) -> tuple[int, bytes]:
        """Run ``attempt`` until it gives a final answer, retrying transient failures with back-off."""
        last = ""
        for n in range(self.retries + 1):
            if n:
                cap = min(self.max_backoff, self.backoff * 2 ** (n - 1))
                time.sleep(cap * random.uniform(0.5, 1.0))  # jitter keeps retrying clients apart
            conn, reused = self._connection()
            try:
                try:
                    return attempt(conn)
                except _STALE_CONNECTION:
                    if not reused:
                        raise
                    # A keep-alive connection the server closed while idle: reconnect once at no cost.
                    self._drop(conn)
                    conn, _ = self._connection()
                    return attempt(conn)
            except _Refused as exc:
                raise StoreError(f"{self.where} refused {what}: {exc}") from None
            except ssl.SSLCertVerificationError as exc:
                self._drop(conn)
                raise StoreError(f"{self.where}: TLS certificate not trusted: {_one_line(exc)}") from None
            except _Transient as exc:
                last = str(exc)
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                last = _one_line(exc)
        raise StoreError(
            f"blob store at {self.url} unreachable: {what} failed {self.retries + 1} times, last: {last}"
        )

    def _send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: memoryview | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request and its answer: (status, body) for success and 404, else _Refused/_Transient."""
        all_headers = dict(headers or {})
        chunks: Iterator[memoryview] | None = None
        if body is not None:
            all_headers["Content-Type"] = "application/octet-stream"
            all_headers["Content-Length"] = str(body.nbytes)
            # In pieces: a socket timeout bounds one sendall() as a whole, and a large blob on a slow
            # link must not time out while it is still moving.
            chunks = (body[i : i + _SEND_CHUNK] for i in range(0, body.nbytes, _SEND_CHUNK))
        try:
            conn.request(method, self._prefix + path, body=chunks, headers=all_headers)
        except (BrokenPipeError, ConnectionResetError):
            # The server may have answered (413, 401) and closed before taking the whole body: that
            # answer is worth more than the broken pipe.
            response = self._early_response(conn)
            if response is None:
                raise
        else:
            response = conn.getresponse()
        try:
            status = response.status
            if status == 200 and method == "GET":
                length = response.getheader("Content-Length")
                if length is not None and length.isdigit():
                    if int(length) > self.max_blob_bytes:
                        raise _Refused(
                            f"its answer of {length} bytes exceeds max_blob_bytes={self.max_blob_bytes}"
                        )
                    return status, response.read()  # IncompleteRead (retried) if the server stops short
                data = response.read(self.max_blob_bytes + 1)
                if len(data) > self.max_blob_bytes:
                    raise _Refused(f"its answer exceeds max_blob_bytes={self.max_blob_bytes}")
                return status, data
            data = response.read(64 * 1024)
        finally:
            if response.will_close or not response.isclosed():
                self._drop(conn)
        if status in (200, 201, 404):
            return status, data
        reason = response.getheader(ERROR_HEADER) or data.decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {reason[:_REASON_CHARS]}" if reason else "")
        if status in _RETRY_STATUSES:
            raise _Transient(message)
        raise _Refused(message)

    @staticmethod
    def _early_response(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
        try:
            return conn.getresponse()
        except (OSError, http.client.HTTPException):
            return None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's keep-alive connection, and whether it was used before."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self._tls:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn, False

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
