"""Scenario `storm` (issue 4): every client reconnects within a second of a server restart.

1. `clients` members connect, each as its own user (token `targets.member_token`), and join
   the room; a publisher (the bench user) sends `MESSAGES_BEFORE` messages, which every member
   receives: each now has a last seq.
2. The server is restarted the way systemd does it (`restarter.py`: SIGTERM, wait for the
   exit, start the same command: same port, same SQLite file). Members see close 1001.
3. From the moment the server is listening again ("back": the first 200 from /healthz,
   polled every 5 ms), the publisher reconnects and sends `MESSAGES_AFTER` more, and every
   member reconnects at a uniformly random moment within `storm_window` s (a storm: the
   protocol's 0.5-5 s reconnect hint is ignored on purpose) and joins with `after` = its last
   seq. A refused upgrade (503) is retried after its Retry-After, as clients are told to; any
   other failure after a full-jitter backoff; until `storm_give_up` s after "back".
4. A member has resumed when it holds every seq from its last one before the restart up to
   the publisher's last acked one, none twice and in order, and its `joined` has arrived; its
   resume time is the later of the two, measured from "back".

Event-loop lag during the storm comes from the server's own histogram
(`chat_event_loop_lag_seconds`, one sample per 100 ms timer tick): scraped at "back" and when
the storm is over, the bucket deltas give the storm's samples, and the percentile is reported
as the upper bound of the bucket it falls in.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic_ns
from typing import Any

import aiohttp

from . import promtext, restarter
from .client import (
    NULL_RECORDER,
    ServerClosed,
    WsClient,
    connect,
    connect_admitted,
    retry_after,
)
from .fanout import Publisher, close_all
from .stats import summarize_ns
from .targets import member_token
from .timing import Emit, cpu_during

RESUME_TARGET_S = 15.0  # the targets: all back and resumed within 15 s ...
LAG_P99_TARGET_MS = 100.0  # ... with the event loop's lag p99 under 100 ms during the storm
MESSAGES_BEFORE = 10
MESSAGES_AFTER = 10
PUBLISH_RATE = 50.0  # msgs/s, for both batches
ATTEMPT_TIMEOUT_S = 10.0  # one connection attempt: TCP, upgrade, hello; and then the join
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.5, 30.0  # chatserver.client's, for failures without a 503
HEALTH_POLL_S = 0.005
RESTART_TIMEOUT_S = 60.0
SEED = 4  # the storm's reconnect moments are the same from run to run
LAG = "chat_event_loop_lag_seconds"
PRESENCE_HEAD = b'{"op":"presence"'


@dataclass(frozen=True)
class StormSpec:
    host: str
    port: int
    token: str
    room: str
    clients: int
    size: int
    connect_timeout: float
    connect_concurrency: int
    storm_window: float
    storm_give_up: float
    run_dir: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StormSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(eq=False)
class Member:
    """One client across its connections: every seq it received, and how its storm went."""

    index: int
    token: str
    seqs: dict[int, int] = field(default_factory=dict)  # seq -> first receive time
    duplicates: int = 0
    out_of_order: int = 0
    presence: int = 0
    client: StormClient | None = None
    close_at_restart: int | None = None
    resume_from: int = 0  # its last seq before the restart
    target: int | None = None  # the last seq it must hold to have resumed
    joined_ns: int = 0
    resumed_ns: int = 0
    attempts: Counter[str] = field(default_factory=Counter)
    last_outcome: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_seq(self) -> int:
        return max(self.seqs, default=0)

    def received(self, seq: int, now: int) -> None:
        if seq in self.seqs:
            self.duplicates += 1
            return
        if seq < self.last_seq:
            self.out_of_order += 1
        self.seqs[seq] = now
        self.check()

    def check(self) -> None:
        """Mark the member resumed once it holds (resume_from, target] and has joined."""
        if self.resumed_ns or self.target is None or not self.joined_ns:
            return
        need = range(self.resume_from + 1, self.target + 1)
        if self.duplicates or self.out_of_order or any(s not in self.seqs for s in need):
            return
        self.resumed_ns = max([self.joined_ns, *(self.seqs[s] for s in need)])
        self.changed.set()


class StormClient(WsClient):
    """A member's connection: message seqs go to its Member; presence frames are only counted
    (thousands of them arrive in a storm: no JSON parsing)."""

    member: Member | None = None

    def _count(self, seq: int, sent: int, now: int) -> None:
        if self.member is not None:
            self.member.received(seq, now)

    def _on_control_text(self, data: bytes, start: int, end: int, now: int) -> None:
        if data.startswith(PRESENCE_HEAD, start):
            if self.member is not None:
                self.member.presence += 1
            return
        super()._on_control_text(data, start, end, now)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.member is not None:
            self.member.changed.set()


def outcome_of(exc: BaseException) -> str:
    """What one failed attempt is counted as: the HTTP status of a refused upgrade, or the
    kind of failure."""
    if isinstance(exc, ServerClosed) and exc.http_status is not None:
        return str(exc.http_status)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ServerClosed):
        return "closed before upgrade"
    return type(exc).__name__


async def attempt(spec: StormSpec, member: Member, after: int | None) -> float | None:
    """One connect + join. On success the member has its client and None is returned;
    otherwise how long to wait before the next attempt (Retry-After, else backoff)."""
    try:
        client = await connect(spec.host, spec.port, member.token, NULL_RECORDER,
                               ATTEMPT_TIMEOUT_S, StormClient)
    except (OSError, TimeoutError) as exc:
        member.last_outcome = outcome_of(exc)
        member.attempts[member.last_outcome] += 1
        return retry_after(exc) or _backoff(member)
    assert isinstance(client, StormClient)
    client.member = member
    member.attempts["101"] += 1
    try:
        joined = await client.join(spec.room, ATTEMPT_TIMEOUT_S, after)
    except (OSError, TimeoutError, RuntimeError) as exc:
        why = f"closed {client.close_code}" if isinstance(exc, ServerClosed) else \
            str(exc) if isinstance(exc, RuntimeError) else outcome_of(exc)
        member.last_outcome = f"join failed: {why}"
        member.attempts["join failed"] += 1
        client.close()
        return _backoff(member)
    member.client = client
    member.joined_ns = int(joined["_rx_ns"])
    member.last_outcome = "joined"
    member.check()
    return None


def _backoff(member: Member) -> float:
    failures = sum(n for k, n in member.attempts.items() if k != "101")
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, failures - 1)))


async def connect_initial(spec: StormSpec, members: list[Member]) -> None:
    sem = asyncio.Semaphore(spec.connect_concurrency)

    async def one(member: Member) -> None:
        async with sem:
            for _ in range(3):
                wait = await attempt(spec, member, None)
                if wait is None:
                    return
                await asyncio.sleep(min(wait, 1.0))

    await asyncio.gather(*(one(m) for m in members))


async def reconnect(spec: StormSpec, member: Member, at_ns: int, give_up_ns: int) -> None:
    """The member's storm: reconnect at `at_ns`, retry until resumed or `give_up_ns`."""
    await asyncio.sleep(max(0, at_ns - monotonic_ns()) / 1e9)
    while monotonic_ns() < give_up_ns and not member.resumed_ns:
        member.changed.clear()
        wait = await attempt(spec, member, member.last_seq)
        if wait is not None:
            await asyncio.sleep(min(wait, max(0, give_up_ns - monotonic_ns()) / 1e9))
            continue
        client = member.client
        assert client is not None
        while not member.resumed_ns and not client.closed:
            remaining = (give_up_ns - monotonic_ns()) / 1e9
            if remaining <= 0:
                return
            member.changed.clear()
            try:
                await asyncio.wait_for(member.changed.wait(), remaining)
            except TimeoutError:
                return
        if client.closed and not member.resumed_ns:
            member.last_outcome = f"closed {client.close_code} after join"
            member.attempts[member.last_outcome] += 1
            await asyncio.sleep(_backoff(member))


async def publish(client: WsClient, spec: StormSpec, prefix: str, count: int) -> Publisher:
    """`count` messages at PUBLISH_RATE, then wait (bounded) until each is answered."""
    pub = Publisher(client, spec.room, spec.size, prefix=prefix)
    start = monotonic_ns()
    end = start + int((count - 0.5) / PUBLISH_RATE * 1e9)
    await pub.run(PUBLISH_RATE, start, (start, end))
    deadline = monotonic_ns() + int(spec.connect_timeout * 1e9)
    while pub.answered() < len(pub.sent_ns) and monotonic_ns() < deadline:
        await asyncio.sleep(0.01)
    return pub


async def connect_publisher(spec: StormSpec, give_up_ns: int) -> WsClient:
    """The publisher is a client like the others: a refused upgrade is retried."""
    while True:
        try:
            return await connect(spec.host, spec.port, spec.token, NULL_RECORDER,
                                 ATTEMPT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            if monotonic_ns() >= give_up_ns:
                raise
            await asyncio.sleep(retry_after(exc) or 0.5)


async def scrape(session: aiohttp.ClientSession, spec: StormSpec) -> promtext.Samples:
    async with session.get(f"http://{spec.host}:{spec.port}/metrics") as resp:
        return promtext.parse(await resp.text())


async def restart_server(spec: StormSpec, session: aiohttp.ClientSession
                         ) -> tuple[dict[str, Any], int]:
    """Ask the restarter for a restart; returns its event and when /healthz answered again."""
    control = Path(spec.run_dir)
    events = control / restarter.EVENTS
    seen = len(events.read_text().splitlines()) if events.exists() else 0
    os.kill(int((control / restarter.PIDFILE).read_text()), signal.SIGUSR1)
    deadline = monotonic_ns() + int(RESTART_TIMEOUT_S * 1e9)
    while monotonic_ns() < deadline:
        lines = events.read_text().splitlines() if events.exists() else []
        if len(lines) > seen:
            event: dict[str, Any] = json.loads(lines[seen])
            break
        await asyncio.sleep(HEALTH_POLL_S)
    else:
        raise RuntimeError(f"the server did not restart within {RESTART_TIMEOUT_S:g} s")
    url = f"http://{spec.host}:{spec.port}/healthz"
    while monotonic_ns() < deadline:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return event, monotonic_ns()
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(HEALTH_POLL_S)
    raise RuntimeError(f"the restarted server was not healthy within {RESTART_TIMEOUT_S:g} s")


def lag_figures(before: promtext.Samples, after: promtext.Samples) -> dict[str, Any]:
    storm = promtext.delta(promtext.buckets(after, LAG), promtext.buckets(before, LAG))
    shed = ("chat_overload_shed_total", {"what": "connections"})
    return {
        "loop_lag_samples": storm.get(float("inf"), 0.0),
        "loop_lag_p99_bound_ms": _ms(promtext.percentile_bound(storm, 99)),
        "loop_lag_p50_bound_ms": _ms(promtext.percentile_bound(storm, 50)),
        "loop_lag_max_bound_ms": _ms(promtext.highest_bound(storm)),
        "loop_lag_buckets": {("+Inf" if le == float("inf") else f"{le:g}"): n
                             for le, n in storm.items()},
        "overload_level_after": promtext.value(after, "chat_overload_level"),
        "refused_connections_overload": (promtext.value(after, shed[0], **shed[1]) or 0.0)
        - (promtext.value(before, shed[0], **shed[1]) or 0.0),
        "connections_after": promtext.value(after, "chat_connections"),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


async def wait_received(members: list[Member], seqs: list[int], timeout: float) -> bool:
    deadline = monotonic_ns() + int(timeout * 1e9)
    while monotonic_ns() < deadline:
        if all(all(s in m.seqs for s in seqs) for m in members if m.client is not None):
            return True
        await asyncio.sleep(0.05)
    return False


async def run(spec_dict: dict[str, Any], emit: Emit) -> dict[str, Any]:
    spec = StormSpec.from_dict(spec_dict)
    members = [Member(i, member_token(spec.token, i)) for i in range(spec.clients)]
    t0 = time.monotonic()
    await connect_initial(spec, members)
    joined = [m for m in members if m.client is not None]
    if not joined:
        raise RuntimeError(f"no member connected: {[m.last_outcome for m in members[:3]]}")
    initial = sum((m.attempts for m in members), Counter[str]())
    connect_s = time.monotonic() - t0
    first = await connect_admitted(spec.host, spec.port, spec.token, NULL_RECORDER,
                                   spec.connect_timeout)
    pub_before = await publish(first, spec, "a", MESSAGES_BEFORE)
    got_before = await wait_received(joined, pub_before.acked_seqs, spec.connect_timeout)
    emit("ready")

    timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for m in members:
            m.resume_from = m.last_seq
            m.attempts.clear()
            m.last_outcome = "not connected"
        emit("restart")
        event, back = await restart_server(spec, session)
        await asyncio.sleep(0)  # close frames read in the same loop turn are counted
        for m in joined:
            assert m.client is not None
            m.close_at_restart = m.client.close_code if m.client.closed else None
            m.client, m.joined_ns = None, 0
        before = await scrape(session, spec)
        emit("publish_start")
        emit("measure_start")
        give_up = back + int(spec.storm_give_up * 1e9)
        rng = random.Random(SEED)
        at = [back + int(rng.uniform(0, spec.storm_window) * 1e9) for _ in members]

        async def publisher() -> Publisher:
            pub = await publish(await connect_publisher(spec, give_up), spec, "b",
                                MESSAGES_AFTER)
            target = max(pub.acked_seqs, default=max(pub_before.acked_seqs, default=0))
            for m in members:
                m.target = target
                m.check()
            return pub

        pub_task = asyncio.ensure_future(publisher())
        storm = asyncio.gather(*(reconnect(spec, m, at[i], give_up)
                                 for i, m in enumerate(members)))
        cpu = await cpu_during(storm, (back, back))
        pub_after = await pub_task
        ended = monotonic_ns()
        after = await scrape(session, spec)
        emit("send_end")
        emit("drain_end")

    resumed = [(m.resumed_ns - back) / 1e9 for m in members if m.resumed_ns]
    failures = Counter(_failure(m) for m in members if not m.resumed_ns)
    result = {
        "scenario": "storm",
        "clients": spec.clients,
        "connected": len(joined),
        "connect_s": round(connect_s, 3),
        "initial_statuses": dict(initial),
        "storm_window_s": spec.storm_window,
        "storm_give_up_s": spec.storm_give_up,
        "messages_before": len(pub_before.acked_seqs),
        "received_before": got_before,
        "close_codes_at_restart": dict(Counter(str(m.close_at_restart) for m in joined)),
        "server_exit_status_at_restart": event["exit_status"],
        "shutdown_s": (event["exited_ns"] - event["sigterm_ns"]) / 1e9,
        "start_s": (back - event["started_ns"]) / 1e9,
        "down_s": (back - event["sigterm_ns"]) / 1e9,
        "messages_after": len(pub_after.acked_seqs),
        "publisher_errors": dict(pub_after.errors),
        "missed_per_client": (max(m.target or 0 for m in members)
                              - min(m.resume_from for m in joined)),
        "resumed": len(resumed),
        "resume_s": summarize_ns(int(s * 1e9) for s in resumed),
        "last_resumed_s": max(resumed) if resumed else None,
        "resumed_within_target": sum(1 for s in resumed if s <= RESUME_TARGET_S),
        "resume_target_s": RESUME_TARGET_S,
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "statuses": dict(sum((m.attempts for m in members), Counter())),
        "duplicates": sum(m.duplicates for m in members),
        "out_of_order": sum(m.out_of_order for m in members),
        "presence_frames": sum(m.presence for m in members),
        "storm_s": (ended - back) / 1e9,
        **lag_figures(before, after),
        "generator_cpu_pct": cpu,
    }
    await close_all([c for c in [first, *(m.client for m in members)] if c is not None])
    return result


def _failure(m: Member) -> str:
    if m.duplicates:
        return "duplicates"
    if m.out_of_order:
        return "out of order"
    if m.client is not None and not m.client.closed:
        return "joined, messages missing"
    return m.last_outcome or "never tried"
