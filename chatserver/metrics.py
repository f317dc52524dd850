"""Prometheus metrics at `GET /metrics`, with prometheus-client's own registry per app.

Live values (connections, queue bytes, pool and store counters) are read at scrape time by a
collector, so the hot path pays nothing for them; only the loop-lag histogram is observed as
it happens, by the lag monitor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from chatserver.context import ChatContext

QUEUE_BYTES_BUCKETS = (0, 1024, 16384, 65536, 262144, 1048576, 4194304)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.loop_lag = Histogram(
            "chat_event_loop_lag_seconds", "How late the event loop ran a timer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                     2.5),
            registry=self.registry)

    def bind(self, ctx: ChatContext) -> None:
        self.registry.register(_LiveCollector(ctx))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(self, ctx: ChatContext) -> None:
        self.ctx = ctx

    def describe(self) -> list[object]:
        return []  # collected live; nothing to describe up front

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        ctx = self.ctx
        yield GaugeMetricFamily("chat_connections", "Open WebSocket connections.",
                                value=len(ctx.connections))
        yield _queue_histogram(ctx.connections.queued_bytes())
        yield CounterMetricFamily("chat_deliveries", "Frames enqueued to connections by fan-out.",
                                  value=ctx.hub.deliveries)
        yield CounterMetricFamily("chat_messages_stored", "Messages stored by this instance.",
                                  value=ctx.messages.stored)
        yield CounterMetricFamily("chat_hub_resyncs", "Gaps re-read from the store.",
                                  value=ctx.hub.resyncs)
        yield GaugeMetricFamily("chat_active_streams", "Streams in progress.",
                                value=len(ctx.streams))
        overload = ctx.overload
        yield GaugeMetricFamily("chat_overload_level", "0 normal, 1 shedding typing/presence, "
                                "2 refusing connections, 3 refusing sends.",
                                value=int(overload.level))
        shed = CounterMetricFamily("chat_overload_shed", "Work refused under overload.",
                                   labels=["what"])
        shed.add_metric(["typing_presence"], overload.shed_ephemeral)
        shed.add_metric(["connections"], overload.refused_connections)
        shed.add_metric(["sends"], overload.refused_sends)
        yield shed
        yield from _store_metrics(ctx)
        yield from _pool_metrics(ctx)


def _queue_histogram(sizes: list[int]) -> HistogramMetricFamily:
    buckets = []
    for bound in QUEUE_BYTES_BUCKETS:
        buckets.append((str(float(bound)), sum(1 for s in sizes if s <= bound)))
    buckets.append(("+Inf", len(sizes)))
    return HistogramMetricFamily("chat_send_queue_bytes", "Bytes queued per connection now.",
                                 buckets=buckets, sum_value=sum(sizes))


def _store_metrics(ctx: ChatContext) -> Iterator[object]:
    stats = ctx.store.stats
    for name in ("batches", "transactions", "jobs", "failed_batches", "retries", "rejected"):
        yield CounterMetricFamily(f"chat_store_{name}", f"Store writer: {name}.",
                                  value=getattr(stats, name))
    yield GaugeMetricFamily("chat_store_pending_writes", "Writes submitted, not yet resolved.",
                            value=stats.pending)


def _pool_metrics(ctx: ChatContext) -> Iterator[object]:
    in_flight = GaugeMetricFamily("chat_pool_jobs_in_flight", "Pool jobs queued or running.",
                                  labels=["function"])
    done = CounterMetricFamily("chat_pool_jobs", "Pool jobs finished.", labels=["function"])
    seconds = CounterMetricFamily("chat_pool_job_seconds", "Pool job time, queue included.",
                                  labels=["function"])
    for name, stats in ctx.executors.stats.items():
        in_flight.add_metric([name], stats.queued)
        done.add_metric([name], stats.done + stats.failed)
        seconds.add_metric([name], stats.seconds)
    yield in_flight
    yield done
    yield seconds


async def metrics_handler(request: web.Request) -> web.Response:
    # Imported here: app_keys imports the context, which imports this module.
    from chatserver.app_keys import CONTEXT

    ctx = request.app[CONTEXT]
    return web.Response(body=ctx.metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
