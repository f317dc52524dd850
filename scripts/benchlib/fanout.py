"""Scenario `fanout`: N members of one room, one publisher at R msg/s, delivery latency per frame.

Runs inside the generator process. The publisher is open-loop (it sends on a fixed schedule and
never waits for acks), so a slow server shows up as latency and loss rather than as a publisher
that politely slows down (coordinated omission).

The pieces here (connecting members, the publisher, draining, exact accounting) are shared by
the `crossinstance` and `capacity` scenarios. Members may be spread over several server
ports (instances); member i connects to `member_ports[i % len(member_ports)]` (default: all
the ports) and records its latencies in that port's Recorder, and the publisher always uses
`ports[0]`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic_ns
from typing import Any

from .client import MARK, NULL_RECORDER, Frame, Recorder, Refusals, WsClient, connect_admitted
from .sioclient import SioClient
from .stats import summarize_ns
from .timing import Emit, cpu_during, emit_at, open_loop

_PAD = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 1024)

# Which client speaks to which kind of server.
DIALECTS: dict[str, type[WsClient]] = {"chatserver": WsClient, "socketio": SioClient}


@dataclass(frozen=True)
class FanoutSpec:
    host: str
    ports: tuple[int, ...]
    token: str
    protocol: str  # a DIALECTS key
    room: str
    clients: int
    rate: float
    duration: float
    warmup: float
    size: int
    drain: float
    connect_timeout: float
    connect_concurrency: int
    member_ports: tuple[int, ...] = ()  # where members connect; () = all of `ports`

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FanoutSpec:
        values = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        values["ports"] = tuple(d["ports"])
        values["member_ports"] = tuple(d.get("member_ports") or d["ports"])
        values.setdefault("protocol", "chatserver")
        return cls(**values)

    @property
    def dialect(self) -> type[WsClient]:
        return DIALECTS[self.protocol]


class Publisher:
    """Sends `send` frames on schedule; records acks (the seqs every member must receive).

    `prefix` starts every ref, so acks of an earlier publisher on the same connection (the
    capacity scenario's previous step) are told apart from this one's.
    """

    def __init__(self, client: WsClient, room: str, size: int, prefix: str = "p") -> None:
        self.client, self.room, self.size, self.prefix = client, room, size, prefix
        self.sent_ns: list[int] = []
        self.sent_in_window = 0
        self.acked_seqs: list[int] = []
        self.ack_latency_ns: list[int] = []
        self.errors: Counter[str] = Counter()
        self.max_lag_ns = 0
        client.on_control = self._on_control

    def _on_control(self, frame: Frame) -> None:
        op, ref = frame.get("op"), str(frame.get("ref", ""))
        if not ref.startswith(self.prefix) or not ref[len(self.prefix):].isdigit():
            return
        if op == "ack":
            self.acked_seqs.append(int(frame["seq"]))
            self.ack_latency_ns.append(frame["_rx_ns"] - self.sent_ns[int(ref[len(self.prefix):])])
        elif op == "error":
            self.errors[str(frame.get("code"))] += 1

    def answered(self) -> int:
        return len(self.acked_seqs) + sum(self.errors.values())

    def _send_one(self, window: tuple[int, int]) -> None:
        n = len(self.sent_ns)
        now = monotonic_ns()
        prefix = f"{MARK.decode()}{now}. "
        text = prefix + _PAD[: max(0, self.size - len(prefix))]
        self.sent_ns.append(now)
        if window[0] <= now < window[1]:
            self.sent_in_window += 1
        self.client.send_json({"op": "send", "room": self.room, "text": text,
                               "ref": f"{self.prefix}{n}"})

    async def run(self, rate: float, start_ns: int, window: tuple[int, int]) -> None:
        """Send at `rate`/s from `start_ns` until the window closes; catch up if late."""
        lag = await open_loop(rate, start_ns, window[1], lambda: self._send_one(window))
        self.max_lag_ns = max(self.max_lag_ns, lag)


@dataclass
class Members:
    """The room's members, in connection order, each with its group (the port it used)."""

    clients: list[WsClient]
    groups: list[int]
    errors: list[str]
    refusals: Refusals = field(default_factory=Refusals)  # 503s connected through later

    def of_group(self, group: int) -> list[WsClient]:
        return [c for c, g in zip(self.clients, self.groups, strict=True) if g == group]

    def instances(self) -> dict[str, int]:
        """Members per server instance (process), as each connection's server reported it."""
        return dict(Counter(c.instance or "?" for c in self.clients))


# Member index -> the client class it reads with and its SO_RCVBUF (None: the default).
MemberKind = Callable[[int], tuple[type[WsClient], int | None]]


async def _connect_member(spec: FanoutSpec, port: int, rec: Recorder, sem: asyncio.Semaphore,
                          refusals: Refusals, cls: type[WsClient], rcvbuf: int | None
                          ) -> WsClient:
    # A bounded number of handshakes in flight keeps the server's accept backlog from
    # overflowing, which would turn into 1 s SYN retransmits and a misleading connect time.
    async with sem:
        client = await connect_admitted(spec.host, port, spec.token, rec,
                                        spec.connect_timeout, cls, rcvbuf, refusals)
        try:
            await client.join(spec.room, spec.connect_timeout)
        except BaseException:
            client.close()
            raise
        return client


async def connect_members(spec: FanoutSpec, recs: Sequence[Recorder],
                          kind: MemberKind | None = None,
                          refusals: Refusals | None = None) -> Members:
    """Connect and join all members; member i uses port and Recorder i modulo their count,
    and the client class `kind(i)` names (default: the spec's dialect). `refusals` counts
    the 503s connected through (default: a new count)."""
    sem = asyncio.Semaphore(spec.connect_concurrency)
    ports = spec.member_ports or spec.ports
    n = len(ports)
    kinds = [kind(i) if kind else (spec.dialect, None) for i in range(spec.clients)]
    refusals = refusals if refusals is not None else Refusals()
    results = await asyncio.gather(
        *(_connect_member(spec, ports[i % n], recs[i % n], sem, refusals, *kinds[i])
          for i in range(spec.clients)),
        return_exceptions=True,
    )
    members = Members([], [], [], refusals)
    for i, r in enumerate(results):
        if isinstance(r, WsClient):
            members.clients.append(r)
            members.groups.append(i % n)
        else:
            members.errors.append(repr(r))
    return members


async def connect_publisher(spec: FanoutSpec, refusals: Refusals | None = None) -> WsClient:
    publisher = await connect_admitted(spec.host, spec.ports[0], spec.token, NULL_RECORDER,
                                       spec.connect_timeout, spec.dialect, refusals=refusals)
    await publisher.join(spec.room, spec.connect_timeout)
    return publisher


def received_now(clients: Sequence[WsClient]) -> list[int]:
    """Each member's received count: the baseline of a later step's accounting."""
    return [c.received for c in clients]


async def drain(clients: Sequence[WsClient], pub: Publisher, deadline_ns: int,
                base: Sequence[int] | None = None) -> bool:
    """Wait until every send is answered and every member has every acked seq, or the deadline.

    `base`: each member's received count before this publisher started (default: zero).
    """
    base = base if base is not None else [0] * len(clients)
    while monotonic_ns() < deadline_ns:
        if pub.answered() >= len(pub.sent_ns):
            want = len(pub.acked_seqs)
            if all(c.received - b >= want for c, b in zip(clients, base, strict=True)
                   if not c.closed):
                return True
        await asyncio.sleep(0.05)
    return False


def account(clients: Sequence[WsClient], acked: list[int],
            base: Sequence[int] | None = None) -> dict[str, int]:
    """Exact per-client delivery accounting against the publisher's acked seqs.

    Duplicates and reordering are counted over each connection's whole life.
    """
    base = base if base is not None else [0] * len(clients)
    lost = dup = ooo = extra = 0
    for c, b in zip(clients, base, strict=True):
        bm, seq_base = c.bitmap, c.seq_base
        got = sum(1 for s in acked if 0 < s - seq_base < len(bm) and bm[s - seq_base])
        lost += len(acked) - got
        extra += c.received - b - got  # arrived without an ack (ack lost or still in flight)
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


async def publish(rate: float, warmup: float, duration: float, drain_s: float, pub: Publisher,
                  clients: Sequence[WsClient], recs: Sequence[Recorder], emit: Emit,
                  base: Sequence[int] | None = None) -> Publishing:
    """Warm-up, measured window, then drain; phase events go to the orchestrator."""
    start = monotonic_ns()
    window = (start + int(warmup * 1e9), start + int((warmup + duration) * 1e9))
    for rec in recs:
        rec.open_window(*window)
    emit("publish_start")
    marker = asyncio.create_task(emit_at(window[0], "measure_start", emit))
    cpu = await cpu_during(pub.run(rate, start, window), window)
    await marker
    emit("send_end")
    drained = await drain(clients, pub, monotonic_ns() + int(drain_s * 1e9), base)
    waited = (monotonic_ns() - window[1]) / 1e9
    emit("drain_end")
    return Publishing(window, cpu, drained, round(waited, 3))


def delivery_figures(rate: float, duration: float, members: int, recs: Sequence[Recorder],
                     phase: Publishing) -> dict[str, Any]:
    """Throughput and latency over the measured window, all Recorders together."""
    in_window = sum(r.in_window for r in recs)
    last_rx = max(r.last_rx_ns for r in recs)
    # Throughput over the window, stretched if deliveries of window messages ran past it:
    # a server that lags does not get credit for the drain time.
    span_s = max(duration, (last_rx - phase.window[0]) / 1e9)
    latencies = [x for r in recs for x in r.latencies_ns]
    return {
        "offered_deliveries_per_s": rate * members,
        "achieved_deliveries_per_s": in_window / span_s,
        "deliveries_measured": in_window,
        "latency_ms": summarize_ns(latencies),
    }


def summarize(spec: FanoutSpec, members: Members, pub: Publisher, recs: Sequence[Recorder],
              phase: Publishing) -> dict[str, Any]:
    clients = members.clients
    return {
        "scenario": "fanout",
        "protocol": spec.protocol,
        "clients": spec.clients,
        "connected": len(clients),
        "members_per_instance": members.instances(),
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
        **delivery_figures(spec.rate, spec.duration, len(clients), recs, phase),
        "deliveries_total": sum(c.received for c in clients),
        "expected_deliveries": len(pub.acked_seqs) * len(clients),
        "publisher_max_lag_ms": pub.max_lag_ns / 1e6,
        "drained": phase.drained,
        "drain_s": phase.drain_s,
        "closed_by_server": sum(1 for c in clients if c.closed),
        "generator_cpu_pct": phase.generator_cpu_pct,
        **account(clients, pub.acked_seqs),
    }


async def close_all(clients: Sequence[WsClient]) -> None:
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)  # let the close frames go out before the process exits


async def run(spec_dict: dict[str, Any], emit: Emit) -> dict[str, Any]:
    spec = FanoutSpec.from_dict(spec_dict)
    # with several instances, per-message first/last copy times show where the time goes
    recs = [Recorder(per_message=len(spec.ports) > 1) for _ in spec.member_ports or spec.ports]
    t0 = time.monotonic()
    members = await connect_members(spec, recs)
    if not members.clients:
        raise RuntimeError(f"no member connected: {members.errors[:3]}")
    publisher = await connect_publisher(spec, members.refusals)
    connect_s = time.monotonic() - t0
    emit("ready")

    pub = Publisher(publisher, spec.room, spec.size)
    phase = await publish(spec.rate, spec.warmup, spec.duration, spec.drain, pub,
                          members.clients, recs, emit)
    result = summarize(spec, members, pub, recs, phase)
    result.update({"connect_s": round(connect_s, 3), "connect_failed": len(members.errors),
                   "connect_errors": members.errors[:5],
                   "connect_refused": members.refusals.count})
    if len(spec.ports) > 1:  # several instances: figures per instance the members are on
        result["groups"] = group_figures(members, recs)
    await close_all([*members.clients, publisher])
    return result


def group_figures(members: Members, recs: Sequence[Recorder]) -> list[dict[str, Any]]:
    """Per port (instance) group: members and latency of the deliveries measured there.

    Per message, `first_copy_ms`/`last_copy_ms` are the latencies of the group's first and
    last copy, and (for groups after the first) `gap_to_first_group_ms` is this group's first
    copy minus group 0's last copy: positive when this instance started delivering only after
    the publisher's instance had finished its own members.
    """
    out = []
    first = recs[0].copies or {}
    for g, rec in enumerate(recs):
        copies = rec.copies or {}
        fig: dict[str, Any] = {
            "members": len(members.of_group(g)), "deliveries_measured": rec.in_window,
            "latency_ms": summarize_ns(rec.latencies_ns),
            "first_copy_ms": summarize_ns(span[0] - sent for sent, span in copies.items()),
            "last_copy_ms": summarize_ns(span[1] - sent for sent, span in copies.items()),
        }
        if g:
            fig["gap_to_first_group_ms"] = summarize_ns(
                span[0] - first[sent][1] for sent, span in copies.items() if sent in first)
        out.append(fig)
    return out
