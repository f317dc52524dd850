"""Scenario `stream` (issue 4): one token stream into a room of readers, some of them slow.

A streamer (its own connection; it does not join the room) starts one stream and sends
`stream_delta` open-loop at `rate` deltas/s for warm-up + measured seconds, then ends it.
Delta i's text is i in hex and a space ("1f "), a token-sized piece whose send time the streamer
keeps: a reader recovers each delta's send time from its text (same process, same clock), so
latency = receive time - send time, sampled for the deltas sent in the measured window, at the
fast readers. A frame holding several joined deltas gives each of them its own latency.

`throttled` readers are spread over the room: each sets a small SO_RCVBUF before it connects
(the TCP window the server sees) and reads at most `throttle_rate` bytes/s (a token bucket that
pauses reading), so the server's queue for it grows and its deltas are coalesced.

Every reader hashes the stream text it receives in order; the text is complete when its digest
equals that of the whole text the streamer sent. A reader has the stream's end when it got the
stored `message` carrying the stream's id (its text is checked against the whole text too).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any

from .client import NULL_RECORDER, Frame, Recorder, WsClient, connect_admitted
from .fanout import FanoutSpec, close_all, connect_members
from .stats import summarize_ns
from .timing import Emit, cpu_during, emit_at, open_loop

DELTA_HEAD = b'{"op":"stream_delta"'  # orjson keeps the server's key order: op first
_TEXT = b'"text":"'  # ... and text last: the frame ends with '"}'
FAST_P99_TARGET_MS = 20.0  # the issue's targets: fast readers' delta latency p99 ...
RSS_TARGET_MB = 300.0  # ... server RSS (and every throttled reader gets the complete text)
THROTTLED_RCVBUF = 4096  # bytes asked for; Linux doubles it for its bookkeeping
THROTTLE_BURST = 4096  # bytes the token bucket holds: about one read at that buffer size


@dataclass(frozen=True)
class StreamSpec:
    host: str
    port: int
    token: str
    room: str
    clients: int
    rate: float  # deltas per second
    duration: float
    warmup: float
    drain: float
    connect_timeout: float
    throttled: int
    throttle_rate: float  # bytes per second

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


class StreamReader(WsClient):
    """A room member reading the stream: counts delta frames, hashes their text in order and,
    when `measure` is set, samples the latency of each delta sent in the Recorder's window."""

    measure = True

    def __init__(self, host: str, port: int, token: str | None, recorder: Recorder) -> None:
        super().__init__(host, port, token, recorder)
        self.sent_ns: list[int] = []  # the streamer's send times, by delta index
        self.delta_frames = 0
        self.deltas = 0
        self.digest = hashlib.sha256()
        self.final: Frame | None = None  # the stored message that ended the stream
        self.final_rx_ns = 0

    def _on_text(self, data: bytes, start: int, end: int, now: int) -> None:
        if data.startswith(DELTA_HEAD, start):  # the hot path: 100,000s of these a second
            t = data.find(_TEXT, start, end) + len(_TEXT)
            self._delta(data[t : end - 2], now)
            return
        super()._on_text(data, start, end, now)

    def _delta(self, text: bytes, now: int) -> None:
        self.delta_frames += 1
        self.digest.update(text)  # hex digits and spaces: the JSON bytes are the text
        if not self.measure:
            self.deltas += text.count(b" ")
            return
        rec, sent_ns = self.rec, self.sent_ns
        if text.count(b" ") == 1:  # one delta per frame: the usual case for a fast reader
            self.deltas += 1
            sent = sent_ns[int(text, 16)]  # int() skips the trailing space
            if rec.start_ns <= sent < rec.end_ns:
                rec.latencies_ns.append(now - sent)
            return
        for token in text.split():  # deltas joined for a reader that fell behind
            self.deltas += 1
            sent = sent_ns[int(token, 16)]
            if rec.start_ns <= sent < rec.end_ns:
                rec.latencies_ns.append(now - sent)

    def _on_control_text(self, data: bytes, start: int, end: int, now: int) -> None:
        if self._is_message(data, start, end):
            frame = json.loads(data[start:end])
            if frame.get("stream"):
                self.final, self.final_rx_ns = frame, now
        super()._on_control_text(data, start, end, now)


class ThrottledReader(StreamReader):
    """A slow reader: at most `rate` bytes/s off the socket, by pausing reading when the token
    bucket is empty (the kernel then holds the rest, and the server sees a full window)."""

    measure = False
    rate = 20_000.0
    burst = float(THROTTLE_BURST)

    def __init__(self, host: str, port: int, token: str | None, recorder: Recorder) -> None:
        super().__init__(host, port, token, recorder)
        self.tokens = self.burst
        self.refilled_ns = monotonic_ns()
        self.bytes_read = 0

    def data_received(self, data: bytes) -> None:
        now = monotonic_ns()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled_ns) * self.rate / 1e9)
        self.refilled_ns = now
        self.tokens -= len(data)
        self.bytes_read += len(data)
        super().data_received(data)
        if self.tokens < 0 and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(-self.tokens / self.rate, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


def throttled(rate: float) -> type[ThrottledReader]:
    """The throttled reader class for `rate` bytes/s (connect() builds clients from a class)."""
    return type("ThrottledReader", (ThrottledReader,), {"rate": rate})


class Streamer:
    """Starts one stream, sends its deltas open-loop, ends it; keeps every delta's send time."""

    def __init__(self, client: WsClient, room: str) -> None:
        self.client, self.room = client, room
        self.stream = ""
        self.sent_ns: list[int] = []
        self.errors: Counter[str] = Counter()  # a delta has no reply unless it failed
        self.max_lag_ns = 0
        client.on_control = self._on_control

    def _on_control(self, frame: Frame) -> None:
        if frame.get("op") == "error" and frame.get("ref") is None:
            self.errors[str(frame.get("code"))] += 1

    async def _request(self, frame: Frame, timeout: float) -> Frame:
        fut = self.client.expect("ack", str(frame["ref"]))
        self.client.send_json(frame)
        reply = await asyncio.wait_for(fut, timeout)
        if reply.get("op") != "ack":
            raise RuntimeError(f"{frame['op']} failed: {reply}")
        return reply

    async def start(self, timeout: float) -> None:
        ack = await self._request({"op": "stream_start", "room": self.room, "ref": "start"},
                                  timeout)
        self.stream = str(ack["stream"])

    def _send_one(self) -> None:
        i = len(self.sent_ns)
        self.sent_ns.append(monotonic_ns())
        self.client.send_json({"op": "stream_delta", "stream": self.stream, "text": f"{i:x} "})

    async def run(self, rate: float, start_ns: int, end_ns: int) -> None:
        self.max_lag_ns = await open_loop(rate, start_ns, end_ns, self._send_one)

    async def end(self, timeout: float) -> Frame:
        return await self._request({"op": "stream_end", "stream": self.stream, "ref": "end"},
                                   timeout)

    def text(self) -> bytes:
        return "".join(f"{i:x} " for i in range(len(self.sent_ns))).encode()


async def wait_ends(readers: Sequence[StreamReader], deadline_ns: int) -> bool:
    """Until every open reader has the stream's stored message, or the deadline."""
    while monotonic_ns() < deadline_ns:
        if all(r.final is not None for r in readers if not r.closed):
            return True
        await asyncio.sleep(0.05)
    return False


def group_figures(readers: Sequence[StreamReader], full: bytes, ended_ns: int
                  ) -> dict[str, Any]:
    """Per kind of reader: frames and deltas received, completeness, ends, closes."""
    digest = hashlib.sha256(full).digest()
    text = full.decode()
    frames = [r.delta_frames for r in readers]
    ends = [r.final_rx_ns - ended_ns for r in readers if r.final is not None]
    return {
        "readers": len(readers),
        "delta_frames_mean": sum(frames) / len(frames) if frames else 0.0,
        "delta_frames_min": min(frames, default=0),
        "delta_frames_max": max(frames, default=0),
        "deltas_min": min((r.deltas for r in readers), default=0),
        "complete_text": sum(1 for r in readers if r.digest.digest() == digest),
        "got_end": sum(1 for r in readers if r.final is not None),
        "end_text_matches": sum(1 for r in readers
                                if r.final is not None and r.final.get("text") == text),
        "end_after_stream_end_s": summarize_ns(ends)["max"] / 1e3 if ends else None,
        "closed": dict(Counter(str(r.close_code) for r in readers if r.closed)),
    }


def spread(clients: int, throttled_count: int) -> set[int]:
    """Member indices of the throttled readers, spread evenly over the room's join order."""
    if throttled_count <= 0:
        return set()
    step = max(1, clients // throttled_count)
    return set(range(0, clients, step)[:throttled_count])


async def run(spec_dict: dict[str, Any], emit: Emit) -> dict[str, Any]:
    spec = StreamSpec.from_dict(spec_dict)
    rec = Recorder()
    slow_ones = spread(spec.clients, spec.throttled)
    slow = throttled(spec.throttle_rate)

    def kind(i: int) -> tuple[type[WsClient], int | None]:
        return (slow, THROTTLED_RCVBUF) if i in slow_ones else (StreamReader, None)

    t0 = time.monotonic()
    members = await connect_members(FanoutSpec.from_dict(spec_dict), [rec], kind)
    readers = [c for c in members.clients if isinstance(c, StreamReader)]
    if not readers:
        raise RuntimeError(f"no reader connected: {members.errors[:3]}")
    streamer = Streamer(await connect_admitted(spec.host, spec.port, spec.token, NULL_RECORDER,
                                               spec.connect_timeout, refusals=members.refusals),
                        spec.room)
    for reader in readers:
        reader.sent_ns = streamer.sent_ns
    connect_s = time.monotonic() - t0
    emit("ready")

    await streamer.start(spec.connect_timeout)
    start = monotonic_ns()
    window = (start + int(spec.warmup * 1e9), start + int((spec.warmup + spec.duration) * 1e9))
    rec.open_window(*window)
    emit("publish_start")
    marker = asyncio.create_task(emit_at(window[0], "measure_start", emit))
    cpu = await cpu_during(streamer.run(spec.rate, start, window[1]), window)
    await marker
    emit("send_end")
    end_ack = await streamer.end(spec.connect_timeout)
    ended = monotonic_ns()
    drained = await wait_ends(readers, ended + int(spec.drain * 1e9))
    drain_s = (monotonic_ns() - ended) / 1e9
    emit("drain_end")

    full = streamer.text()
    fast = [r for r in readers if r.measure]
    slow_readers = [r for r in readers if not r.measure]
    sent = streamer.sent_ns
    result = {
        "scenario": "stream",
        "clients": spec.clients,
        "connected": len(readers),
        "connect_failed": len(members.errors),
        "connect_errors": members.errors[:5],
        "connect_refused": members.refusals.count,
        "connect_s": round(connect_s, 3),
        "throttled": len(slow_readers),
        "throttle_rate_bytes_per_s": spec.throttle_rate,
        "throttled_rcvbuf": THROTTLED_RCVBUF,
        "rate": spec.rate,
        "duration_s": spec.duration,
        "warmup_s": spec.warmup,
        "stream": streamer.stream,
        "deltas_sent": len(sent),
        "deltas_measured": sum(1 for s in sent if window[0] <= s < window[1]),
        "text_bytes": len(full),
        "stream_errors": dict(streamer.errors),
        "end_ack": {k: end_ack.get(k) for k in ("seq", "id", "discarded")},
        "streamer_max_lag_ms": streamer.max_lag_ns / 1e6,
        "fast_latency_ms": summarize_ns(rec.latencies_ns),
        "fast": group_figures(fast, full, ended),
        "slow": group_figures(slow_readers, full, ended),
        "closed_1013": sum(1 for r in readers if r.close_code == 1013),
        "drained": drained,
        "drain_s": round(drain_s, 3),
        "deliveries_total": sum(r.delta_frames for r in readers),  # server CPU per frame
        "throttled_read_bytes_per_s": max(  # from the stream's start to its end, the fastest
            (r.bytes_read / max(1e-9, ((r.final_rx_ns or monotonic_ns()) - start) / 1e9)
             for r in slow_readers if isinstance(r, ThrottledReader)), default=None),
        "generator_cpu_pct": cpu,
    }
    await close_all([*readers, streamer.client])
    return result
