"""Scenario `ping`: does the event loop stay free while the server does heavy work?

Heavy work: 4 clients send 8 KB Markdown messages back-to-back (each waits for its ack) and
20 concurrent loops POST /api/login (argon2). Meanwhile a separate connection sends an
application `ping` every 20 ms and times the `pong`. A server that renders or hashes on its
loop shows it here as ping RTT in the tens or hundreds of milliseconds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any

import aiohttp

from . import markdown_gen
from .client import NULL_RECORDER, Frame, WsClient, connect_admitted
from .stats import summarize_ns
from .timing import Emit, cpu_during, emit_at

PING_INTERVAL_S = 0.020


@dataclass(frozen=True)
class PingSpec:
    host: str
    port: int
    token: str
    room: str
    duration: float
    warmup: float
    drain: float
    connect_timeout: float
    md_senders: int
    md_size: int
    login_concurrency: int
    login_user: str
    login_password: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PingSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


class Pinger:
    """Open-loop pings on a fixed 20 ms schedule; a late pong never delays the next ping."""

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.sent: dict[str, int] = {}
        self.rtt_ns: list[int] = []
        self.in_window: set[str] = set()
        client.on_control = self._on_control

    def _on_control(self, frame: Frame) -> None:
        ref = frame.get("ref")
        if frame.get("op") == "pong" and ref in self.in_window:
            self.rtt_ns.append(frame["_rx_ns"] - self.sent[str(ref)])

    async def run(self, start_ns: int, window: tuple[int, int]) -> None:
        interval = int(PING_INTERVAL_S * 1e9)
        n = 0
        while (now := monotonic_ns()) < window[1]:
            due = start_ns + n * interval
            if now < due:
                await asyncio.sleep((due - now) / 1e9)
                continue
            ref = f"ping{n}"
            self.sent[ref] = now
            if now >= window[0]:
                self.in_window.add(ref)
            self.client.send_json({"op": "ping", "ref": ref})
            n += 1


async def md_sender(client: WsClient, docs: list[str], room: str, window: tuple[int, int],
                    counts: Counter[str], timeout: float) -> None:
    """Send Markdown back-to-back, one in flight: the next goes when the ack arrives."""
    n = 0
    while monotonic_ns() < window[1]:
        ref = f"md{id(client)}-{n}"
        fut = client.expect("ack", ref)
        client.send_json({"op": "send", "room": room, "text": docs[n % len(docs)], "ref": ref})
        n += 1
        # bounded: a server that never acks must not hold the run past the window + drain
        remaining = (window[1] - monotonic_ns()) / 1e9 + timeout
        try:
            frame = await asyncio.wait_for(fut, max(0.1, remaining))
        except TimeoutError:
            counts["timeout"] += 1
            return
        in_window = window[0] <= frame["_rx_ns"] < window[1]
        if frame.get("op") == "ack":
            counts["acked" if in_window else "acked_outside_window"] += 1
        else:
            counts[f"error:{frame.get('code')}"] += 1
            await asyncio.sleep(min(1.0, float(frame.get("retry_after", 0.1))))


async def login_loop(session: aiohttp.ClientSession, url: str, body: dict[str, str],
                     window: tuple[int, int], statuses: Counter[str], latency: list[int]) -> None:
    """POST /api/login until the window closes; a 429 is honoured (capped at 1 s), as clients do."""
    while (t0 := monotonic_ns()) < window[1]:
        try:
            async with session.post(url, json=body) as resp:
                await resp.read()
                status, retry = resp.status, resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            statuses[type(exc).__name__] += 1
            continue
        t1 = monotonic_ns()
        if window[0] <= t1 < window[1]:
            statuses[str(status)] += 1
            if status == 200:
                latency.append(t1 - t0)
        if status == 429:
            await asyncio.sleep(min(1.0, float(retry or 0.5)))


async def run(spec_dict: dict[str, Any], emit: Emit) -> dict[str, Any]:
    spec = PingSpec.from_dict(spec_dict)
    docs = markdown_gen.documents(32, spec.md_size)
    pinger = Pinger(await connect_admitted(spec.host, spec.port, spec.token, NULL_RECORDER,
                                           spec.connect_timeout))
    senders = [await connect_admitted(spec.host, spec.port, spec.token, NULL_RECORDER,
                                      spec.connect_timeout)
               for _ in range(spec.md_senders)]
    for s in senders:
        await s.join(spec.room, spec.connect_timeout)
    emit("ready")

    start = monotonic_ns()
    window = (start + int(spec.warmup * 1e9), start + int((spec.warmup + spec.duration) * 1e9))
    md_counts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    login_ns: list[int] = []
    url = f"http://{spec.host}:{spec.port}/api/login"
    body = {"username": spec.login_user, "password": spec.login_password}
    emit("publish_start")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=spec.drain)) as session:
        load = [md_sender(s, docs, spec.room, window, md_counts, spec.drain) for s in senders]
        load += [login_loop(session, url, body, window, statuses, login_ns)
                 for _ in range(spec.login_concurrency)]
        marker = asyncio.create_task(emit_at(window[0], "measure_start", emit))
        cpu = await cpu_during(asyncio.gather(pinger.run(start, window), *load), window)
        await marker
    emit("send_end")
    await _wait_pongs(pinger, monotonic_ns() + int(spec.drain * 1e9))
    emit("drain_end")

    result = {
        "scenario": "ping",
        "duration_s": spec.duration,
        "warmup_s": spec.warmup,
        "ping_rtt_ms": summarize_ns(pinger.rtt_ns),
        "pings_sent": len(pinger.in_window),
        "pings_unanswered": len(pinger.in_window) - len(pinger.rtt_ns),
        "md_messages_per_s": md_counts["acked"] / spec.duration,
        "md_counts": dict(md_counts),
        "md_size": spec.md_size,
        "logins_per_s": statuses["200"] / spec.duration,
        "login_statuses": dict(statuses),
        "login_latency_ms": summarize_ns(login_ns),
        "generator_cpu_pct": cpu,
    }
    for c in [pinger.client, *senders]:
        c.close()
    await asyncio.sleep(0.2)
    return result


async def _wait_pongs(pinger: Pinger, deadline_ns: int) -> None:
    while len(pinger.rtt_ns) < len(pinger.in_window) and monotonic_ns() < deadline_ns:
        await asyncio.sleep(0.02)
