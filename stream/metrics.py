"""``/metrics``: Prometheus figures, read from each component at scrape time.

Components keep plain counters (no prometheus import in the core); this collector turns
them into metric families when Prometheus asks: the hub and batcher through their
``stats()``, the Electrum pool through its typed ``snapshot()``. Batch sizes are the one
histogram, fed by ``MeteredSink`` as batches pass from the batcher to the hub. Each app has
its own registry, so several apps (tests) never collide.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from batcher.events import Batch
from batcher.runner import BatchSink
from stream.electrum import PoolSnapshot

__all__ = ["ChainwireCollector", "MeteredSink", "metrics_endpoint"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MeteredSink:
    """Observes each batch's size on its way to the hub (``BatchSink``)."""

    def __init__(self, sink: BatchSink, registry: CollectorRegistry) -> None:
        self._sink = sink
        self._sizes = Histogram(
            "chainwire_batch_events", "Events per published batch", ["type"],
            buckets=(1, 2, 3, 5, 10, 20, 50, 100), registry=registry,
        )

    def publish(self, batch: Batch) -> None:
        self._sizes.labels(batch.type).observe(batch.count)
        self._sink.publish(batch)


class ChainwireCollector(Collector):
    """``stats``: the services' figures (``hub``, ``batcher``); ``pool``: the pool's
    ``snapshot``."""

    def __init__(
        self, stats: Callable[[], dict[str, Any]], pool: Callable[[], PoolSnapshot]
    ) -> None:
        self._stats = stats
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield from _hub_metrics(stats["hub"])
        yield from _batcher_metrics(stats["batcher"])
        yield from _pool_metrics(self._pool())
        yield from _connection_metrics(stats["connections"], stats["replays"])


def _connection_metrics(connections: dict[str, Any], replays: dict[str, Any]
                        ) -> Iterator[Metric]:
    yield GaugeMetricFamily("chainwire_connections", "Open stream connections (SSE and WS)",
                            value=connections["total"])
    refused = CounterMetricFamily("chainwire_connections_refused", "Stream connections "
                                  "refused past a cap, by reason", labels=["reason"])
    for reason, count in connections["refused"].items():
        refused.add_metric([reason], count)
    yield refused
    for state in ("active", "waiting"):
        yield GaugeMetricFamily(f"chainwire_replays_{state}",
                                f"Replays {state} (CHAINWIRE_MAX_REPLAYS)", value=replays[state])


def _hub_metrics(hub: dict[str, Any]) -> Iterator[Metric]:
    clients = GaugeMetricFamily("chainwire_clients", "Connected stream clients",
                                labels=["transport"])
    for transport in ("sse", "ws"):
        clients.add_metric([transport], hub["clients"].get(transport, 0))
    yield clients
    deliveries = CounterMetricFamily("chainwire_deliveries", "Batches delivered to clients",
                                     labels=["transport"])
    for transport, count in hub["deliveries"].items():
        deliveries.add_metric([transport], count)
    yield deliveries
    disconnects = CounterMetricFamily(
        "chainwire_disconnects", "Stream clients ended, by reason (slow_client = cut "
        "for falling behind, with its resume point)", labels=["transport", "reason"])
    for key, count in hub["disconnects"].items():
        transport, _, reason = key.partition(":")
        disconnects.add_metric([transport, reason], count)
    yield disconnects
    yield CounterMetricFamily("chainwire_batches_published", "Batches published to the hub",
                              value=hub["batches_published"])


def _batcher_metrics(batcher: dict[str, Any]) -> Iterator[Metric]:
    for name in ("events_received", "events_batched", "events_saved", "batches_created",
                 "batches_stored", "store_retries", "store_errors", "store_failures",
                 "publish_errors", "batches_lost"):
        if name in batcher:
            yield CounterMetricFamily(f"chainwire_batcher_{name}", name.replace("_", " "),
                                      value=batcher[name])
    flushes = CounterMetricFamily("chainwire_batcher_flushes", "Windows closed, by reason",
                                  labels=["reason"])
    for key, value in batcher.items():
        if key.startswith("flushes_"):
            flushes.add_metric([key.removeprefix("flushes_")], value)
    yield flushes
    for name in ("queued_events", "pending_batches", "retry_buffer"):
        if name in batcher:
            yield GaugeMetricFamily(f"chainwire_batcher_{name}", name.replace("_", " "),
                                    value=batcher[name])
    latencies = (("window", "Window first event to batch published"),
                 ("store", "Time to save a group of batches"))
    for (what, description), suffix in itertools.product(latencies, ("last", "max", "avg")):
        key = f"{what}_latency_seconds_{suffix}"
        if key in batcher:
            yield GaugeMetricFamily(f"chainwire_{key}", f"{description} ({suffix})",
                                    value=batcher[key])


def _pool_metrics(pool: PoolSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily("chainwire_pool_size", "Electrum pool size", value=pool.size)
    yield GaugeMetricFamily("chainwire_pool_connected", "Electrum pool connected",
                            value=pool.connected)
    up = GaugeMetricFamily("chainwire_pool_server_state", "1 for each server's current state",
                           labels=["server", "state"])
    in_flight = GaugeMetricFamily("chainwire_pool_server_in_flight", "Requests in flight",
                                  labels=["server"])
    requests = CounterMetricFamily("chainwire_pool_server_requests", "Requests sent",
                                   labels=["server"])
    failures = CounterMetricFamily("chainwire_pool_server_failures", "Requests failed",
                                   labels=["server"])
    latency = GaugeMetricFamily("chainwire_pool_server_latency_seconds",
                                "Recent request latency", labels=["server"])
    for server in pool.servers:
        up.add_metric([server.url, server.state.value], 1)
        in_flight.add_metric([server.url], server.in_flight)
        requests.add_metric([server.url], server.requests)
        failures.add_metric([server.url], server.failures)
        if server.latency_ms is not None:
            latency.add_metric([server.url], server.latency_ms / 1000)
    yield from (up, in_flight, requests, failures, latency)


async def metrics_endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)
