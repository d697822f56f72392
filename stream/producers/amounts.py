"""What a transaction does to an address: ``received_sats`` and ``sent_sats``.

``received_sats`` is what the transaction's outputs pay to the address; ``sent_sats`` what
its inputs spend from the address, read from the outputs they spend (those transactions
are in the address's own history, so only they need fetching). ``TxCache`` keeps parsed
transactions (bounded, oldest out first) and fetches the missing ones in one
de-duplicated pool batch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from stream.electrum.errors import ServerError

from .address_diff import TxChange
from .txparse import ParsedTx, parse_tx

__all__ = [
    "TxCache",
    "TxSource",
    "amounts_of",
    "price",
    "sent_sats",
    "spent_from",
    "unpriced",
]

logger = logging.getLogger(__name__)

PARSED_CACHE = 20_000  # parsed transactions kept for amounts (inputs, dropped txs)


class TxSource(Protocol):
    """Where raw transactions come from (the pool): one answer or error per txid."""

    async def get_transactions_batch(self, txids: Iterable[str]
                                     ) -> Sequence[str | ServerError]: ...


def sent_sats(parsed: ParsedTx, address: str, prevs: Mapping[str, ParsedTx]) -> int:
    """What ``parsed``'s inputs spend from ``address``: the values of the outputs they
    spend that pay it (an input whose transaction is not in ``prevs`` counts 0)."""
    sent = 0
    for spend in parsed.spends:
        prev = prevs.get(spend.txid)
        if prev is not None and spend.vout < len(prev.outputs):
            out = prev.outputs[spend.vout]
            if out.address == address:
                sent += out.value_sats
    return sent


def amounts_of(parsed: ParsedTx, address: str, prevs: Mapping[str, ParsedTx]
               ) -> tuple[int, int]:
    """``(received_sats, sent_sats)`` of ``parsed`` for ``address``."""
    return parsed.received_by(address), sent_sats(parsed, address, prevs)


def unpriced(changes: Iterable[TxChange], amounts: Mapping[str, tuple[int, int]]
             ) -> dict[str, None]:
    """The transactions of ``changes`` to fetch: not priced yet, and not dropped (a
    dropped transaction was priced when it came, or comes from the log)."""
    return {c.txid: None for c in changes
            if c.txid not in amounts and c.status != "dropped"}


def spent_from(changes: Iterable[TxChange], mine: Iterable[str],
               parsed: Mapping[str, ParsedTx]) -> dict[str, None]:
    """The transactions of the address's history (``mine``) that the inputs of the
    changed transactions spend: what ``sent_sats`` needs."""
    history = set(mine)
    wanted: dict[str, None] = {}
    for change in changes:
        tx = parsed.get(change.txid)
        if tx is not None:
            wanted.update((s.txid, None) for s in tx.spends if s.txid in history)
    return wanted


class TxCache(Mapping[str, ParsedTx]):
    """Parsed transactions by txid, the oldest dropped past ``size``."""

    def __init__(self, source: TxSource, network: str, *, size: int = PARSED_CACHE) -> None:
        self._source = source
        self._network = network
        self._size = size
        self._parsed: OrderedDict[str, ParsedTx] = OrderedDict()

    def __getitem__(self, txid: str) -> ParsedTx:
        return self._parsed[txid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed)

    def __len__(self) -> int:
        return len(self._parsed)

    async def fetch(self, txids: Iterable[str]) -> None:
        """Parse the missing ones of ``txids`` into the cache, in one pool batch. One that
        no server has, or that does not parse or hash to its txid, stays missing."""
        missing = [t for t in dict.fromkeys(txids) if t not in self._parsed]
        if not missing:
            return
        raws = await self._source.get_transactions_batch(missing)
        for txid, raw in zip(missing, raws, strict=True):
            parsed = self._parse(txid, raw)
            if parsed is not None:
                self._parsed[txid] = parsed
        while len(self._parsed) > self._size:
            self._parsed.popitem(last=False)

    def _parse(self, txid: str, raw: object) -> ParsedTx | None:
        if isinstance(raw, ServerError):
            logger.info("transaction %s not available: %s", txid, raw)
            return None
        try:
            parsed = parse_tx(str(raw), self._network)
        except ValueError as exc:
            logger.warning("transaction %s from the server does not parse: %s", txid, exc)
            return None
        if parsed.txid != txid:
            logger.warning("server answered transaction %s for %s; ignored", parsed.txid, txid)
            return None
        return parsed


def price(amounts: dict[str, tuple[int, int]], address: str, changes: Sequence[TxChange],
          current: Mapping[str, int], parsed: Mapping[str, ParsedTx]) -> None:
    """Fill ``amounts`` (one address's cache) for ``changes`` from ``parsed``, and forget
    the transactions that left the history. A change whose transaction is not parsed (a
    dropped one never seen) is left for its stored events to price."""
    for change in changes:
        if change.txid in amounts:
            continue
        tx = parsed.get(change.txid)
        if tx is not None:
            amounts[change.txid] = amounts_of(tx, address, parsed)
    changed = {c.txid for c in changes}
    for txid in list(amounts):
        if txid not in current and txid not in changed:
            del amounts[txid]
