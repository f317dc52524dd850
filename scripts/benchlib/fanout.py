"""Scenario `fanout`: N members of one room, one publisher at R msg/s, delivery latency per frame.

Runs inside the generator process. The publisher is open-loop (it sends on a fixed schedule and
never waits for acks), so a slow server shows up as latency and loss rather than as a publisher
that politely slows down (coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any

from .client import MARK, NULL_RECORDER, Frame, Recorder, WsClient, connect
from .stats import summarize_ns
from .timing import Emit, cpu_during, emit_at

_PAD = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 1024)


@dataclass(frozen=True)
class FanoutSpec:
    host: str
    port: int
    token: str
    room: str
    clients: int
    rate: float
    duration: float
    warmup: float
    size: int
    drain: float
    connect_timeout: float
    connect_concurrency: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FanoutSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


class Publisher:
    """Sends `send` frames on schedule; records acks (the seqs every member must receive)."""

    def __init__(self, client: WsClient, room: str, size: int) -> None:
        self.client, self.room, self.size = client, room, size
        self.sent_ns: list[int] = []
        self.sent_in_window = 0
        self.acked_seqs: list[int] = []
        self.ack_latency_ns: list[int] = []
        self.errors: Counter[str] = Counter()
        self.max_lag_ns = 0
        client.on_control = self._on_control

    def _on_control(self, frame: Frame) -> None:
        op, ref = frame.get("op"), str(frame.get("ref", ""))
        if not ref.startswith("p"):
            return
        if op == "ack":
            self.acked_seqs.append(int(frame["seq"]))
            self.ack_latency_ns.append(frame["_rx_ns"] - self.sent_ns[int(ref[1:])])
        elif op == "error":
            self.errors[str(frame.get("code"))] += 1

    def answered(self) -> int:
        return len(self.acked_seqs) + sum(self.errors.values())

    def _send_one(self, window: tuple[int, int]) -> None:
        n = len(self.sent_ns)
        now = monotonic_ns()
        prefix = f"{MARK.decode()}{now}. "
        text = prefix + _PAD[: max(0, self.size - len(prefix))]
        frame = {"op": "send", "room": self.room, "text": text, "ref": f"p{n}"}
        self.sent_ns.append(now)
        if window[0] <= now < window[1]:
            self.sent_in_window += 1
        self.client.send_text(json.dumps(frame, separators=(",", ":")).encode())

    async def run(self, rate: float, start_ns: int, window: tuple[int, int]) -> None:
        """Send at `rate`/s from `start_ns` until the window closes; catch up if late."""
        interval = 1e9 / rate
        burst = 0
        while True:
            now = monotonic_ns()
            if now >= window[1]:
                return
            due = start_ns + int(len(self.sent_ns) * interval)
            if now < due:
                burst = 0
                await asyncio.sleep((due - now) / 1e9)
                continue
            self.max_lag_ns = max(self.max_lag_ns, now - due)
            self._send_one(window)
            burst += 1
            if burst >= 64:  # behind schedule: still let the receivers run
                burst = 0
                await asyncio.sleep(0)


async def _connect_member(spec: FanoutSpec, rec: Recorder, sem: asyncio.Semaphore) -> WsClient:
    # A bounded number of handshakes in flight keeps the server's accept backlog from
    # overflowing, which would turn into 1 s SYN retransmits and a misleading connect time.
    async with sem:
        client = await connect(spec.host, spec.port, spec.token, rec, spec.connect_timeout)
        try:
            await client.join(spec.room, spec.connect_timeout)
        except BaseException:
            client.close()
            raise
        return client


async def connect_members(spec: FanoutSpec, rec: Recorder) -> tuple[list[WsClient], list[str]]:
    """Connect and join all members; returns the clients and the errors of those that failed."""
    sem = asyncio.Semaphore(spec.connect_concurrency)
    results = await asyncio.gather(
        *(_connect_member(spec, rec, sem) for _ in range(spec.clients)), return_exceptions=True
    )
    clients = [r for r in results if isinstance(r, WsClient)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return clients, errors


async def drain(clients: list[WsClient], pub: Publisher, deadline_ns: int) -> bool:
    """Wait until every send is answered and every member has every acked seq, or the deadline."""
    while monotonic_ns() < deadline_ns:
        if pub.answered() >= len(pub.sent_ns):
            want = len(pub.acked_seqs)
            if all(c.received >= want for c in clients if not c.closed):
                return True
        await asyncio.sleep(0.05)
    return False


def account(clients: list[WsClient], acked: list[int]) -> dict[str, int]:
    """Exact per-client delivery accounting against the publisher's acked seqs."""
    lost = dup = ooo = extra = 0
    for c in clients:
        bm, base = c.bitmap, c.seq_base
        got = sum(1 for s in acked if 0 < s - base < len(bm) and bm[s - base])
        lost += len(acked) - got
        extra += c.received - got  # arrived without an ack (ack lost or still in flight)
        dup += c.duplicates
        ooo += c.out_of_order
    return {"lost": lost, "duplicates": dup, "out_of_order": ooo, "unacked_received": extra}


@dataclass
class Publishing:
    """What the publishing phase produced, for the result."""

    window: tuple[int, int]
    generator_cpu_pct: float
    drained: bool
    drain_s: float


async def publish(spec: FanoutSpec, pub: Publisher, clients: list[WsClient], rec: Recorder,
                  emit: Emit) -> Publishing:
    """Warm-up, measured window, then drain; phase events go to the orchestrator."""
    start = monotonic_ns()
    window = (start + int(spec.warmup * 1e9), start + int((spec.warmup + spec.duration) * 1e9))
    rec.open_window(*window)
    emit("publish_start")
    marker = asyncio.create_task(emit_at(window[0], "measure_start", emit))
    cpu = await cpu_during(pub.run(spec.rate, start, window), window)
    await marker
    emit("send_end")
    drained = await drain(clients, pub, monotonic_ns() + int(spec.drain * 1e9))
    drain_s = (monotonic_ns() - window[1]) / 1e9
    emit("drain_end")
    return Publishing(window, cpu, drained, round(drain_s, 3))


def summarize(spec: FanoutSpec, clients: list[WsClient], pub: Publisher, rec: Recorder,
              phase: Publishing) -> dict[str, Any]:
    # Throughput over the window, stretched if deliveries of window messages ran past it:
    # a server that lags does not get credit for the drain time.
    span_s = max(spec.duration, (rec.last_rx_ns - phase.window[0]) / 1e9)
    return {
        "scenario": "fanout",
        "clients": spec.clients,
        "connected": len(clients),
        "rate": spec.rate,
        "duration_s": spec.duration,
        "warmup_s": spec.warmup,
        "size": spec.size,
        "sent": len(pub.sent_ns),
        "sent_measured": pub.sent_in_window,
        "acked": len(pub.acked_seqs),
        "send_errors": dict(pub.errors),
        "unanswered": len(pub.sent_ns) - pub.answered(),  # no ack or error by the drain's end
        "ack_latency_ms": summarize_ns(pub.ack_latency_ns),
        "offered_deliveries_per_s": spec.rate * len(clients),
        "achieved_deliveries_per_s": rec.in_window / span_s,
        "deliveries_total": sum(c.received for c in clients),
        "deliveries_measured": rec.in_window,
        "expected_deliveries": len(pub.acked_seqs) * len(clients),
        "latency_ms": summarize_ns(rec.latencies_ns),
        "publisher_max_lag_ms": pub.max_lag_ns / 1e6,
        "drained": phase.drained,
        "drain_s": phase.drain_s,
        "closed_by_server": sum(1 for c in clients if c.closed),
        "generator_cpu_pct": phase.generator_cpu_pct,
        **account(clients, pub.acked_seqs),
    }


async def run(spec_dict: dict[str, Any], emit: Emit) -> dict[str, Any]:
    spec = FanoutSpec.from_dict(spec_dict)
    rec = Recorder()
    t0 = time.monotonic()
    clients, connect_errors = await connect_members(spec, rec)
    if not clients:
        raise RuntimeError(f"no member connected: {connect_errors[:3]}")
    publisher = await connect(spec.host, spec.port, spec.token, NULL_RECORDER, spec.connect_timeout)
    await publisher.join(spec.room, spec.connect_timeout)
    connect_s = time.monotonic() - t0
    emit("ready")

    pub = Publisher(publisher, spec.room, spec.size)
    phase = await publish(spec, pub, clients, rec, emit)
    result = summarize(spec, clients, pub, rec, phase)
    result.update({"connect_s": round(connect_s, 3), "connect_failed": len(connect_errors),
                   "connect_errors": connect_errors[:5]})
    for c in [*clients, publisher]:
        c.close()
    await asyncio.sleep(0.2)  # let the close frames go out before the process exits
    return result
