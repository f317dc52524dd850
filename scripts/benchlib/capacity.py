"""Scenario `capacity`: the highest publish rate into N members whose deliveries stay on time.

Runs inside the generator process. The members and the publisher connect once; then each step
publishes open-loop at one rate for `step_warmup + step_duration` seconds, drains, and is judged:

    pass = p99 delivery latency <= p99_bound_ms, kept up (delivered >= 95 % of the window's
           deliveries per second), nothing lost (every acked seq reached every member), every
           send answered, no member closed by the server, and drained in time

The next rate comes from `ratesearch.RateSearch` (double until a step fails, then bisect). The
result is the last passing step's *achieved* deliveries/s: sustainable deliveries/s.

A step that did not drain or lost members leaves a backlog in the server that would slow the
next step, so after one every connection is closed and opened again (the server drops what it
queued for a closed socket) before going on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .client import Recorder, Refusals, WsClient
from .fanout import (
    FanoutSpec,
    Members,
    Publisher,
    account,
    close_all,
    connect_members,
    connect_publisher,
    delivery_figures,
    publish,
    received_now,
)
from .ratesearch import RateSearch
from .stats import summarize_ns
from .timing import Emit

# A step must deliver its window's messages at >= 95 % of the rate they were sent: a server
# that falls behind builds a backlog that a longer step would turn into any latency at all,
# even when this step's p99 happened to stay under a loose bound.
KEEP_UP = 0.95
SETTLE_S = 0.5  # between steps: let the last frames and kernel buffers settle
RESET_PAUSE_S = 1.0  # after closing everything, before reconnecting


@dataclass(frozen=True)
class CapacitySpec:
    start_rate: float
    max_rate: float
    refine: int
    step_warmup: float
    step_duration: float
    step_min_messages: int
    p99_bound_ms: float
    max_steps: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CapacitySpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


class Session:
    """The connected members and publisher; `reset()` replaces them with fresh connections."""

    def __init__(self, spec: FanoutSpec) -> None:
        self.spec = spec
        self.rec = Recorder()
        self.members = Members([], [], [])
        self.publisher: WsClient | None = None
        self.resets = 0
        self.refusals = Refusals()  # over every (re)connect of the run

    async def open(self) -> None:
        self.members = await connect_members(self.spec, [self.rec], refusals=self.refusals)
        if not self.members.clients:
            raise RuntimeError(f"no member connected: {self.members.errors[:3]}")
        self.publisher = await connect_publisher(self.spec, self.refusals)

    async def reset(self) -> None:
        await self.close()
        await asyncio.sleep(RESET_PAUSE_S)
        self.resets += 1
        await self.open()

    async def close(self) -> None:
        clients = list(self.members.clients)
        if self.publisher is not None:
            clients.append(self.publisher)
        await close_all(clients)

    def fresh_recorder(self) -> Recorder:
        """A new Recorder for every member: each step's samples are its own."""
        self.rec = Recorder()
        for c in self.members.clients:
            c.rec = self.rec
        return self.rec


async def run_step(index: int, rate: float, session: Session, cap: CapacitySpec,
                   emit: Emit) -> dict[str, Any]:
    spec, clients = session.spec, session.members.clients
    assert session.publisher is not None
    rec = session.fresh_recorder()
    base = received_now(clients)
    dup0 = sum(c.duplicates for c in clients)
    ooo0 = sum(c.out_of_order for c in clients)
    pub = Publisher(session.publisher, spec.room, spec.size, prefix=f"s{index}p")
    # At low rates a few seconds hold a handful of messages, and p99 would be the worst of
    # them: measure long enough for `step_min_messages` messages.
    duration = max(cap.step_duration, cap.step_min_messages / rate)

    def step_emit(event: str) -> None:
        emit(f"s{index}:{event}")

    phase = await publish(rate, cap.step_warmup, duration, spec.drain, pub, clients,
                          [rec], step_emit, base)
    acc = account(clients, pub.acked_seqs, base)
    step = {
        "step": index,
        "rate": rate,
        "members": len(clients),
        "duration_s": round(duration, 2),
        **delivery_figures(rate, duration, len(clients), [rec], phase),
        "sent": len(pub.sent_ns),
        "acked": len(pub.acked_seqs),
        "send_errors": dict(pub.errors),
        "unanswered": len(pub.sent_ns) - pub.answered(),
        "ack_latency_ms": summarize_ns(pub.ack_latency_ns),
        "lost": acc["lost"],
        "duplicates": sum(c.duplicates for c in clients) - dup0,
        "out_of_order": sum(c.out_of_order for c in clients) - ooo0,
        "closed_by_server": sum(1 for c in clients if c.closed),
        "drained": phase.drained,
        "drain_s": phase.drain_s,
        "publisher_max_lag_ms": pub.max_lag_ns / 1e6,
        "generator_cpu_pct": phase.generator_cpu_pct,
    }
    # what the server had to deliver per second for the window's messages (integer message
    # counts: at low rates this differs from rate x members)
    step["expected_deliveries_per_s"] = pub.sent_in_window * len(clients) / duration
    step["failed_because"] = verdict(step, cap.p99_bound_ms)
    step["passed"] = not step["failed_because"]
    return step


def verdict(step: dict[str, Any], bound_ms: float) -> list[str]:
    """Why a step failed; empty when it passed."""
    why = []
    if step["latency_ms"]["p99"] > bound_ms:
        why.append(f"p99 {step['latency_ms']['p99']:.1f} ms > {bound_ms:g} ms")
    if step["lost"]:
        why.append(f"{step['lost']} lost")
    expected = step["expected_deliveries_per_s"]
    if expected and step["achieved_deliveries_per_s"] < KEEP_UP * expected:
        why.append(f"fell behind ({step['achieved_deliveries_per_s']:,.0f} of "
                   f"{expected:,.0f} deliveries/s)")
    if step["send_errors"] or step["unanswered"]:
        why.append(f"sends: errors {step['send_errors']}, unanswered {step['unanswered']}")
    if step["closed_by_server"]:
        why.append(f"{step['closed_by_server']} members closed by the server")
    if not step["drained"]:
        why.append("not drained")
    if not step["deliveries_measured"]:
        why.append("nothing delivered")
    return why


async def search(session: Session, cap: CapacitySpec, emit: Emit,
                 log: Callable[[str], None]) -> tuple[RateSearch, list[dict[str, Any]]]:
    rates = RateSearch(cap.start_rate, cap.max_rate, cap.refine, floor=cap.start_rate / 16)
    steps: list[dict[str, Any]] = []
    while len(steps) < cap.max_steps and (rate := rates.next_rate()) is not None:
        step = await run_step(len(steps), rate, session, cap, emit)
        steps.append(step)
        rates.record(rate, step["passed"])
        log(f"step {step['step']}: {rate:g} msg/s x {step['members']} -> "
            f"{step['achieved_deliveries_per_s']:,.0f} deliveries/s, "
            f"p99 {step['latency_ms']['p99']:.1f} ms: "
            f"{'pass' if step['passed'] else 'FAIL (' + '; '.join(step['failed_because']) + ')'}")
        if not step["drained"] or step["closed_by_server"]:
            await session.reset()
        else:
            await asyncio.sleep(SETTLE_S)
    return rates, steps


def summarize(spec: FanoutSpec, cap: CapacitySpec, session: Session, rates: RateSearch,
              steps: list[dict[str, Any]]) -> dict[str, Any]:
    best = max((s for s in steps if s["passed"]), key=lambda s: s["rate"], default=None)
    return {
        "scenario": "capacity",
        "protocol": spec.protocol,
        "clients": spec.clients,
        "connected": len(session.members.clients),
        "members_per_instance": session.members.instances(),
        "size": spec.size,
        "p99_bound_ms": cap.p99_bound_ms,
        "step_warmup_s": cap.step_warmup,
        "step_duration_s": cap.step_duration,
        "step_min_messages": cap.step_min_messages,
        "drain_bound_s": spec.drain,
        "start_rate": cap.start_rate,
        "refine": cap.refine,
        "steps": steps,
        "sustainable_rate": best["rate"] if best else 0.0,
        "sustainable_deliveries_per_s": best["achieved_deliveries_per_s"] if best else 0.0,
        "sustainable_step": best["step"] if best else None,
        "first_failing_rate": rates.failed,
        "capped": rates.capped,
        "resets": session.resets,
    }


async def run(spec_dict: dict[str, Any], emit: Emit) -> dict[str, Any]:
    spec = FanoutSpec.from_dict(spec_dict)
    cap = CapacitySpec.from_dict(spec_dict)
    session = Session(spec)
    t0 = time.monotonic()
    await session.open()
    connect_s = time.monotonic() - t0
    emit("ready")

    def log(line: str) -> None:
        # stdout is the event channel; the orchestrator prints "log" events as progress
        emit(f"log:{line}")

    rates, steps = await search(session, cap, emit, log)
    result = summarize(spec, cap, session, rates, steps)
    result.update({"connect_s": round(connect_s, 3),
                   "connect_failed": len(session.members.errors),
                   "connect_errors": session.members.errors[:5],
                   "connect_refused": session.refusals.count})
    await session.close()
    return result
