"""``fedledger store serve``: the consortium's blob server, admitting only members the chain lists.

The server learns who is a member by reading the Consortium contract of ``deployment.json`` over JSON-RPC.
Everything that can be wrong at startup (an RPC URL that does not answer, a deployment.json of another
chain or another deployment, TLS files that do not load, a port in use) ends in one line and a non-zero
exit; an unreachable node is retried with back-off first, since it may just be starting.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedledger.cli.common import console, err_console, guard
from fedledger.errors import UsageError
from fedledger.store.http import DEFAULT_MAX_BLOB_BYTES

if TYPE_CHECKING:
    from fedledger.store.server import BlobServer

__all__ = ["open_blob_server", "store_app", "tls_context"]

store_app = typer.Typer(
    help="The blob server that holds a consortium's encrypted blobs.", no_args_is_help=True
)

DEFAULT_PORT = 8600
CONNECT_ATTEMPTS = 5  # as fedledger.ledger.connect; kept here so --help needs no web3 import


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context from PEM files, or None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    for label, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise UsageError(f"TLS {label} file not found: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot load TLS certificate {cert} with key {key}: {reason}") from None
    return context


def open_blob_server(
    directory: Path,
    rpc_url: str,
    deployment_path: Path,
    *,
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    max_clock_skew: float = 60.0,
    member_cache_seconds: float = 3.0,
    connect_attempts: int = CONNECT_ATTEMPTS,
) -> BlobServer:
    """A blob server on ``directory`` that checks signers against the deployment's Consortium."""
    from fedledger.ledger import Ledger
    from fedledger.ledger.connect import check_deployment, connect_chain, load_deployment
    from fedledger.store.local import LocalBlobStore
    from fedledger.store.server import BlobServer, sweep_temp_files

    if not rpc_url.startswith(("http://", "https://")):
        raise UsageError(f"--rpc must be an http:// or https:// URL, got {rpc_url!r}")
    deployment = load_deployment(deployment_path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the blob directory {directory}: {exc.strerror or exc}") from None
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    w3 = connect_chain(rpc_url, connect_attempts)
    check_deployment(w3, rpc_url, deployment, deployment_path)
    ledger = Ledger(w3, deployment)
    ledger.threshold()  # one real call: fails here, not on the first request, if the ABI does not fit

    def is_member(address: str) -> bool:
        info = ledger.member(address)
        return info is not None and info.active

    removed = sweep_temp_files(directory)
    if removed:
        logging.getLogger(__name__).info("removed %d stale temporary file(s) from %s", removed, directory)
    return BlobServer(
        LocalBlobStore(directory),
        is_member,
        chain_id=deployment.chain_id,
        contract=deployment.training_task,
        max_blob_bytes=max_blob_bytes,
        max_clock_skew=max_clock_skew,
        member_cache_seconds=member_cache_seconds,
    )


@store_app.command("serve")
def serve(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory holding the blobs (created if missing).")
    ],
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of a node of the consortium's chain.")],
    deployment: Annotated[
        Path, typer.Option("--deployment", help="deployment.json naming the chain id and the contracts.")
    ],
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain) for HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key for HTTPS.")] = None,
    host: Annotated[str, typer.Option("--host", help="Interface; loopback by default.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="0 picks a free port.")
    ] = DEFAULT_PORT,
    max_blob_bytes: Annotated[
        int, typer.Option("--max-blob-bytes", min=0, help="Larger uploads get 413.")
    ] = DEFAULT_MAX_BLOB_BYTES,
    max_clock_skew: Annotated[
        float,
        typer.Option("--max-clock-skew", min=1.0, max=600.0, help="Seconds a signed request stays valid."),
    ] = 60.0,
    member_cache_seconds: Annotated[
        float,
        typer.Option(
            "--member-cache-seconds",
            min=0.0,
            max=5.0,
            help="How long a member check is reused (a removal takes effect within this time).",
        ),
    ] = 3.0,
    connect_attempts: Annotated[
        int, typer.Option("--connect-attempts", min=1, max=20, help="Tries to reach the node at startup.")
    ] = CONNECT_ATTEMPTS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-request log lines.")] = False,
) -> None:
    """Serve blobs over HTTP(S) to the members of a consortium, checking every request's signature."""

    def action() -> None:
        logging.getLogger("fedledger.store").setLevel(logging.WARNING if quiet else logging.INFO)
        logging.getLogger(__name__).setLevel(logging.INFO)
        try:
            context = tls_context(tls_cert, tls_key)
            server = open_blob_server(
                directory,
                rpc,
                deployment,
                max_blob_bytes=max_blob_bytes,
                max_clock_skew=max_clock_skew,
                member_cache_seconds=member_cache_seconds,
                connect_attempts=connect_attempts,
            )

            def ready(url: str) -> None:
                console.print(
                    f"serving blobs from {directory} at {url} for chain {server.chain_id}, "
                    f"contract {server.contract} (max blob {server.max_blob_bytes} bytes)",
                    highlight=False,
                    soft_wrap=True,
                )

            server.serve_forever(host, port, context, on_ready=ready)
        except KeyboardInterrupt:  # before serving started; once serving, SIGINT stops it cleanly
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    guard(action)
