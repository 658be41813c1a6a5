"""The blob server and its client, against a real chain: an embedded chain served as JSON-RPC, the
contracts deployed on it, members admitted and removed through governance, and the server run both in a
thread (fast) and as the ``fedledger store serve`` process (kill -9, TLS, startup errors).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from eth_account import Account
from web3 import Web3

from fedledger.cli.store_cmd import open_blob_server
from fedledger.crypto.keystore import MemberIdentity
from fedledger.errors import BlobCorruptError, BlobNotFoundError, StoreError
from fedledger.ledger import Deployment, Ledger, Role
from fedledger.ledger.chain import EmbeddedChain, EmbeddedProvider, serve_chain
from fedledger.store import HttpBlobStore, LocalBlobStore
from fedledger.store.http import ERROR_HEADER, sign_request
from fedledger.store.server import BlobServer, sweep_temp_files

CHAIN_ID = 48_121
FUNDS = 10**24
LIMIT = 64 * 1024  # the threaded server's size limit
CACHE_SECONDS = 0.5  # the threaded server's membership cache
FEDLEDGER = Path(sys.executable).parent / "fedledger"


def _identity(name: str, seed: int) -> MemberIdentity:
    return MemberIdentity(name=name, account=Account.from_key(bytes([seed]) * 32))


ADMIN_A, ADMIN_B = _identity("admin-a", 1), _identity("admin-b", 2)
ALICE = _identity("alice", 3)  # member throughout
BOB = _identity("bob", 4)  # member, removed by governance in one test
CAROL = _identity("carol", 5)  # never a member
DAVE = _identity("dave", 6)  # member, used against the server processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Env:
    root: Path
    chain: EmbeddedChain
    ledger: Ledger  # the admins' side, in process
    rpc_port: int
    rpc_server: ThreadingHTTPServer
    deployment: Deployment
    deployment_file: Path

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    def stop_rpc(self) -> None:
        self.rpc_server.shutdown()
        self.rpc_server.server_close()

    def client(self, url: str, who: MemberIdentity, **kw: object) -> HttpBlobStore:
        options: dict[str, object] = {"retries": 2, "backoff": 0.05, "timeout": 10.0}
        options.update(kw)
        return HttpBlobStore(
            url,
            who,
            chain_id=CHAIN_ID,
            contract=self.deployment.training_task,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("blob-server")
    chain = EmbeddedChain.create(root / "chain", CHAIN_ID, {ADMIN_A.address: FUNDS, ADMIN_B.address: FUNDS})
    w3 = Web3(EmbeddedProvider(chain))
    members = [
        (m.address, m.name, int(Role.TRAINER | Role.AGGREGATOR), m.enc_public_key) for m in (ALICE, BOB, DAVE)
    ]
    ledger = Ledger.deploy(
        w3, ADMIN_A.account, admins=[ADMIN_A.address, ADMIN_B.address], threshold=2, members=members
    )
    deployment_file = root / "deployment.json"
    deployment_file.write_text(ledger.deployment.to_json())
    rpc_server = serve_chain(chain, port=0)
    threading.Thread(target=rpc_server.serve_forever, daemon=True).start()
    e = Env(root, chain, ledger, rpc_server.server_address[1], rpc_server, ledger.deployment, deployment_file)
    try:
        yield e
    finally:
        e.stop_rpc()
        chain.close()


@pytest.fixture(scope="module")
def served(env: Env) -> Iterator[tuple[BlobServer, str]]:
    """A blob server in a thread, built by the same code as `fedledger store serve`."""
    server = open_blob_server(
        env.root / "blobs",
        env.rpc_url,
        env.deployment_file,
        max_blob_bytes=LIMIT,
        member_cache_seconds=CACHE_SECONDS,
    )
    url = server.start()
    try:
        yield server, url
    finally:
        server.stop()


def raw(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """One plain HTTP request, for requests the client would never make."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode()
        return response.status, response.getheader(ERROR_HEADER) or text
    finally:
        conn.close()


def signed(env: Env, who: MemberIdentity, method: str, address: bytes, **kw: int | str) -> dict[str, str]:
    return sign_request(
        who.account, method, address.hex(), chain_id=CHAIN_ID, contract=env.deployment.training_task, **kw
    )  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the threaded server


def test_member_round_trip(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    store = env.client(url, ALICE)
    data = os.urandom(20_000)
    address = store.put(data)
    assert address == hashlib.sha256(data).digest()
    assert store.has(address) and store.get(address) == data
    assert LocalBlobStore(env.root / "blobs").get(address) == data  # really on the server's disk
    assert store.put(data) == address and store.bytes_written == len(data)  # idempotent: 200, nothing written
    missing = hashlib.sha256(b"never stored").digest()
    assert not store.has(missing)
    with pytest.raises(BlobNotFoundError, match="not found in the blob store at http://"):
        store.get(missing)
    assert store.get(store.put(b"")) == b""
    health = store.health()
    assert health["chain_id"] == CHAIN_ID and health["contract"] == env.deployment.training_task
    assert health["max_blob_bytes"] == LIMIT


def test_non_member_signer_gets_401_at_once(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    address = env.client(url, ALICE).put(b"alice's blob")
    carol = env.client(url, CAROL, retries=3, backoff=5.0)  # a retried refusal would take >= 7.5 s
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"refused PUT .*HTTP 401: .* is not an active member"):
        carol.put(b"carol's blob")
    with pytest.raises(StoreError, match="HTTP 401"):
        carol.get(address)
    with pytest.raises(StoreError, match="HTTP 401"):
        carol.has(address)  # HEAD: the reason travels in a header
    assert time.monotonic() - started < 3.0
    assert not (env.root / "blobs" / hashlib.sha256(b"carol's blob").hexdigest()[:2]).exists()


def test_signature_for_another_deployment_gets_401(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    other = HttpBlobStore(url, ALICE, chain_id=CHAIN_ID, contract=env.deployment.consortium, retries=0)
    with pytest.raises(StoreError, match="HTTP 401: signature is not by"):
        other.put(b"meant for another consortium")
    address = hashlib.sha256(b"x").digest()
    headers = signed(env, ALICE, "GET", address)
    headers["X-Fedledger-Address"] = BOB.address  # claims to be another member
    assert raw(url, "GET", f"/blobs/{address.hex()}", headers=headers)[0] == 401
    status, reason = raw(url, "GET", f"/blobs/{address.hex()}")
    assert status == 401 and "missing X-Fedledger-Address" in reason


def test_member_removed_by_governance_gets_401(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    bob = env.client(url, BOB)
    before = bob.put(b"bob, still a member")
    assert bob.get(before) == b"bob, still a member"  # his membership is now cached
    proposal = env.ledger.propose_remove_member(ADMIN_A.account, BOB.address)
    env.ledger.approve(ADMIN_B.account, proposal)
    info = env.ledger.member(BOB.address)
    assert info is not None and not info.active
    time.sleep(CACHE_SECONDS + 0.2)  # the cache never outlives its few seconds
    with pytest.raises(StoreError, match=r"HTTP 401: .* is not an active member"):
        bob.put(b"bob, removed")
    with pytest.raises(StoreError, match="HTTP 401"):
        bob.get(before)
    assert env.client(url, ALICE).get(before) == b"bob, still a member"  # his blobs stay readable


def test_stale_timestamp_gets_401(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    data = b"late"
    address = hashlib.sha256(data).digest()
    for skew in (-120, +120):
        headers = signed(env, ALICE, "PUT", address, timestamp=int(time.time()) + skew)
        status, reason = raw(url, "PUT", f"/blobs/{address.hex()}", data, headers)
        assert status == 401 and "stale timestamp" in reason
    fresh = signed(env, ALICE, "PUT", address, timestamp=int(time.time()) - 30)  # within the window
    assert raw(url, "PUT", f"/blobs/{address.hex()}", data, fresh)[0] == 201


def test_replayed_nonce_gets_401(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    data = b"once only"
    address = hashlib.sha256(data).digest()
    headers = signed(env, ALICE, "PUT", address)
    assert raw(url, "PUT", f"/blobs/{address.hex()}", data, headers)[0] == 201
    status, reason = raw(url, "PUT", f"/blobs/{address.hex()}", data, headers)
    assert status == 401 and "nonce already used" in reason
    get = signed(env, ALICE, "GET", address)
    assert raw(url, "GET", f"/blobs/{address.hex()}", headers=get) == (200, "once only")
    assert raw(url, "GET", f"/blobs/{address.hex()}", headers=get)[0] == 401


def test_body_not_matching_its_address_gets_400(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    claimed = hashlib.sha256(b"what the path says").digest()
    body = b"what was sent instead"
    status, reason = raw(url, "PUT", f"/blobs/{claimed.hex()}", body, signed(env, ALICE, "PUT", claimed))
    assert status == 400 and f"body hashes to {hashlib.sha256(body).hexdigest()}" in reason
    store = LocalBlobStore(env.root / "blobs")
    assert not store.has(claimed) and not store.has(hashlib.sha256(body).digest())
    assert raw(url, "GET", "/blobs/XYZ", headers=signed(env, ALICE, "GET", claimed))[0] == 400


def test_oversized_blob_gets_413(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    store = env.client(url, ALICE)
    exact = os.urandom(LIMIT)
    assert store.get(store.put(exact)) == exact
    too_big = os.urandom(LIMIT + 1)
    with pytest.raises(StoreError, match=f"HTTP 413: blob of {LIMIT + 1} bytes exceeds the limit"):
        store.put(too_big)
    # Without a Content-Length (chunked), the limit is enforced while the body streams in.
    address = hashlib.sha256(too_big).digest()
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    chunks = (too_big[i : i + 10_000] for i in range(0, len(too_big), 10_000))
    conn.request(
        "PUT",
        f"/blobs/{address.hex()}",
        body=chunks,
        headers=signed(env, ALICE, "PUT", address),
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 413 and "exceeds the limit" in response.read().decode()
    conn.close()
    assert not LocalBlobStore(env.root / "blobs").has(address)


def test_get_verifies_the_hash(env: Env, served: tuple[BlobServer, str]) -> None:
    _, url = served
    store = env.client(url, ALICE)
    address = store.put(b"precious model update " * 100)
    path = LocalBlobStore(env.root / "blobs").path_for(address)
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 0xFF  # same size: the server cannot tell, the client must
    path.write_bytes(bytes(damaged))
    with pytest.raises(BlobCorruptError, match=f"blob 0x{address.hex()} in http://.* is corrupt"):
        store.get(address)


class TcpProxy:
    """A TCP forwarder to the chain's RPC port that the test can cut, like a network outage: the
    listener and every open keep-alive connection go away at once."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._track(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                return
            self._track(client)
            self._track(server)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_chain_outage_fails_closed_and_the_client_retries(env: Env) -> None:
    proxy = TcpProxy(env.rpc_port)
    server = open_blob_server(
        env.root / "blobs", f"http://127.0.0.1:{proxy.port}", env.deployment_file, member_cache_seconds=0
    )
    url = server.start()
    try:
        data = b"written while the chain was away"
        address = hashlib.sha256(data).digest()
        store = env.client(url, ALICE, retries=12, backoff=0.2, max_backoff=1.0)
        assert store.has(store.put(b"the chain is up"))
        proxy.cut()
        try:
            status, reason = raw(
                url, "PUT", f"/blobs/{address.hex()}", data, signed(env, ALICE, "PUT", address)
            )
            assert status == 503 and "chain is unreachable" in reason  # never admitted unchecked
            outcome: list[object] = []
            writer = threading.Thread(target=lambda: outcome.append(store.put(data)))
            writer.start()
            time.sleep(1.0)
            assert writer.is_alive() and not outcome  # still retrying
        finally:
            proxy.restore()
        writer.join(30)
        assert outcome == [address]
        assert LocalBlobStore(env.root / "blobs").get(address) == data
    finally:
        server.stop()
        proxy.cut()


def test_client_reconnects_when_the_server_dropped_its_idle_connection(env: Env) -> None:
    first = open_blob_server(env.root / "blobs", env.rpc_url, env.deployment_file)
    url = first.start()
    store = env.client(url, ALICE, retries=0)  # no retry budget: only the free reconnect may save it
    address = store.put(b"over a keep-alive connection")
    first.stop()  # closes the client's idle connection
    second = open_blob_server(env.root / "blobs", env.rpc_url, env.deployment_file)
    assert second.start(port=int(url.rsplit(":", 1)[1])) == url
    try:
        assert store.get(address) == b"over a keep-alive connection"
    finally:
        second.stop()


def test_unreachable_server_raises_store_error_after_retries(env: Env) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = env.client(url, ALICE, retries=3, backoff=0.1)
    started = time.monotonic()
    with pytest.raises(StoreError, match=rf"blob store at {url} unreachable: PUT .* failed 4 times"):
        store.put(b"nobody listens")
    assert time.monotonic() - started >= 0.35  # it backed off: 0.1 + 0.2 + 0.4, halved at most by jitter


def test_sweep_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    address = store.put(b"kept")
    folder = store.path_for(address).parent
    stale = folder / f".{'ab' * 31}.0badf00d.tmp"
    fresh = folder / f".{'cd' * 31}.0badf00d.tmp"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"half a blob")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert sweep_temp_files(tmp_path) == 1
    assert not stale.exists() and fresh.exists() and store.get(address) == b"kept"


# --------------------------------------------------------------------------- the server process


def start_process(env: Env, directory: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`fedledger store serve` as its own process; returns once /health answers."""
    args = [
        str(FEDLEDGER), "store", "serve", "--dir", str(directory), "--rpc", env.rpc_url,
        "--deployment", str(env.deployment_file), "--port", str(port), *extra,
    ]  # fmt: skip
    with log.open("ab") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not listen within 30 s: {log.read_text()}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_kill_9_and_restart_loses_nothing(env: Env, tmp_path: Path) -> None:
    directory, port, log = tmp_path / "blobs", free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    first = start_process(env, directory, port, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        store = env.client(url, DAVE, retries=40, backoff=0.1, max_backoff=0.5)
        acked = {store.put(os.urandom(n)): n for n in (1, 1000, 100_000, 1_000_000)}
        # A writer keeps uploading 2 MiB blobs; the server is killed while it does.
        stop, failures = threading.Event(), []

        def write() -> None:
            try:
                while not stop.is_set():
                    data = os.urandom(2 * 1024 * 1024)
                    acked[store.put(data)] = len(data)
            except Exception as exc:
                failures.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        while len(acked) < 7:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # A fresh client now retries against the dead server...
        late = os.urandom(50_000)
        late_result: list[bytes] = []
        retrying = threading.Thread(
            target=lambda: late_result.append(
                env.client(url, DAVE, retries=40, backoff=0.1, max_backoff=0.5).put(late)
            )
        )
        retrying.start()
        time.sleep(1.0)
        assert retrying.is_alive() and not late_result
        # ...and succeeds once the server is back on the same directory.
        second = start_process(env, directory, port, log)
        retrying.join(30)
        assert late_result == [hashlib.sha256(late).digest()]
        count = len(acked)
        while len(acked) < count + 2 and writer.is_alive():
            time.sleep(0.01)
        stop.set()
        writer.join(30)
        assert not failures
        reader = env.client(url, DAVE)
        for address, size in list(acked.items()):
            assert len(reader.get(address)) == size  # get() re-checks every hash
        for path in directory.glob("[0-9a-f][0-9a-f]/*"):  # no partial blob under a final name
            if not path.name.endswith(".tmp"):
                assert hashlib.sha256(path.read_bytes()).hexdigest() == path.parent.name + path.name
    finally:
        first.kill()
        if second is not None:
            stop_process(second)
    assert second is not None and second.returncode == 0  # SIGTERM stops it cleanly


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedledger blob server (test)")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_tls_round_trip(env: Env, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    process = start_process(
        env, tmp_path / "blobs", port, tmp_path / "server.log", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    try:
        url = f"https://127.0.0.1:{port}"
        store = env.client(url, DAVE, ca_file=str(cert))
        data = os.urandom(300_000)
        assert store.get(store.put(data)) == data
        with pytest.raises(StoreError, match="TLS certificate not trusted"):
            env.client(url, DAVE).get(hashlib.sha256(data).digest())  # not signed by a CA we trust
        with pytest.raises(StoreError, match="unreachable"):
            env.client(f"http://127.0.0.1:{port}", DAVE, retries=0).get(hashlib.sha256(data).digest())
    finally:
        stop_process(process)
    assert "serving blobs from" in (tmp_path / "server.log").read_text()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FEDLEDGER), *args], capture_output=True, text=True, timeout=60)


def test_deployment_of_another_chain_is_one_line_and_exit_2(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "deployment.json"
    other.write_text(json.dumps(json.loads(env.deployment_file.read_text()) | {"chain_id": CHAIN_ID + 1}))
    result = run_cli(
        "store", "serve", "--dir", str(tmp_path / "blobs"), "--rpc", env.rpc_url, "--deployment", str(other),
        "--port", str(free_port()),
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0] == f"error: {other} is for chain {CHAIN_ID + 1} but {env.rpc_url} serves chain {CHAIN_ID}"


def test_deployment_with_no_contracts_on_this_chain_is_refused(env: Env, tmp_path: Path) -> None:
    other = tmp_path / "deployment.json"
    other.write_text(json.dumps(json.loads(env.deployment_file.read_text()) | {"consortium": CAROL.address}))
    result = run_cli(
        "store", "serve", "--dir", str(tmp_path / "blobs"), "--rpc", env.rpc_url, "--deployment", str(other),
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"no contract at consortium {CAROL.address}" in result.stderr


def test_unreachable_rpc_is_retried_then_one_line_and_exit_1(env: Env, tmp_path: Path) -> None:
    rpc = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli(
        "store", "serve", "--dir", str(tmp_path / "blobs"), "--rpc", rpc, "--deployment",
        str(env.deployment_file), "--connect-attempts", "3",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert (
        lines[0].startswith(f"error: cannot reach Ethereum node at {rpc}") and "after 3 attempts" in lines[0]
    )
    assert time.monotonic() - started >= 1.5  # backed off 0.5 s then 1 s between the attempts


def test_bad_tls_files_are_one_line(env: Env, tmp_path: Path) -> None:
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate")
    result = run_cli(
        "store", "serve", "--dir", str(tmp_path), "--rpc", env.rpc_url, "--deployment", str(env.deployment_file),
        "--tls-cert", str(garbage), "--tls-key", str(garbage),
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot load TLS certificate" in result.stderr
