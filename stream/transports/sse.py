"""``GET /events``: one Server-Sent Event per batch, for browsers' EventSource.

First a ``start`` event (``id: <seq>``, ``data: {"resume_from", "last_seq", "epoch"}``),
then ``id: <seq>``, ``event: <type>``, ``data: <batch json>`` per batch; comment pings
keep proxies from timing out; a ``retry:`` hint tells EventSource how soon to come back.
A reconnect sends ``Last-Event-ID`` (or ``?last_event_id=``): the stored batches after
it are replayed, then the stream goes live. When a client falls behind, or the server
shuts down, the stream ends and EventSource resumes from its last id -- nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from batcher.store import StoreError, WatchLimitReached
from stream.fanout.filters import ClientFilter, FilterError
from stream.fanout.hub import DisconnectReason, HubClosed, HubState
from stream.fanout.resume import Cursor, Gap, replay_then_live
from stream.services import Services
from stream.transports.admission import Refusal, Ticket, refusal_response
from stream.transports.sse_response import LeanEventSourceResponse
from stream.web.errors import ApiError
from stream.web.params import int_param, parse_uint, single_param
from stream.web.routes import watch_limit_error

__all__ = ["events_endpoint", "filter_from_query"]

logger = logging.getLogger(__name__)


def filter_from_query(request: Request, services: Services) -> ClientFilter:
    """``types=a,b``, ``address=`` (repeatable, or comma-separated), ``min_sats=``."""
    params = request.query_params
    types = None
    if "types" in params:
        types = [t for value in params.getlist("types") for t in value.split(",")]
    addresses = None
    raw_addresses = [a for value in params.getlist("address") for a in value.split(",") if a]
    most = services.limits.sse_max_addresses
    if len(raw_addresses) > most:
        raise ApiError(400, "limit_exceeded", f"at most {most} address= values per stream")
    if raw_addresses:
        try:
            addresses = [services.canonical_address(a) for a in raw_addresses]
        except ValueError as exc:
            raise ApiError(400, "invalid_address", str(exc)) from None
    min_sats = int_param(request, "min_sats", default=0)
    try:
        return ClientFilter.build(types, addresses, min_sats)
    except FilterError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


def _resume_point(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or single_param(request, "last_event_id")
    if raw is None or raw.strip() == "":
        return None
    # Not stripped: HTTP already trims a header, and " 5" in a query is not a seq.
    seq = parse_uint(raw)  # checks the length first: no int() of 5000 digits
    if seq is None:
        raise ApiError(
            400, "bad_request", f"Last-Event-ID must be a batch seq (an integer), got {raw[:40]!r}"
        )
    return seq


async def events_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    client_filter = filter_from_query(request, services)
    after = _resume_point(request)
    if services.hub.state is HubState.CLOSED:
        raise ApiError(503, "unavailable", "server is shutting down; retry shortly")
    if request.method == "HEAD":
        return Response(media_type="text/event-stream")
    addresses = sorted(client_filter.addresses or ())
    if addresses:
        try:  # the cap is checked before the stream starts, so it can be a typed 409
            await services.watch_stream(addresses, hold=False)
        except WatchLimitReached as exc:
            raise watch_limit_error(exc) from None
    retry_ms = services.limits.sse_retry_ms

    async def stream() -> AsyncGenerator[ServerSentEvent | bytes, None]:
        # Subscribed here, inside the body, so a client that never reads the body (HEAD,
        # an early disconnect) leaves nothing behind; still before the store is read.
        try:
            subscriber = services.hub.subscribe("sse", client_filter)
        except HubClosed:
            return  # shutting down: the retry hint below was never sent, EventSource retries
        cursor = Cursor(services.hub.last_seq)
        items = replay_then_live(services.batches, subscriber, after, cursor,
                                 gate=services.replays)
        try:
            # The start position, as a named event that carries data: every EventSource
            # implementation records its id as Last-Event-ID (npm `eventsource` drops an
            # id-only message), so even a client whose filter has matched nothing yet
            # resumes from the right place; browsers fire it only for a `start` listener.
            yield _start_message(after, cursor.seq, services.batches.epoch, retry_ms)
            async for item in items:
                if isinstance(item, Gap):
                    yield ServerSentEvent(data=orjson.dumps(item.to_dict()).decode(), event="gap")
                else:
                    # Frames the hub encoded once for every client; whatever piled up
                    # while this client waited for its turn goes out in one write.
                    yield item[0].sse_frame if len(item) == 1 else b"".join(
                        message.sse_frame for message in item)
                    cursor.seq = item[-1].seq
            # The hub ended this stream: slow client or shutdown. EventSource comes back
            # after `retry` ms with Last-Event-ID and replay fills in what it missed.
            if subscriber.reason is DisconnectReason.SLOW_CLIENT:
                logger.info("SSE client %s fell behind at seq %d; ended its stream to resume",
                            request.client.host if request.client else "?", cursor.seq)
            yield ServerSentEvent(id=str(cursor.seq), comment=f"end: {_reason(subscriber.reason)}",
                                  retry=retry_ms)
        finally:
            await items.aclose()  # frees its replay slot now, not when it is collected
            subscriber.close()

    return _admitted(request, services, _holding(services, addresses, stream()))


def _admitted(request: Request, services: Services,
              body: AsyncIterator[ServerSentEvent | bytes]) -> Response:
    """The stream's response, if the client may have one more connection (counted last,
    so nothing before can fail holding a slot; before the stream starts)."""
    ticket = services.admission.admit(request.client.host if request.client else "?")
    if isinstance(ticket, Refusal):
        return refusal_response(services.admission, ticket)
    return _AdmittedStream(
        body,
        ping=services.limits.sse_ping_seconds,
        send_timeout=services.limits.sse_send_timeout,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        ticket=ticket,
    )


async def _holding(services: Services, addresses: list[str],
                   stream: AsyncGenerator[ServerSentEvent | bytes, None],
                   ) -> AsyncIterator[ServerSentEvent | bytes]:
    """``stream``, holding ``addresses`` while it runs. The hold is taken in the body, as
    the hub subscription is: a client that never reads it holds nothing, and the leases
    of its addresses simply run."""
    async with aclosing(stream) as events:  # closed at once, not when collected
        if addresses:
            try:
                await services.watch_stream(addresses)
            except (WatchLimitReached, StoreError):
                return  # changed since the check: EventSource comes back and is told why
        try:
            async for item in events:
                yield item
        finally:
            services.release(addresses)


def _start_message(after: int | None, last_seq: int, epoch: str, retry_ms: int
                   ) -> ServerSentEvent:
    resume_from = after if after is not None else last_seq
    data = {"resume_from": resume_from, "last_seq": last_seq, "epoch": epoch}
    return ServerSentEvent(id=str(resume_from), event="start", data=orjson.dumps(data).decode(),
                           retry=retry_ms)


class _AdmittedStream(LeanEventSourceResponse):
    """The SSE response, holding the client's connection slot until it is over: however
    it ends (a disconnect, a send timeout, the hub's cut, shutdown, even a body that
    never started), the slot is given back once."""

    def __init__(self, *args: Any, ticket: Ticket, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._ticket.release()


def _reason(reason: DisconnectReason | None) -> str:
    return reason.value if reason is not None else "closed"
