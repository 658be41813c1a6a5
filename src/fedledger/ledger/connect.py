"""Connect to an Ethereum JSON-RPC node over HTTP, failing fast with one clear line."""

from __future__ import annotations

from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from fedledger.errors import LedgerError


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
