"""The Electrum server pool: the only code in Chainwire that speaks the Electrum protocol.

Public API::

    from stream.electrum import ServerPool

    async with ServerPool(["ssl://host:50002", "tcp://host:50001"], network="mainnet") as pool:
        tip = await pool.request("blockchain.headers.subscribe")
        results = await pool.batch([("blockchain.transaction.get", [txid]), ...])
        raw = await pool.get_transactions_batch(txids)          # hex, input order
        histories = await pool.get_histories_batch(addresses)   # also balances, utxos
        async with pool.subscribe_headers(servers=2) as headers: ...
        async with pool.subscribe_scripthashes() as subs:
            statuses = await subs.add_addresses(addresses)
            async for note in subs: ...   # StatusNotification | Moved | Overflowed
        header = await pool.request_on(url, "blockchain.block.header", height)  # one server
        pool.ban(url, "sent an invalid header")   # out of the pool for an hour
        pool.stats()

See ``pool.py`` for behaviour, ``subscriptions.py`` for the notification contract.
"""

from __future__ import annotations

from .config import PoolConfig
from .errors import (
    ConnectionLost,
    ElectrumError,
    NoServerAvailable,
    RequestTimeout,
    RetryableError,
    ServerError,
    ServerThrottled,
)
from .pool import PoolState, ServerPool
from .subscriptions import (
    HeaderNotification,
    HeadersMoved,
    HeaderSubscription,
    Moved,
    Overflowed,
    ScripthashSubscription,
    StatusNotification,
)
from .upstream import ServerState
from .urls import ServerAddress, parse_server, parse_servers
from .validate import (
    NETWORKS,
    address_to_script,
    address_to_scripthash,
    validate_scripthash,
    validate_txid,
)

__all__ = [
    "NETWORKS",
    "ConnectionLost",
    "ElectrumError",
    "HeaderNotification",
    "HeaderSubscription",
    "HeadersMoved",
    "Moved",
    "NoServerAvailable",
    "Overflowed",
    "PoolConfig",
    "PoolState",
    "RequestTimeout",
    "RetryableError",
    "ScripthashSubscription",
    "ServerAddress",
    "ServerError",
    "ServerPool",
    "ServerState",
    "ServerThrottled",
    "StatusNotification",
    "address_to_script",
    "address_to_scripthash",
    "parse_server",
    "parse_servers",
    "validate_scripthash",
    "validate_txid",
]
