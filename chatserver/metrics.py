"""Prometheus metrics at `GET /metrics`, with prometheus-client's own registry per app.

Live values are plain integers on the objects that own them (connections, hub, outboxes,
store writer, pools, broker), read at scrape time by a collector, so the hot path pays an
integer increment at most, never a prometheus-client call: fan-out adds nothing per recipient
to what the hub already counted. Histograms observed as things happen (delivery latency, store
commits, pool jobs) are `Buckets`: a bisect and two additions, about 0.4 us against 2.6 us for
a prometheus-client `Histogram.observe`. Only the loop-lag histogram, observed ten times a
second, is a prometheus-client `Histogram`.

With `[server] processes = N` every worker answers a scrape for all of them (`WorkerSet`): the
scraped worker asks the others over Unix sockets in a directory the supervisor made, and labels
every sample with `worker`. docs/operations.md ("Metrics") lists every metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from chatserver.errors import NotFound
from chatserver.histogram import (
    DELIVERY_BUCKETS,
    JOB_BUCKETS,
    QUEUE_BYTES_BUCKETS,
    Buckets,
    bucket_bound,
)

if TYPE_CHECKING:
    from chatserver.context import ChatContext

log = logging.getLogger(__name__)


CLIENT_OPS = ("join", "leave", "send", "history", "typing", "stream_start", "stream_delta",
              "stream_end", "ping", "invalid", "binary")
POOL_JOBS = ("render_markdown", "render_markdown_inline", "hash_password", "verify_password")
SERVER_OPS = ("hello", "ack", "error", "joined", "left", "history", "pong", "message",
              "stream_start", "stream_delta", "stream_end", "typing", "presence",
              "file_updated")
# Close codes the server uses or a client commonly sends; any other is counted as "other", so
# a client cannot grow the label set.
KNOWN_CLOSE_CODES = (1000, 1001, 1003, 1006, 1008, 1009, 1011, 1013)
CLOSE_CODE_LABELS = (*(str(code) for code in KNOWN_CLOSE_CODES), "other")
HEALTH_TIMEOUT = 1.0  # seconds a backend ping may take at scrape time before it counts as down
PEER_TIMEOUT = 3.0  # seconds another worker may take to answer a scrape


@dataclass(frozen=True, slots=True)
class WorkerSet:
    """This worker's place among the supervisor's workers, for scrapes that cover them all:
    worker `i` answers other workers on `<directory>/worker-<i>.sock`."""

    directory: str
    worker: int
    workers: int

    def socket(self, worker: int) -> str:
        return os.path.join(self.directory, f"worker-{worker}.sock")


class DeliveryLatency:
    """End-to-end delivery latency: from the server receiving a message (a client's `send`;
    on other instances, the broker handing it over) to socket writes of its copies.

    Timed per message, never per recipient: the hub reports each message once after its
    fan-out (through `Flusher.track`, into `local`/`remote`), and the flusher reports when
    the pass carrying those messages began writing (their first copy) and when a pass left
    its queue empty (their last copy): one call per pass, a bisect per observation."""

    __slots__ = ("first_local", "first_remote", "last_local", "last_remote", "local", "remote",
                 "writing", "_writing_local", "_writing_remote")

    def __init__(self) -> None:
        self.first_local, self.first_remote = Buckets(DELIVERY_BUCKETS), Buckets(DELIVERY_BUCKETS)
        self.last_local, self.last_remote = Buckets(DELIVERY_BUCKETS), Buckets(DELIVERY_BUCKETS)
        self.local: list[float] = []  # receive times, fanned out since the last pass began
        self.remote: list[float] = []
        self.writing = False  # a split pass wrote first copies; the rest of it follows
        self._writing_local: list[float] = []
        self._writing_remote: list[float] = []

    @property
    def series(self) -> dict[tuple[str, str], Buckets]:
        """(copy, origin) -> histogram."""
        return {("first", "local"): self.first_local, ("first", "remote"): self.first_remote,
                ("last", "local"): self.last_local, ("last", "remote"): self.last_remote}

    def written(self, started: float, ended: float | None) -> None:
        """A flusher pass that began at `started` carried the messages fanned out since the
        last one (their first copies); `ended`: it left the flusher's queue empty at that
        time (every last copy is out), None: it was split and the rest follows."""
        local, remote = self.local, self.remote
        if local:
            self.local = []
        if remote:
            self.remote = []
        if ended is not None and not self.writing:  # the usual case: one pass wrote them all
            if local:
                _observe_pair(self.first_local, self.last_local, local, started, ended)
            if remote:
                _observe_pair(self.first_remote, self.last_remote, remote, started, ended)
            return
        if local:
            self.first_local.observe_since(local, started)
        if remote:
            self.first_remote.observe_since(remote, started)
        local = self._writing_local + local
        remote = self._writing_remote + remote
        if ended is None:
            self._writing_local, self._writing_remote = local, remote
            self.writing = bool(local or remote)
            return
        self._writing_local, self._writing_remote = [], []
        self.writing = False
        if local:
            self.last_local.observe_since(local, ended)
        if remote:
            self.last_remote.observe_since(remote, ended)


def _observe_pair(first: Buckets, last: Buckets, starts: list[float], began: float,
                  ended: float) -> None:
    """`first.observe_since(starts, began)` and `last.observe_since(starts, ended)` in one
    loop (this runs once per flusher pass that carries a message)."""
    first_counts, first_bounds = first.counts, first.bounds
    last_counts, last_bounds = last.counts, last.bounds
    first_sum = last_sum = 0.0
    for start in starts:
        elapsed = began - start
        first_counts[bisect_left(first_bounds, elapsed)] += 1
        first_sum += elapsed
        elapsed = ended - start
        last_counts[bisect_left(last_bounds, elapsed)] += 1
        last_sum += elapsed
    first.sum += first_sum
    last.sum += last_sum


_Ping = Callable[[], Awaitable[None]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.loop_lag = Histogram(
            "chat_event_loop_lag_seconds", "How late the event loop ran a timer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
                     2.5),
            registry=self.registry)
        # Counted where the frame is handled or queued (handlers.py, connection.py); the hub
        # counts fan-out frames itself, once per event.
        self.frames_in: defaultdict[str, int] = defaultdict(int, dict.fromkeys(CLIENT_OPS, 0))
        self.frames_out: defaultdict[str, int] = defaultdict(int)
        self.delivery = DeliveryLatency()
        self.health: dict[str, tuple[str, int, float]] = {}  # role -> (backend, up, seconds)
        self._ctx: ChatContext | None = None
        self._workers: WorkerSet | None = None
        self._peer_server: asyncio.Server | None = None

    def bind(self, ctx: ChatContext) -> None:
        self._ctx = ctx
        self.registry.register(_LiveCollector(ctx))
        # Delivery latency: the hub reports each message once after its fan-out, and the
        # flusher times the passes that write its first and its last copy.
        ctx.hub.fanned_out = ctx.flusher.track
        ctx.flusher.latency = self.delivery

    def render(self) -> bytes:
        """This process's metrics as they stand (backend health as last probed)."""
        return generate_latest(self.registry)

    async def render_local(self) -> bytes:
        """This process's metrics, with the store and broker probed now."""
        await self.refresh_health()
        return self.render()

    async def scrape(self) -> bytes:
        """What `GET /metrics` answers: this process's metrics, or with several workers,
        every worker's, each sample labelled with its `worker`."""
        workers = self._workers
        if workers is None:
            return await self.render_local()
        others = [w for w in range(workers.workers) if w != workers.worker]
        await self.refresh_health()
        fetched = await asyncio.gather(*(_fetch_families(workers.socket(w)) for w in others))
        parts: list[tuple[int, list[Metric] | None]] = [
            (workers.worker, list(self.registry.collect())), *zip(others, fetched, strict=True)]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(sorted(parts, key=lambda part: part[0])))
        return generate_latest(registry)

    async def refresh_health(self) -> None:
        """Ping the store and the broker (as /readyz does), at most HEALTH_TIMEOUT each."""
        ctx = self._ctx
        if ctx is None:
            return
        await asyncio.gather(
            self._probe("store", ctx.config.store.backend, ctx.store.ping),
            self._probe("broker", ctx.config.broker.backend, ctx.broker.ping))

    async def _probe(self, role: str, backend: str, ping: _Ping) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(ping(), HEALTH_TIMEOUT)
            up = 1
        except Exception as exc:  # any failure means "not usable now"; readyz says which
            log.debug("%s (%s) ping failed: %r", role, backend, exc)
            up = 0
        self.health[role] = (backend, up, time.monotonic() - started)

    # -- several worker processes -----------------------------------------------------------

    async def serve_workers(self, workers: WorkerSet) -> None:
        """Answer the other workers' scrapes on this worker's socket, and include theirs in
        ours from now on."""
        path = workers.socket(workers.worker)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by this slot's previous process (a crash, a restart)
        self._peer_server = await asyncio.start_unix_server(self._answer_peer, path=path)
        self._workers = workers

    async def close_workers(self) -> None:
        server, self._peer_server = self._peer_server, None
        if server is None:
            return
        server.close()
        if self._workers is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._workers.socket(self._workers.worker))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), PEER_TIMEOUT)

    async def _answer_peer(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await self.render_local())
            await writer.drain()
        except Exception as exc:  # the asking worker gave up (it timed out): nothing to do
            log.debug("answering another worker's scrape failed: %r", exc)
        finally:
            writer.close()


async def _fetch_families(path: str) -> list[Metric] | None:
    """Another worker's metrics, parsed; None when it does not answer in time."""
    try:
        text = await asyncio.wait_for(_read_socket(path), PEER_TIMEOUT)
        return list(text_string_to_metric_families(text.decode("utf-8")))
    except (OSError, TimeoutError, ValueError) as exc:
        log.debug("worker socket %s did not answer: %r", path, exc)
        return None


async def _read_socket(path: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        return await reader.read()
    finally:
        writer.close()


class _Merged(Collector):
    """Every worker's families as one exposition: a family appears once, with each worker's
    samples labelled `worker`, and `chat_metrics_worker_up` says which workers answered."""

    def __init__(self, parts: list[tuple[int, list[Metric] | None]]) -> None:
        self.parts = parts

    def describe(self) -> list[object]:
        return []

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily("chat_metrics_worker_up", "1 if the worker answered this "
                               "scrape (its samples are included), 0 if not.",
                               labels=["worker"])
        for worker, families in self.parts:
            label = str(worker)
            up.add_metric([label], 0 if families is None else 1)
            for family in families or ():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
                into.samples.extend(
                    Sample(s.name, {"worker": label, **s.labels}, s.value, s.timestamp,
                           s.exemplar) for s in family.samples)
        yield from merged.values()
        yield up


class _LiveCollector(Collector):
    def __init__(self, ctx: ChatContext) -> None:
        self.ctx = ctx

    def describe(self) -> list[object]:
        return []  # collected live; nothing to describe up front

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        ctx = self.ctx
        yield from _connection_metrics(ctx)
        yield from _frame_metrics(ctx)
        hub = ctx.hub
        yield CounterMetricFamily("chat_deliveries", "Frames fan-out queued to connections "
                                  "(messages, stream events, typing, presence).",
                                  value=hub.deliveries)
        yield CounterMetricFamily("chat_joins", "Joins that went live.", value=hub.joins)
        yield CounterMetricFamily("chat_join_replayed_messages",
                                  "Messages replayed to joins with `after`.", value=hub.replayed)
        yield CounterMetricFamily("chat_messages_stored", "Messages stored by this instance.",
                                  value=ctx.messages.stored)
        yield CounterMetricFamily("chat_hub_resyncs", "Gaps re-read from the store.",
                                  value=hub.resyncs)
        watch = ctx.lag.stall_watch
        yield CounterMetricFamily("chat_event_loop_stalls",
                                  "Times the event loop was held past [log] slow_callback_ms.",
                                  value=watch.stalls)
        yield CounterMetricFamily("chat_event_loop_stall_seconds",
                                  "Seconds the event loop was held, summed over those stalls.",
                                  value=watch.stall_seconds_total)
        yield GaugeMetricFamily("chat_event_loop_last_stall_seconds",
                                "How long the last logged stall held the event loop.",
                                value=watch.last_stall_seconds)
        yield CounterMetricFamily("chat_flusher_passes", "Flusher passes (each writes every "
                                  "socket that got frames since the last).",
                                  value=ctx.flusher.passes)
        yield _histogram("chat_delivery_latency_seconds",
                         "From the server receiving a message to a socket write of it: the "
                         "first and the last copy; origin=remote is measured from this "
                         "instance's broker hand-off.",
                         ["copy", "origin"], ctx.metrics.delivery.series.items())
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
        yield from _backend_metrics(ctx)


def _connection_metrics(ctx: ChatContext) -> Iterator[object]:
    conns = ctx.connections
    yield GaugeMetricFamily("chat_connections", "WebSocket connections registered on this "
                            "instance (what the connection limits count).", value=len(conns))
    sessions = list(conns)
    closing = sum(1 for s in sessions if s.outbox.closing)
    by_state = GaugeMetricFamily("chat_connections_by_state", "WebSocket connections by "
                                 "state: open, or closing (close requested, or being cleaned "
                                 "up).", labels=["state"])
    by_state.add_metric(["open"], len(sessions) - closing)
    by_state.add_metric(["closing"], closing + conns.cleaning_up)
    yield by_state
    yield CounterMetricFamily("chat_connections_opened", "WebSocket connections accepted.",
                              value=conns.opened)
    closed = CounterMetricFamily("chat_connections_closed", "WebSocket connections closed, by "
                                 "close code (1006: no close frame; other: any code not "
                                 "listed).", labels=["code"])
    for code, count in sorted(conns.closed_by_code.items()):
        closed.add_metric([code], count)
    yield closed
    yield CounterMetricFamily("chat_slow_consumer_evictions", "Connections closed with 1013 "
                              "because their send queue passed its bound.", value=conns.evicted)
    yield _queue_histogram([s.outbox.queued_bytes for s in sessions])
    totals = conns.totals_with(s.outbox for s in sessions)
    yield CounterMetricFamily("chat_frames_written", "Frames written to sockets.",
                              value=totals.frames_out)
    yield CounterMetricFamily("chat_bytes_written", "Bytes of frames written to sockets.",
                              value=totals.bytes_out)
    yield CounterMetricFamily("chat_socket_writes", "Socket writes (several frames may share "
                              "one).", value=totals.writes)
    queue = CounterMetricFamily("chat_send_queue_frames", "Frames a send queue joined "
                                "(coalesced stream deltas), replaced (superseded typing and "
                                "presence) or dropped under pressure (shed).", labels=["what"])
    queue.add_metric(["coalesced"], totals.coalesced)
    queue.add_metric(["superseded"], totals.superseded)
    queue.add_metric(["shed"], totals.shed)
    yield queue


def _frame_metrics(ctx: ChatContext) -> Iterator[object]:
    frames_in = CounterMetricFamily("chat_frames_in", "Client frames received, by op "
                                    "(invalid: not parsable; binary: refused).", labels=["op"])
    for op, count in sorted(ctx.metrics.frames_in.items()):
        frames_in.add_metric([op], count)
    yield frames_in
    out = dict.fromkeys(SERVER_OPS, 0)
    out["message"] = ctx.hub.live_messages
    for counts in (ctx.metrics.frames_out, ctx.hub.frames_out):
        for op, count in counts.items():
            out[op] = out.get(op, 0) + count
    frames_out = CounterMetricFamily("chat_frames_out", "Frames queued to connections, by op.",
                                     labels=["op"])
    for op, count in sorted(out.items()):
        frames_out.add_metric([op], count)
    yield frames_out


def close_code_label(code: int | None) -> str:
    """The `code` label of a close: no code is 1006 (the connection just ended)."""
    if code is None:
        return "1006"
    return str(code) if code in KNOWN_CLOSE_CODES else "other"


def _queue_histogram(sizes: list[int]) -> HistogramMetricFamily:
    buckets = []
    for bound in QUEUE_BYTES_BUCKETS:
        buckets.append((bucket_bound(bound), sum(1 for s in sizes if s <= bound)))
    buckets.append(("+Inf", len(sizes)))
    return HistogramMetricFamily("chat_send_queue_bytes", "Bytes queued per connection now.",
                                 buckets=buckets, sum_value=sum(sizes))


def _histogram(name: str, documentation: str, labels: list[str],
               series: Iterable[tuple[tuple[str, ...], Buckets]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, buckets in series:
        family.add_metric(list(values), buckets.cumulative(), sum_value=buckets.sum)
    return family


def _store_metrics(ctx: ChatContext) -> Iterator[object]:
    stats = ctx.store.stats
    for name in ("batches", "transactions", "jobs", "failed_batches", "retries", "rejected"):
        yield CounterMetricFamily(f"chat_store_{name}", f"Store writer: {name}.",
                                  value=getattr(stats, name))
    yield GaugeMetricFamily("chat_store_pending_writes", "Writes submitted, not yet resolved.",
                            value=stats.pending)
    timings = ctx.store.timings
    yield _histogram("chat_store_commit_seconds", "Store writer: time to commit one batch "
                     "(its transaction, fsync or round trip included).", [],
                     [((), timings.commit_seconds)])
    yield _histogram("chat_store_batch_size", "Store writer: writes per batch.", [],
                     [((), timings.batch_size)])


def _pool_metrics(ctx: ChatContext) -> Iterator[object]:
    in_flight = GaugeMetricFamily("chat_pool_jobs_in_flight", "Pool queue depth: jobs "
                                  "submitted and not finished (waiting or running).",
                                  labels=["function"])
    done = CounterMetricFamily("chat_pool_jobs", "Pool jobs finished.",
                               labels=["function", "result"])
    seconds = HistogramMetricFamily("chat_pool_job_seconds", "Pool job time from submit to "
                                    "result (queue wait included), per worker function.",
                                    labels=["function"])
    stats = ctx.executors.stats
    for name in sorted(set(POOL_JOBS) | set(stats)):
        job = stats.get(name)
        if job is None:  # not run yet: zeros, so the series exist from the start
            in_flight.add_metric([name], 0)
            done.add_metric([name, "ok"], 0)
            done.add_metric([name, "failed"], 0)
            seconds.add_metric([name], Buckets(JOB_BUCKETS).cumulative(), sum_value=0)
            continue
        in_flight.add_metric([name], job.queued)
        done.add_metric([name, "ok"], job.done)
        done.add_metric([name, "failed"], job.failed)
        seconds.add_metric([name], job.job_seconds.cumulative(), sum_value=job.job_seconds.sum)
    yield in_flight
    yield done
    yield seconds


def _backend_metrics(ctx: ChatContext) -> Iterator[object]:
    up = GaugeMetricFamily("chat_backend_up", "1 if the backend answered a ping at this "
                           "scrape (as /readyz does), else 0.", labels=["role", "backend"])
    seconds = GaugeMetricFamily("chat_backend_ping_seconds", "How long that ping took.",
                                labels=["role", "backend"])
    for role, (backend, is_up, took) in sorted(ctx.metrics.health.items()):
        up.add_metric([role, backend], is_up)
        seconds.add_metric([role, backend], took)
    yield up
    yield seconds
    counters = ctx.broker.counters()
    if counters:
        events = CounterMetricFamily("chat_broker_events", "Broker events published to, "
                                     "dropped on the way to, or received from the other "
                                     "instances.", labels=["what"])
        for what in ("published", "dropped", "received"):
            events.add_metric([what], counters.get(what, 0))
        yield events
        yield CounterMetricFamily("chat_broker_reconnects", "Broker connections lost and "
                                  "re-established.", value=counters.get("reconnects", 0))


async def metrics_handler(request: web.Request) -> web.Response:
    # Imported here: app_keys imports the context, which imports this module.
    from chatserver.app_keys import CONTEXT

    ctx = request.app[CONTEXT]
    if not ctx.config.metrics.enabled:
        raise NotFound("metrics are off on this server: set [metrics] enabled = true")
    return web.Response(body=await ctx.metrics.scrape(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
