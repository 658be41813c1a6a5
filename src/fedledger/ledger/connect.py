"""Connect to an Ethereum JSON-RPC node over HTTP and check a deployment against it, in one clear line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from eth_utils.address import is_address, to_checksum_address
from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from fedledger.errors import LedgerError, UsageError
from fedledger.ledger.types import Deployment

CONNECT_ATTEMPTS = 5
CONNECT_BACKOFF = 0.5


def connect_rpc(url: str, *, timeout: float = 10) -> Web3:
    """A ``Web3`` on ``url`` whose connection has been checked with eth_chainId.

    Proof-of-authority chains (geth Clique, Besu) put signatures in the block's extraData, so the PoA
    middleware is always injected; it is a no-op elsewhere.
    """
    provider = HTTPProvider(
        url,
        request_kwargs={"timeout": timeout},
        # requests' errors are OSError subclasses; retry briefly, then let the caller report.
        exception_retry_configuration=ExceptionRetryConfiguration(
            errors=(OSError,), retries=3, backoff_factor=0.1
        ),
    )
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    try:
        w3.eth.chain_id  # noqa: B018 - the request is the check
    except Exception as e:
        lines = str(e).strip().splitlines()
        reason = lines[0][:300] if lines else type(e).__name__
        raise LedgerError(f"cannot reach Ethereum node at {url}: {reason}") from e
    return w3


def load_deployment(path: Path) -> Deployment:
    """Read a deployment.json (as a run directory holds it); every problem is one UsageError line."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: deployment file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable deployment JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a deployment JSON must be an object")
    try:
        chain_id = int(raw["chain_id"])
        deploy_block = int(raw.get("deploy_block", 0))
        consortium, task = str(raw["consortium"]), str(raw["training_task"])
    except KeyError as exc:
        raise UsageError(f"{path}: missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: invalid field ({exc})") from None
    for label, value in (("consortium", consortium), ("training_task", task)):
        if not is_address(value):
            raise UsageError(f"{path}: {label} is not an Ethereum address: {value!r}")
    if chain_id <= 0:
        raise UsageError(f"{path}: chain_id must be a positive integer")
    return Deployment(
        chain_id=chain_id,
        consortium=to_checksum_address(consortium),
        training_task=to_checksum_address(task),
        deploy_block=deploy_block,
    )


def connect_chain(
    url: str,
    attempts: int = CONNECT_ATTEMPTS,
    *,
    backoff: float = CONNECT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> Web3:
    """Connect to the node at ``url``, retrying with back-off: a node that is starting up may come."""
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return connect_rpc(url, timeout=5)
        except LedgerError as exc:
            if attempt == attempts:
                raise LedgerError(
                    f"{exc} (gave up after {attempts} attempt{'s' if attempts > 1 else ''} "
                    f"over {time.monotonic() - started:.0f} s)"
                ) from None
            sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def check_deployment(w3: Web3, url: str, deployment: Deployment, source: Path) -> None:
    """Refuse a deployment.json that does not describe contracts on this node."""
    try:
        chain_id = int(w3.eth.chain_id)
        codes = {
            label: bytes(w3.eth.get_code(to_checksum_address(address)))
            for label, address in (
                ("consortium", deployment.consortium),
                ("training_task", deployment.training_task),
            )
        }
    except Exception as exc:
        raise LedgerError(f"cannot read the chain at {url}: {str(exc).strip()[:300]}") from None
    if chain_id != deployment.chain_id:
        raise UsageError(f"{source} is for chain {deployment.chain_id} but {url} serves chain {chain_id}")
    for label, code in codes.items():
        if not code:
            raise UsageError(
                f"{source}: no contract at {label} {getattr(deployment, label)} on chain {chain_id} at {url} "
                "(the file belongs to another deployment)"
            )
