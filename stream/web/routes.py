"""The REST endpoints under ``/api/v1`` (see README for examples)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batcher.events import Event
from batcher.store import WatchLimitReached
from stream.electrum import ElectrumError
from stream.services import Services
from stream.web.errors import ApiError
from stream.web.params import int_param

__all__ = ["api_routes"]

MAX_LIMIT = 1000
MAX_WATCH_PER_REQUEST = 10_000
MAX_BODY_BYTES = 1024 * 1024
WATCH_PAGE_DEFAULT = 1000
WATCH_PAGE_MAX = 10_000
MAX_CURSOR_CHARS = 128  # longer than any address: a cursor is the last address of a page


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _limit(request: Request, default: int) -> int:
    limit = int_param(request, "limit", default)
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, "bad_request", f"limit must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


def _address(request: Request) -> str:
    raw = request.path_params["address"]
    try:
        return _services(request).canonical_address(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_address", str(exc)) from None


def watch_limit_error(exc: WatchLimitReached) -> ApiError:
    """409: the request is fine, the server's state (a full watch list) refuses it."""
    return ApiError(409, "watch_limit",
                    f"the watch list is full (at most {exc.limit} addresses); nothing was "
                    "added")


def _events(events: list[Event]) -> list[dict[str, Any]]:
    return [event.to_dict() for event in events]


async def watch_add(request: Request) -> Response:
    services = _services(request)
    body_bytes = b""
    async for chunk in request.stream():
        body_bytes += chunk
        if len(body_bytes) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(body_bytes)
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None
    addresses = body.get("addresses") if isinstance(body, dict) else None
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise ApiError(400, "bad_request", 'body must be {"addresses": ["...", ...]}')
    if len(addresses) > MAX_WATCH_PER_REQUEST:
        raise ApiError(400, "limit_exceeded",
                       f"at most {MAX_WATCH_PER_REQUEST} addresses per request")
    canonical = []
    for address in addresses:  # all-or-nothing: one bad address adds none
        try:
            canonical.append(services.canonical_address(address))
        except ValueError as exc:
            raise ApiError(400, "invalid_address", str(exc)) from None
    try:
        added = await services.watch(dict.fromkeys(canonical))
    except WatchLimitReached as exc:
        raise watch_limit_error(exc) from None
    page = await services.watched_page(None, 1)
    return JSONResponse({"added": added, "watching": page.total})


async def watch_list(request: Request) -> Response:
    """A page of the watch list in byte order of the address: pass ``next`` back as
    ``?after=`` for the following one (null: that was the last)."""
    limit = int_param(request, "limit", WATCH_PAGE_DEFAULT)
    if not 1 <= limit <= WATCH_PAGE_MAX:
        raise ApiError(400, "bad_request",
                       f"limit must be from 1 to {WATCH_PAGE_MAX}, got {limit}")
    after = request.query_params.get("after") or None
    if after is not None and len(after) > MAX_CURSOR_CHARS:
        raise ApiError(400, "bad_request",
                       f"after must be an address (the 'next' of the previous page), "
                       f"at most {MAX_CURSOR_CHARS} characters")
    # One more than asked: whether there is a next page, without an empty last one.
    page = await _services(request).watched_page(after, limit + 1)
    addresses = page.addresses[:limit]
    more = len(page.addresses) > limit
    return JSONResponse({"addresses": addresses, "next": addresses[-1] if more else None,
                         "total": page.total})


async def watch_remove(request: Request) -> Response:
    address = _address(request)
    if not await _services(request).unwatch(address):
        raise ApiError(404, "not_found", f"{address} is not watched")
    return JSONResponse({"removed": address})


async def recent_blocks(request: Request) -> Response:
    blocks = await _services(request).queries.recent_blocks(_limit(request, 10))
    return JSONResponse({"blocks": _events(blocks)})


async def large_transactions(request: Request) -> Response:
    min_sats = int_param(request, "min_sats", 0)
    events = await _services(request).queries.large_transactions(min_sats, _limit(request, 50))
    return JSONResponse({"transactions": _events(events)})


async def address_events(request: Request) -> Response:
    address = _address(request)
    events = await _services(request).queries.address_events(address, _limit(request, 50))
    return JSONResponse({"address": address, "events": _events(events)})


async def address_balance(request: Request) -> Response:
    address = _address(request)
    try:
        [balance] = await _services(request).pool.get_balances_batch([address])
    except ElectrumError:
        # No server answered (after the pool's retries), or each one refused: either way
        # not the client's fault. A closed pool (RuntimeError) is a bug and must show.
        raise ApiError(503, "unavailable", "no Electrum server could answer; retry") from None
    if isinstance(balance, ElectrumError) or not _is_balance(balance):
        # The server answered, but with an error or nonsense: still not the client's fault.
        raise ApiError(502, "bad_upstream", "the Electrum server gave no usable balance")
    return JSONResponse({"address": address, "confirmed_sats": balance["confirmed"],
                         "unconfirmed_sats": balance["unconfirmed"]})


def _is_balance(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
        for k in ("confirmed", "unconfirmed")
    )


async def batches(request: Request) -> Response:
    store = _services(request).batches
    after = int_param(request, "after", 0)
    found = await store.batches_after(after, _limit(request, 100))
    # Encoded exactly as live clients receive them.
    body = b'{"epoch":' + orjson.dumps(store.epoch) + b',"batches":['
    body += b",".join(orjson.dumps(batch.to_dict()) for batch in found) + b"]}"
    return Response(body, media_type="application/json")


async def stats(request: Request) -> Response:
    return JSONResponse(_services(request).stats())


def api_routes() -> list[Route]:
    return [
        Route("/api/v1/watch", watch_add, methods=["POST"]),
        Route("/api/v1/watch", watch_list, methods=["GET"]),
        Route("/api/v1/watch/{address}", watch_remove, methods=["DELETE"]),
        Route("/api/v1/blocks/recent", recent_blocks),
        Route("/api/v1/transactions/large", large_transactions),
        Route("/api/v1/address/{address}/events", address_events),
        Route("/api/v1/address/{address}/balance", address_balance),
        Route("/api/v1/batches", batches),
        Route("/api/v1/stats", stats),
    ]
