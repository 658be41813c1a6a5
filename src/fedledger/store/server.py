"""The blob server: a :class:`LocalBlobStore` behind HTTP(S) that only the consortium's members may use.

Routes: ``PUT /blobs/{sha256 hex}`` (201 stored, 200 already there), ``GET`` and ``HEAD`` of the same path
(200 or 404), and an unauthenticated ``GET /health``. Every blob request must carry a signature made by
:func:`fedledger.store.http.sign_request`; the server recovers the signer and asks the chain whether it is
an active member. Refusals: bad, stale (more than ``max_clock_skew`` seconds off), replayed or non-member
signatures -> 401; a body that does not hash to its address -> 400; more than ``max_blob_bytes`` -> 413;
the chain unreachable -> 503, so it fails closed and clients retry.

Membership is read through a plain ``is_member(address) -> bool`` callable so this layer does not import
the ledger; the CLI builds one from :class:`fedledger.ledger.Ledger`. Positive answers are cached for
``member_cache_seconds`` only, so removing a member through governance locks it out within that time.

Durability comes from :class:`LocalBlobStore` (temporary file, fsync, rename, fsync of the directory): a
201 is sent only once the blob is on disk, so a server killed with SIGKILL and restarted on the same
directory has lost nothing it acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_defunct

from fedledger.errors import StoreError, UsageError
from fedledger.store.http import (
    ADDRESS_HEADER,
    DEFAULT_MAX_BLOB_BYTES,
    ERROR_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    blob_path,
    signing_message,
)
from fedledger.store.local import LocalBlobStore

__all__ = ["DEFAULT_MAX_BLOB_BYTES", "BlobServer", "MembershipCheck", "sweep_temp_files"]

logger = logging.getLogger(__name__)

#: ``is_member(checksummed address) -> bool``: whether the address is an active member now. It runs in a
#: worker thread; any exception it raises means "cannot tell" and the request gets 503.
MembershipCheck = Callable[[str], bool]

MAX_CLOCK_SKEW = 60.0
MEMBER_CACHE_SECONDS = 3.0
MAX_NONCES = 1_000_000
CHUNK_BYTES = 1024 * 1024
STALE_TEMP_SECONDS = 600.0
SHUTDOWN_SECONDS = 10.0

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_SIGNER = web.RequestKey("signer", str)
_TEMP_NAME = re.compile(r"\.[0-9a-f]{62}\.[0-9a-f]{8}\.tmp")


class _Reject(Exception):
    """Refuse the request with ``status`` and a short reason the client shows to its user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _NonceBook:
    """The (signer, nonce) pairs accepted within the clock-skew window.

    A pair only needs remembering while its timestamp would still pass the freshness check, so entries
    expire at ``timestamp + window``; older replays fail that check instead. Only authenticated members
    add entries, and ``capacity`` bounds memory even if one of them floods the server.
    """

    def __init__(self, window: float, capacity: int = MAX_NONCES) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str], timestamp: float, now: float) -> None:
        self._prune(now)
        if len(self._seen) >= self.capacity:
            raise _Reject(503, "too many requests in the replay window; retry later")
        expires = timestamp + self.window
        self._seen[key] = expires
        heapq.heappush(self._expiry, (expires, key))

    def _prune(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, key = heapq.heappop(self._expiry)
            self._seen.pop(key, None)


class _MembershipCache:
    """Active-member answers, kept ``ttl`` seconds; negative answers are never cached."""

    def __init__(self, check: MembershipCheck, ttl: float) -> None:
        self._check = check
        self.ttl = ttl
        self._until: dict[str, float] = {}

    async def is_active(self, address: str) -> bool:
        now = time.monotonic()
        until = self._until.get(address)
        if until is not None and now < until:
            return True
        self._until.pop(address, None)
        try:
            active = await asyncio.to_thread(self._check, address)
        except Exception as exc:
            logger.warning("membership of %s unknown: %s", address, _one_line(exc))
            raise _Reject(503, "cannot check membership: the chain is unreachable; retry later") from None
        if active and self.ttl > 0:
            self._until[address] = now + self.ttl
        return bool(active)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def sweep_temp_files(root: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete temporary files a killed writer left in ``root``; return how many.

    :class:`LocalBlobStore` writes ``.<name>.<random>.tmp`` and renames it, so a crash mid-write leaves
    only such a file, never a partial blob. Only files older than ``older_than`` seconds are removed, so
    a write in progress in another process is left alone.
    """
    removed = 0
    cutoff = time.time() - older_than
    for sub in root.glob("[0-9a-f][0-9a-f]"):
        for path in sub.glob(".*.tmp"):
            if not _TEMP_NAME.fullmatch(path.name):
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


class BlobServer:
    """The blob server's request handling, and the event loop it runs in.

    ``chain_id`` and ``contract`` (the deployment's TrainingTask address) are part of every signed
    message, so signatures made for another consortium or chain do not verify here.
    """

    def __init__(
        self,
        store: LocalBlobStore,
        is_member: MembershipCheck,
        *,
        chain_id: int,
        contract: str,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        max_clock_skew: float = MAX_CLOCK_SKEW,
        member_cache_seconds: float = MEMBER_CACHE_SECONDS,
        max_nonces: int = MAX_NONCES,
    ) -> None:
        if max_blob_bytes < 0 or max_clock_skew <= 0 or member_cache_seconds < 0 or max_nonces < 1:
            raise UsageError(
                "max_blob_bytes and member_cache_seconds must be >= 0, max_clock_skew > 0, max_nonces >= 1"
            )
        self.store = store
        self.chain_id = int(chain_id)
        self.contract = contract
        self.max_blob_bytes = int(max_blob_bytes)
        self.max_clock_skew = float(max_clock_skew)
        self._members = _MembershipCache(is_member, member_cache_seconds)
        self._nonces = _NonceBook(self.max_clock_skew, max_nonces)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- the aiohttp application -----------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this store."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_put("/blobs/{address}", self._put)
        app.router.add_get("/blobs/{address}", self._get, allow_head=False)
        app.router.add_route("HEAD", "/blobs/{address}", self._head)
        app.router.add_get("/health", self._health)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn refusals into short answers, and log every request (signer, never the signature)."""
        started = time.monotonic()
        try:
            response = await handler(request)
        except _Reject as exc:
            response = _refusal(exc.status, exc.reason)
        except web.HTTPException as exc:  # aiohttp's own 404/405 for unknown routes
            response = _refusal(exc.status, exc.reason)
        logger.info(
            "%s %s %s %s %s %.1fms%s",
            request.remote,
            request.method,
            request.path,
            response.status,
            request.get(_SIGNER, "-"),
            (time.monotonic() - started) * 1000,
            f" ({response.headers.get(ERROR_HEADER)})" if response.status >= 400 else "",
        )
        return response

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "service": "fedledger-blob-store",
                "chain_id": self.chain_id,
                "contract": self.contract,
                "max_blob_bytes": self.max_blob_bytes,
            }
        )

    async def _put(self, request: web.Request) -> web.StreamResponse:
        address = await self._authenticate(request)
        declared = request.content_length
        if declared is not None and declared > self.max_blob_bytes:
            raise _Reject(413, f"blob of {declared} bytes exceeds the limit of {self.max_blob_bytes} bytes")
        digest = hashlib.sha256()
        body = bytearray()
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            if len(body) + len(chunk) > self.max_blob_bytes:
                raise _Reject(413, f"blob exceeds the limit of {self.max_blob_bytes} bytes")
            digest.update(chunk)
            body += chunk
        actual = digest.digest()
        if actual != address:
            raise _Reject(400, f"body hashes to {actual.hex()}, not to the address it was sent to")
        try:
            # The hash is checked above, so the backend hook stores it without hashing it again.
            written = await asyncio.to_thread(self.store._write, address, body)
        except StoreError as exc:
            logger.error("%s", exc)  # the path and OS reason stay in the server's log
            raise _Reject(500, "cannot store the blob (see the server's log)") from None
        return web.Response(status=201 if written else 200)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        address = await self._authenticate(request)
        path = self.store.path_for(address)
        try:
            handle, size = await asyncio.to_thread(_open_blob, path)
        except FileNotFoundError:
            raise _Reject(404, f"no blob {address.hex()}") from None
        except OSError as exc:
            logger.error("cannot read %s: %s", path, exc.strerror or exc)
            raise _Reject(500, "cannot read the blob (see the server's log)") from None
        with handle:
            response = web.StreamResponse(status=200)
            response.content_type = "application/octet-stream"
            response.content_length = size
            await response.prepare(request)
            remaining = size
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, remaining))
                if not chunk:
                    break  # the file shrank under us: the client's hash check reports it
                await response.write(chunk)
                remaining -= len(chunk)
            await response.write_eof()
        return response

    async def _head(self, request: web.Request) -> web.StreamResponse:
        address = await self._authenticate(request)
        path = self.store.path_for(address)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise _Reject(404, f"no blob {address.hex()}") from None
        response = web.StreamResponse(status=200)
        response.content_type = "application/octet-stream"
        response.content_length = size  # what a GET would send; HEAD sends no body
        await response.prepare(request)
        return response

    # -- authentication --------------------------------------------------------------------------------

    async def _authenticate(self, request: web.Request) -> bytes:
        """Check the request's signature, freshness, nonce and signer; return the blob address."""
        address_hex = request.match_info["address"]
        if not _HEX64.fullmatch(address_hex):
            raise _Reject(400, "a blob address is 64 lowercase hex digits (its SHA-256)")
        headers = request.headers
        values: dict[str, str] = {}
        for name, pattern in (
            (ADDRESS_HEADER, _ADDRESS),
            (TIMESTAMP_HEADER, _TIMESTAMP),
            (NONCE_HEADER, _NONCE),
            (SIGNATURE_HEADER, _SIGNATURE),
        ):
            value = headers.get(name)
            if value is None:
                raise _Reject(401, f"missing {name} header: requests must be signed by a member")
            if not pattern.fullmatch(value):
                raise _Reject(401, f"malformed {name} header")
            values[name] = value
        claimed = values[ADDRESS_HEADER]
        timestamp = int(values[TIMESTAMP_HEADER])
        nonce = values[NONCE_HEADER]
        now = time.time()
        if abs(now - timestamp) > self.max_clock_skew:
            raise _Reject(
                401,
                f"stale timestamp: {timestamp - now:+.0f} s off the server's clock "
                f"(at most {self.max_clock_skew:.0f} s allowed)",
            )
        message = signing_message(
            request.method,
            blob_path(address_hex),
            address_hex,
            timestamp,
            nonce,
            self.chain_id,
            self.contract,
        )
        try:
            signer = str(
                Account.recover_message(
                    encode_defunct(text=message), signature=bytes.fromhex(values[SIGNATURE_HEADER][2:])
                )
            )
        except Exception:  # eth_keys raises several types for invalid signatures
            raise _Reject(401, "invalid signature") from None
        if signer.lower() != claimed.lower():
            raise _Reject(401, f"signature is not by {claimed} (wrong key, chain, contract or request)")
        key = (signer, nonce)
        if self._nonces.seen(key):
            raise _Reject(401, "nonce already used: replayed request")
        request[_SIGNER] = signer
        if not await self._members.is_active(signer):
            raise _Reject(401, f"{signer} is not an active member of the consortium")
        if self._nonces.seen(key):  # a concurrent copy got through while the chain was asked
            raise _Reject(401, "nonce already used: replayed request")
        self._nonces.add(key, timestamp, now)
        return bytes.fromhex(address_hex)

    # -- running -----------------------------------------------------------------------------------------

    async def _run(
        self,
        host: str,
        port: int,
        ssl_context: Any,
        ready: Callable[[str], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        self._stop = asyncio.Event()
        # Uploads in flight get a few seconds to finish on SIGTERM; a client retries the rest.
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            try:
                await site.start()
            except OSError as exc:
                failed(UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
                return
            bound = runner.addresses[0]
            scheme = "https" if ssl_context is not None else "http"
            shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
            ready(f"{scheme}://{shown}:{bound[1]}")
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Any = None,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve in this thread until SIGINT or SIGTERM; ``on_ready(url)`` once listening."""
        error: list[BaseException] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._request_stop)
            await self._run(host, port, ssl_context, on_ready or (lambda url: None), error.append)

        asyncio.run(main())
        if error:
            raise error[0]

    def start(self, host: str = "127.0.0.1", port: int = 0, ssl_context: Any = None) -> str:
        """Serve on a background thread (for tests and embedding); return the URL once listening."""
        if self._thread is not None:
            raise UsageError("this blob server is already running")
        started = threading.Event()
        result: list[str | BaseException] = []

        def ready(url: str) -> None:
            result.append(url)
            started.set()

        def failed(exc: BaseException) -> None:
            result.append(exc)
            started.set()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._run(host, port, ssl_context, ready, failed))
            except BaseException as exc:  # reported to start(), which re-raises it
                failed(exc)
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fedledger-blob-server", daemon=True)
        self._thread.start()
        started.wait()
        outcome = result[0]
        if isinstance(outcome, BaseException):
            self._thread.join()
            self._thread = None
            raise outcome
        return outcome

    def stop(self) -> None:
        """Stop a server started with :meth:`start` and wait for its thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(self._request_stop)
        thread.join()
        self._thread = self._loop = None

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


def _open_blob(path: Path) -> tuple[BinaryIO, int]:
    handle = open(path, "rb")  # noqa: SIM115 - the caller closes it after streaming
    try:
        return handle, os.fstat(handle.fileno()).st_size
    except BaseException:
        handle.close()
        raise


def _refusal(status: int, reason: str) -> web.Response:
    # The reason travels in a header too: answers to HEAD have no body.
    safe = reason.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")
    return web.Response(status=status, text=reason + "\n", headers={ERROR_HEADER: safe})
