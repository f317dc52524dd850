"""Event-loop stall forensics: when the loop is held past `[log] slow_callback_ms`, one warning
names the coroutine or handler that held it and shows where it was.

How: a timer on the loop stamps a heartbeat every `slow_callback_ms / 5` (at most every 20 ms);
a daemon thread watches the stamp. Once it is older than half the threshold, the thread samples
the loop thread's stack (`sys._current_frames()`) until the loop runs again. The heartbeat that
finally runs measures how late it is (as the lag monitor does); if that reaches the threshold,
the thread logs the stall with what the samples show. Nothing of this needs asyncio's debug
mode, which uvloop does not have.

Only code locations are read from a frame (file, line, function name), never a variable, so a
stall line cannot carry message text or a token. A C call that never releases the GIL keeps the
thread from sampling: such a stall is still measured and logged, without a stack; the time any
garbage collection took meanwhile is reported with it.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import selectors
import sys
import sysconfig
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

BEAT_MAX_INTERVAL = 0.02  # seconds between heartbeats at most (fewer at small thresholds)
STILL_BLOCKED_AFTER = 5.0  # a loop stuck this long is reported at once, and again when it ends
GC_WORTH_NAMING = 0.001  # seconds of garbage collection worth a mention (and a tenth of it)
MAX_DEPTH = 12  # frames shown, innermost first kept
MAX_WALK = 200  # frames read from one sample at most
FIRST_SAMPLES = 4  # samples kept from the start of a stall ...
LAST_SAMPLES = 4  # ... and from its end
OUR_PACKAGES = ("chatserver", "workers")
# The event loop's own frames that run callbacks or wait for events (asyncio's pure-Python
# parts and its selector; uvloop's are all C); what the innermost of them calls is a callback.
LOOP_FUNCTIONS = frozenset({"run", "run_forever", "run_until_complete", "_run_once", "_run",
                            "_process_events", "__step", "__step_run_and_handle_result",
                            "__wakeup"})
_ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


class FrameInfo(NamedTuple):
    """One frame of a sampled stack, reduced to its code location."""

    path: str  # short: chatserver/hub.py, asyncio/events.py, tests/unit/test_x.py
    line: int
    function: str  # qualified: Hub.deliver
    coroutine: bool = False  # a coroutine or async generator
    ours: bool = False  # chatserver's or the application's code, not the stdlib's or a library's
    loop: bool = False  # the event loop's own machinery, which runs callbacks

    def text(self) -> str:
        return f"{self.path}:{self.line} {self.function}"


Stack = tuple[FrameInfo, ...]  # outermost first


class Culprit(NamedTuple):
    """What one stack sample says held the loop."""

    kind: str  # "coroutine", "callback", "function", or "event loop" (its own machinery)
    name: str  # the coroutine or handler: the outermost frame of our code, else the callback
    at: FrameInfo | None  # where it was: the innermost frame of our code, else the innermost
    frames: Stack  # from the callback inwards


def culprit(stack: Stack) -> Culprit:
    """Name what a stack sample was running: the callback is everything the innermost loop
    frame called; of it, our outermost frame is the handler and our innermost is where."""
    start = max((i + 1 for i, frame in enumerate(stack) if frame.loop), default=0)
    frames = stack[start:]
    if not frames:
        return Culprit("event loop", "its own work", stack[-1] if stack else None, stack[-3:])
    ours = [frame for frame in frames if frame.ours]
    named = ours[0] if ours else frames[0]
    if named.coroutine:
        kind = "coroutine"
    elif named is frames[0]:
        kind = "callback"
    else:
        kind = "function"
    return Culprit(kind, named.function, ours[-1] if ours else frames[-1], frames)


def format_stack(frames: Sequence[FrameInfo], depth: int = MAX_DEPTH) -> list[str]:
    """`file:line function` per frame, innermost last, at most `depth` of them (the innermost);
    a first entry says how many outer frames were left out."""
    shown = [frame.text() for frame in frames[-depth:]]
    if len(frames) > depth:
        shown.insert(0, f"... {len(frames) - depth} outer frames")
    return shown


@dataclass(frozen=True)
class StallReport:
    """One stall, ready to log: `message()` for people, `fields()` for a JSON log line."""

    blocked: float  # seconds the loop was held (how late the heartbeat ran)
    culprit: Culprit | None  # None: no sample was taken
    agreeing: int  # samples that name the same culprit
    samples: int
    gc_seconds: float = 0.0  # garbage collection meanwhile
    gc_generation: int = -1  # the oldest generation collected, -1 none
    still_blocked: bool = False  # reported while the loop is still stuck

    def message(self) -> str:
        verb = "still blocked after" if self.still_blocked else "blocked for"
        text = f"event loop {verb} {self.blocked:.3f}s"
        found = self.culprit
        if found is None:
            text += ("; no stack sampled (the watchdog thread could not run: a C call or a "
                     "garbage collection held the GIL)")
        elif found.kind == "event loop":
            text += f" in the event loop's own work ({self._count()})"
        else:
            at = f" at {found.at.text()}" if found.at else ""
            text += f" in {found.kind} {found.name}{at} ({self._count()})"
        if self.gc_seconds > 0:
            text += (f"; garbage collection (generation {self.gc_generation}) took "
                     f"{self.gc_seconds:.3f}s of it")
        return text

    def _count(self) -> str:
        return f"{self.agreeing} of {self.samples} samples"

    def fields(self) -> dict[str, Any]:
        found = self.culprit
        fields: dict[str, Any] = {
            "event": "loop_still_blocked" if self.still_blocked else "loop_blocked",
            "blocked_seconds": round(self.blocked, 6),
            "samples": self.samples,
            "samples_agreeing": self.agreeing,
        }
        if found is not None:
            fields["culprit_kind"] = found.kind
            fields["culprit"] = found.name
            fields["at"] = found.at.text() if found.at else None
            fields["stack"] = format_stack(found.frames)
        if self.gc_seconds > 0:
            fields["gc_seconds"] = round(self.gc_seconds, 6)
            fields["gc_generation"] = self.gc_generation
        return fields


def summarise(blocked: float, samples: Sequence[Stack], *, gc_seconds: float = 0.0,
              gc_generation: int = -1, still_blocked: bool = False) -> StallReport:
    """The report for a stall of `blocked` seconds: the culprit most samples name (samples of
    the loop's own work count only when there is nothing else), shown with its first sample;
    garbage collection is named when it took a tenth of the stall or more."""
    if gc_seconds < max(GC_WORTH_NAMING, blocked / 10):
        gc_seconds, gc_generation = 0.0, -1  # not what held the loop
    culprits = [culprit(stack) for stack in samples]
    candidates = [c for c in culprits if c.kind != "event loop"] or culprits
    if not candidates:
        return StallReport(blocked, None, 0, 0, gc_seconds, gc_generation, still_blocked)
    counts = Counter((c.kind, c.name) for c in candidates)
    (kind, name), agreeing = counts.most_common(1)[0]
    chosen = next(c for c in candidates if (c.kind, c.name) == (kind, name))
    return StallReport(blocked, chosen, agreeing, len(samples), gc_seconds, gc_generation,
                       still_blocked)


def beat_interval(threshold: float) -> float:
    return min(BEAT_MAX_INTERVAL, threshold / 5)


class _Locations:
    """Turns a code object into its short path and classes, cached: file names are compared
    with the standard library's and site-packages' directories once per code object."""

    def __init__(self) -> None:
        paths = sysconfig.get_paths()
        libraries = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._roots = sorted(
            {(os.path.join(os.path.normpath(path), ""), path in libraries)
             for path in (*libraries, package_root)},
            key=lambda root: -len(root[0]))
        self._asyncio = os.path.join(os.path.dirname(os.path.abspath(asyncio.__file__)), "")
        self._selectors = os.path.abspath(selectors.__file__)
        uvloop = sys.modules.get("uvloop")
        uvloop_file = getattr(uvloop, "__file__", None)
        self._uvloop = os.path.join(os.path.dirname(uvloop_file), "") if uvloop_file else None
        self._own = os.path.abspath(__file__)  # the gc callback's frames: left out
        self._cache: dict[CodeType, tuple[str, str, bool, bool, bool]] = {}

    def frame(self, code: CodeType, line: int) -> FrameInfo:
        known = self._cache.get(code)
        if known is None:
            known = self._cache[code] = self._classify(code)
        path, function, coroutine, ours, loop = known
        return FrameInfo(path, line, function, coroutine, ours, loop)

    def _classify(self, code: CodeType) -> tuple[str, str, bool, bool, bool]:
        filename = code.co_filename
        path, ours = filename, not filename.startswith("<")
        for root, library in self._roots:
            if filename.startswith(root):
                path = filename[len(root):]
                ours = not library or path.split(os.sep, 1)[0] in OUR_PACKAGES
                break
        loop = ((filename.startswith(self._asyncio) and code.co_name in LOOP_FUNCTIONS)
                or filename == self._selectors
                or (self._uvloop is not None and filename.startswith(self._uvloop)))
        return path, code.co_qualname, bool(code.co_flags & _ASYNC_FLAGS), ours, loop

    def stack(self, frame: FrameType | None) -> Stack:
        """The code locations of `frame` and its callers, outermost first (no variables)."""
        frames: list[FrameInfo] = []
        while frame is not None and len(frames) < MAX_WALK:
            if frame.f_code.co_filename != self._own:
                frames.append(self.frame(frame.f_code, frame.f_lineno or 0))
            frame = frame.f_back
        frames.reverse()
        return tuple(frames)


class _Stall:
    """What the watchdog thread collected while the loop stayed stuck after one heartbeat."""

    def __init__(self, beat_at: float) -> None:
        self.beat_at = beat_at
        self.first: list[Stack] = []
        self.last: deque[Stack] = deque(maxlen=LAST_SAMPLES)
        self.reported_early = False

    def add(self, stack: Stack) -> None:
        if len(self.first) < FIRST_SAMPLES:
            self.first.append(stack)
        else:
            self.last.append(stack)

    @property
    def samples(self) -> list[Stack]:
        return [*self.first, *self.last]


class StallWatch:
    """The heartbeat on the loop and the watchdog thread that reads it.

    `start()` and `stop()` run on the loop (the app's lifetime); `set_threshold()` applies a
    reloaded `[log] slow_callback_ms` (0 stops the heartbeat and the thread). `stalls`,
    `last_stall_seconds` and `stall_seconds_total` count the stalls logged, for metrics.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold  # seconds; 0: off
        self.stalls = 0
        self.last_stall_seconds = 0.0
        self.stall_seconds_total = 0.0
        self._wanted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._locations: _Locations | None = None
        # Written on the loop, read by the thread (single assignments and deque appends).
        self._beat_at = 0.0
        self._due = 0.0
        self._late: deque[tuple[float, float, float, int]] = deque()
        self._gc_started = 0.0
        self._gc_seconds = 0.0
        self._gc_generation = -1

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start watching the running loop (a no-op while the threshold is 0)."""
        self._wanted = True
        if self.threshold <= 0 or self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._locations = self._locations or _Locations()
        now = time.monotonic()
        self._beat_at, self._due = now, now + beat_interval(self.threshold)
        self._late.clear()
        self._handle = self._loop.call_later(beat_interval(self.threshold), self._beat)
        gc.callbacks.append(self._on_gc)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(self._stop, threading.get_ident(), self._locations),
            name="chatserver-stallwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._wanted = False
        self._halt()

    def set_threshold(self, threshold: float) -> None:
        """Apply a reloaded threshold: 0 stops watching, a positive one (re)starts it."""
        self.threshold = threshold
        if threshold <= 0:
            self._halt()
        elif self._wanted and self._thread is None:
            self.start()

    def _halt(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=1.0)

    # On the loop.

    def _beat(self) -> None:
        now = time.monotonic()
        late = now - self._due
        threshold = self.threshold
        if threshold > 0 and late >= threshold:
            # Appended before the stamp moves: a thread that sees the new stamp finds this too.
            self._late.append((self._beat_at, late, self._gc_seconds, self._gc_generation))
        self._gc_seconds, self._gc_generation = 0.0, -1
        self._beat_at = now
        interval = beat_interval(threshold) if threshold > 0 else BEAT_MAX_INTERVAL
        self._due = now + interval
        assert self._loop is not None
        self._handle = self._loop.call_later(interval, self._beat)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Runs in whichever thread collects; a collection stops every thread alike.
        if phase == "start":
            self._gc_started = time.monotonic()
        else:
            self._gc_seconds += time.monotonic() - self._gc_started
            self._gc_generation = max(self._gc_generation, info.get("generation", 0))

    # On the watchdog thread.

    def _watch(self, stop: threading.Event, loop_thread: int, locations: _Locations) -> None:
        try:
            self._watch_until(stop, loop_thread, locations)
        except Exception:  # a watchdog must not take anything down with it
            log.exception("the stall watch failed; loop stalls are no longer logged")

    def _watch_until(self, stop: threading.Event, loop_thread: int, locations: _Locations
                     ) -> None:
        stall: _Stall | None = None
        ended: dict[float, _Stall] = {}
        wait = 0.0
        while not stop.wait(wait):
            threshold = self.threshold
            if threshold <= 0:
                return
            beat_at = self._beat_at  # read before the late beats: see `_beat`
            now = time.monotonic()
            if stall is not None and beat_at != stall.beat_at:
                ended[stall.beat_at], stall = stall, None
            if stall is None and now - beat_at >= threshold / 2:
                stall = _Stall(beat_at)
            if stall is not None:
                stack = locations.stack(sys._current_frames().get(loop_thread))
                if stack:
                    stall.add(stack)
                stuck = now - stall.beat_at - beat_interval(threshold)
                if not stall.reported_early and stuck >= max(STILL_BLOCKED_AFTER, threshold):
                    stall.reported_early = True
                    self._log(summarise(stuck, stall.samples, still_blocked=True))
            while self._late:
                previous, late, gc_seconds, gc_generation = self._late.popleft()
                if stall is not None and stall.beat_at == previous:
                    ended[previous], stall = stall, None
                done = ended.pop(previous, None)
                report = summarise(late, done.samples if done else (), gc_seconds=gc_seconds,
                                   gc_generation=gc_generation)
                self.stalls += 1
                self.last_stall_seconds = late
                self.stall_seconds_total += late
                self._log(report)
            ended.clear()  # stalls that ended without a late heartbeat were shorter
            if stall is not None:
                wait = max(0.005, threshold / 4)
            else:
                wait = max(0.005, beat_at + threshold / 2 - time.monotonic())

    def _log(self, report: StallReport) -> None:
        log.warning("%s", report.message(), extra=report.fields())
