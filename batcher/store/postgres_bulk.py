"""The PostgreSQL store's bulk reads of the producers' state (start-up, not per address):
one query per call, each taking the addresses as one array parameter."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["AMOUNTS", "KNOWN_MANY", "amounts_from_rows", "known_from_rows"]

KNOWN_MANY = (
    "SELECT address, txid, height FROM chainwire_known_tx WHERE address = ANY($1::text[])"
)

# Oldest first: a later event of the same (address, txid) overwrites an earlier one.
# data is json text (kept byte-exact for replay): cast only to read three fields.
AMOUNTS = """
SELECT key, d->>'txid', (d->>'received_sats')::bigint, (d->>'sent_sats')::bigint
FROM (SELECT key, seq, idx, data::json AS d FROM chainwire_events
      WHERE type = 'address' AND key = ANY($1::text[])) AS e
ORDER BY seq, idx
"""


def known_from_rows(rows: Iterable[Any]) -> dict[str, dict[str, int]]:
    known: dict[str, dict[str, int]] = {}
    for address, txid, height in rows:
        known.setdefault(address, {})[txid] = int(height)
    return known


def amounts_from_rows(rows: Iterable[Any]) -> dict[str, dict[str, tuple[int, int]]]:
    amounts: dict[str, dict[str, tuple[int, int]]] = {}
    for address, txid, received, sent in rows:
        if txid is not None:
            amounts.setdefault(address, {})[txid] = (int(received or 0), int(sent or 0))
    return amounts
