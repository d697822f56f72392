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
        snap = pool.snapshot()      # PoolSnapshot: typed, frozen; pool.stats() is its dict
        tip = pool.servers_tip()    # the one "servers' tip" rule (None: no tip yet)

The seams (what other code, tests or a broker may rely on):

* ``snapshot()`` -> ``PoolSnapshot`` (``snapshot.py``): every configured server as a
  ``ServerSnapshot`` whose ``state`` is a ``ServerStatus`` (idle, connecting, connected,
  backoff, lagging, banned, closed; one labelling rule, ``states.server_status``). Readers
  of the pool (server events, health, metrics) use it, not the stats dict.
* ``servers_tip()``: the lower median of the connected servers' heights
  (``PoolSnapshot.servers_tip``), the tip every producer and the health check agree on.
* ``PoolHost`` (``host.py``): all that the subscription registry may ask of the pool.
  ``ServerPool`` implements it; ``subscriptions.py`` never imports ``pool.py``.

Modules by job: ``pool.py`` (the facade and lifecycle), ``selection.py`` (growth and
choosing a server), ``batches.py`` / ``batching.py`` (running / planning batches),
``subscriptions.py`` / ``placement.py`` / ``notes.py`` (the subscription registry, placing
scripthashes, what subscribers receive), ``upstream.py`` / ``session.py`` (one server, one
connection), ``policy.py`` (pure rules), ``urls.py`` / ``validate.py`` / ``config.py``.
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
from .host import PoolHost
from .pool import ServerPool
from .snapshot import PoolSnapshot, ServerSnapshot, SubscriptionFigures
from .states import PoolState, ServerState, ServerStatus
from .subscriptions import (
    HeaderNotification,
    HeadersMoved,
    HeaderSubscription,
    Moved,
    Overflowed,
    ScripthashSubscription,
    StatusNotification,
)
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
    "PoolHost",
    "PoolSnapshot",
    "PoolState",
    "RequestTimeout",
    "RetryableError",
    "ScripthashSubscription",
    "ServerAddress",
    "ServerError",
    "ServerPool",
    "ServerSnapshot",
    "ServerState",
    "ServerStatus",
    "ServerThrottled",
    "StatusNotification",
    "SubscriptionFigures",
    "address_to_script",
    "address_to_scripthash",
    "parse_server",
    "parse_servers",
    "validate_scripthash",
    "validate_txid",
]
