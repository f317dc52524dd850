"""GET /metrics (issue 5): every required family is there, and moves by exactly what the
traffic did, read with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from chatserver import metrics as metrics_module
from chatserver.config import MetricsConfig
from chatserver.metrics import Metrics, WorkerSet
from chatserver.overload import Level, Thresholds
from tests.integration.conftest import Chat, ChatFactory, WsClient
from tests.integration.test_guarantees import _masked_text_frame, _stalled_websocket

Scrape = dict[str, Metric]


async def scrape(chat: Chat) -> Scrape:
    reply = await chat.client.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(await reply.text())}


def value(families: Scrape, sample: str, **labels: str) -> float:
    """The one sample named `sample` with exactly these labels (fails if there is none)."""
    for family in families.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"no sample {sample}{labels} in the scrape")


def moved(before: Scrape, after: Scrape, sample: str, **labels: str) -> float:
    return value(after, sample, **labels) - value(before, sample, **labels)


async def read_until(client: WsClient, count: int, *ops: str) -> list[dict[str, Any]]:
    """The next `count` frames whose op is one of `ops` (others are skipped)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await client.recv()
        if frame["op"] in ops:
            got.append(frame)
    return got


REQUIRED = {
    "chat_connections": "gauge",
    "chat_connections_by_state": "gauge",
    "chat_connections_opened": "counter",
    "chat_connections_closed": "counter",
    "chat_slow_consumer_evictions": "counter",
    "chat_joins": "counter",
    "chat_join_replayed_messages": "counter",
    "chat_frames_in": "counter",
    "chat_frames_out": "counter",
    "chat_frames_written": "counter",
    "chat_bytes_written": "counter",
    "chat_socket_writes": "counter",
    "chat_send_queue_frames": "counter",
    "chat_send_queue_bytes": "histogram",
    "chat_deliveries": "counter",
    "chat_delivery_latency_seconds": "histogram",
    "chat_messages_stored": "counter",
    "chat_flusher_passes": "counter",
    "chat_store_commit_seconds": "histogram",
    "chat_store_batch_size": "histogram",
    "chat_store_transactions": "counter",
    "chat_store_pending_writes": "gauge",
    "chat_pool_jobs_in_flight": "gauge",
    "chat_pool_jobs": "counter",
    "chat_pool_job_seconds": "histogram",
    "chat_event_loop_lag_seconds": "histogram",
    "chat_backend_up": "gauge",
    "chat_backend_ping_seconds": "gauge",
    "chat_overload_level": "gauge",
}


async def test_every_metric_moves_by_what_the_traffic_did(chat: Chat) -> None:
    """Sends, a stream, typing, a ping, a bad frame, history and a resuming join move the
    frame, delivery, latency, store, pool and join metrics by exactly their share; backends
    report up; the loop-lag histogram keeps counting."""
    # A loaded test machine must not make the server shed the typing frame counted here.
    chat.ctx.overload.thresholds = Thresholds(lag=(60.0, 60.0, 60.0))
    chat.ctx.overload.level = Level.NORMAL
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await chat.room("general")
    a, b = await chat.ws(alice), await chat.ws(bob)
    await a.join("general")
    await b.join("general")
    before = await scrape(chat)
    for name, kind in REQUIRED.items():
        assert before[name].type == kind, name

    texts = ["hello one", "hello two", "hello three", "**bold** text"]
    for text in texts:
        assert (await a.say("general", text))["op"] == "ack"
    started = await a.request({"op": "stream_start", "room": "general"}, "ack")
    for token in ("tok one ", "tok two"):
        await a.send({"op": "stream_delta", "stream": started["stream"], "text": token})
    assert "seq" in await a.request({"op": "stream_end", "stream": started["stream"]}, "ack")
    # (alice's own copies are read, and skipped, by her requests above)
    frames = await read_until(b, 8, "message", "stream_start", "stream_delta")
    assert [f["op"] for f in frames] == ["message"] * 4 + [
        "stream_start", "stream_delta", "stream_delta", "message"]
    await b.send({"op": "typing", "room": "general"})
    await read_until(a, 1, "typing")
    assert (await a.request({"op": "ping"}))["op"] == "pong"
    await a.send("not json")
    await read_until(a, 1, "error")
    assert (await a.request({"op": "history", "room": "general"}))["op"] == "history"
    c = await chat.ws(alice)  # a third connection resumes from the start: 5 replayed
    assert (await c.join("general", after=0))["seq"] == 5
    await asyncio.sleep(0.25)  # a loop-lag sample or two
    after = await scrape(chat)

    frames_in = {"send": 4, "stream_start": 1, "stream_delta": 2, "stream_end": 1,
                 "typing": 1, "ping": 1, "invalid": 1, "history": 1, "join": 1, "leave": 0,
                 "binary": 0}
    for op, count in frames_in.items():
        assert moved(before, after, "chat_frames_in_total", op=op) == count, op
    frames_out = {"ack": 6, "message": 2 * 5 + 5, "stream_start": 2, "stream_delta": 4,
                  "typing": 1, "pong": 1, "error": 1, "history": 1, "joined": 1, "hello": 1}
    for op, count in frames_out.items():
        assert moved(before, after, "chat_frames_out_total", op=op) == count, op
    assert moved(before, after, "chat_deliveries_total") == 10 + 2 + 4 + 1
    assert moved(before, after, "chat_joins_total") == 1
    assert moved(before, after, "chat_join_replayed_messages_total") == 5
    assert moved(before, after, "chat_messages_stored_total") == 5

    for copy in ("first", "last"):
        labels = {"copy": copy, "origin": "local"}
        assert moved(before, after, "chat_delivery_latency_seconds_count", **labels) == 5
        assert moved(before, after, "chat_delivery_latency_seconds_bucket",
                     le="5.0", **labels) == 5
        assert 0 < moved(before, after, "chat_delivery_latency_seconds_sum", **labels) < 5
        assert moved(before, after, "chat_delivery_latency_seconds_count",
                     copy=copy, origin="remote") == 0

    assert moved(before, after, "chat_store_jobs_total") == 5
    assert moved(before, after, "chat_store_batch_size_sum") == 5
    batches = moved(before, after, "chat_store_batch_size_count")
    assert 1 <= batches <= 5
    assert moved(before, after, "chat_store_commit_seconds_count") == batches
    assert moved(before, after, "chat_store_transactions_total") == batches
    assert moved(before, after, "chat_store_commit_seconds_sum") > 0

    # Short plain text renders inline (four: three sends and the stream's text); Markdown in
    # the process pool.
    for function, jobs in (("render_markdown_inline", 4), ("render_markdown", 1)):
        assert moved(before, after, "chat_pool_job_seconds_count", function=function) == jobs
        assert moved(before, after, "chat_pool_jobs_total", function=function,
                     result="ok") == jobs
        assert value(after, "chat_pool_jobs_in_flight", function=function) == 0
    assert moved(before, after, "chat_pool_job_seconds_sum", function="render_markdown") > 0

    assert moved(before, after, "chat_connections_opened_total") == 1
    assert value(after, "chat_connections") == 3
    assert value(after, "chat_connections_by_state", state="open") == 3
    assert value(after, "chat_connections_by_state", state="closing") == 0
    assert value(after, "chat_send_queue_bytes_count") == 3
    written = moved(before, after, "chat_frames_written_total")
    assert written >= sum(frames_out.values())
    assert 0 < moved(before, after, "chat_socket_writes_total") <= written
    assert moved(before, after, "chat_bytes_written_total") > 0
    assert moved(before, after, "chat_flusher_passes_total") > 0
    assert moved(before, after, "chat_event_loop_lag_seconds_count") >= 1
    assert value(after, "chat_backend_up", role="store", backend="sqlite") == 1
    assert value(after, "chat_backend_up", role="broker", backend="memory") == 1
    assert 0 <= value(after, "chat_backend_ping_seconds", role="store", backend="sqlite") < 1

    await c.close()  # a client's normal close
    deadline = time.monotonic() + 5
    while value(latest := await scrape(chat), "chat_connections_closed_total",
                code="1000") == value(before, "chat_connections_closed_total", code="1000"):
        assert time.monotonic() < deadline, "the closed connection was never counted"
        await asyncio.sleep(0.05)
    assert value(latest, "chat_connections") == 2
    assert value(latest, "chat_slow_consumer_evictions_total") == 0


async def test_a_slow_consumer_eviction_is_counted_with_its_1013(
        make_chat: ChatFactory) -> None:
    """A reader that stopped reading is evicted: the evictions counter and the 1013 close
    code each move by one, once the connection is gone."""
    chat = await make_chat(send_queue_bytes=64 * 1024)
    token = await chat.user("alice")
    await chat.room("general")
    port = chat.client.server.port
    assert port is not None
    before = await scrape(chat)
    stalled = await asyncio.to_thread(_stalled_websocket, port, token)
    try:
        await asyncio.to_thread(stalled.sendall,
                                _masked_text_frame(b'{"op":"join","room":"general"}'))
        deadline = time.monotonic() + 10
        while not any("general" in s.rooms for s in chat.ctx.connections):
            assert time.monotonic() < deadline, "the stalled client never joined"
            await asyncio.sleep(0.05)
        (victim,) = chat.ctx.connections
        sender = await chat.ws(token)
        filler = "x" * 16000
        sent = 0
        while not victim.outbox.evicted and sent < 2000:
            assert (await sender.say("general", f"{sent} {filler}"))["op"] == "ack"
            sent += 1
        assert victim.outbox.evicted
        deadline = time.monotonic() + 10
        while value(after := await scrape(chat), "chat_slow_consumer_evictions_total") == 0:
            assert time.monotonic() < deadline, "the eviction was never counted"
            await asyncio.sleep(0.05)
    finally:
        stalled.close()
    assert moved(before, after, "chat_slow_consumer_evictions_total") == 1
    assert moved(before, after, "chat_connections_closed_total", code="1013") == 1
    assert moved(before, after, "chat_connections_opened_total") == 2
    assert moved(before, after, "chat_frames_in_total", op="join") == 1
    assert value(after, "chat_connections") == 1


async def test_a_worker_scrape_merges_the_others_and_names_the_silent_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With several workers, one worker's scrape holds every worker's samples, each family
    once and each sample labelled `worker`; a worker with no socket (exited, restarting) or
    one that does not answer within PEER_TIMEOUT is reported down, and the scrape answers."""
    monkeypatch.setattr(metrics_module, "PEER_TIMEOUT", 0.3)
    workers = [Metrics(), Metrics()]
    for number, worker in enumerate(workers):
        await worker.serve_workers(WorkerSet(str(tmp_path), number, 4))
    release = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    hung = await asyncio.start_unix_server(never_answer,
                                           path=WorkerSet(str(tmp_path), 3, 4).socket(3))
    try:
        workers[0].loop_lag.observe(0.01)
        for lag in (0.2, 0.3):
            workers[1].loop_lag.observe(lag)
        started = time.monotonic()
        text = (await workers[0].scrape()).decode()
        assert time.monotonic() - started < 2
        assert text.count("# TYPE chat_event_loop_lag_seconds histogram") == 1
        families = {f.name: f for f in text_string_to_metric_families(text)}
        lag = "chat_event_loop_lag_seconds_count"
        assert value(families, lag, worker="0") == 1 and value(families, lag, worker="1") == 2
        assert value(families, "chat_event_loop_lag_seconds_sum", worker="1") == 0.5
        assert {s.labels["worker"]: s.value
                for s in families["chat_metrics_worker_up"].samples} == {
            "0": 1.0, "1": 1.0, "2": 0.0, "3": 0.0}
        assert all("worker" in s.labels for f in families.values() for s in f.samples)
    finally:
        release.set()
        hung.close()
        for worker in workers:
            await worker.close_workers()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-3.sock"]


async def test_metrics_off_answers_404_and_times_nothing(make_chat: ChatFactory) -> None:
    """`[metrics] enabled = false` (for measuring what metrics cost): /metrics answers 404
    saying how to turn it on, no delivery is timed and no lag sample is kept, and chat
    works as before."""
    chat = await make_chat(metrics=MetricsConfig(enabled=False))
    reply = await chat.client.get("/metrics")
    assert reply.status == 404
    body = await reply.json()
    assert body["error"] == "not_found" and "[metrics] enabled = true" in body["message"]
    assert chat.ctx.hub.fanned_out is None and chat.ctx.flusher.latency is None
    token = await chat.user("alice")
    await chat.room("general")
    alice, reader = await chat.ws(token), await chat.ws(token)
    await reader.send({"op": "join", "room": "general"})
    await read_until(reader, 1, "joined")
    assert (await alice.say("general", "hi"))["op"] == "ack"
    (message,) = await read_until(reader, 1, "message")
    assert message["text"] == "hi"
    await asyncio.sleep(0.25)  # a few loop-lag ticks: none reaches the histogram
    lag_samples = chat.ctx.metrics.loop_lag.collect()[0].samples
    assert next(s.value for s in lag_samples if s.name.endswith("_count")) == 0
