"""Thread and process pools: the only place in chatserver that calls `run_in_executor`.

PROTOCOL section 6.5: nothing CPU-heavy runs on the event loop. argon2 runs in C without the GIL,
so it goes to threads; Markdown rendering is pure Python that holds the GIL, so it goes to
processes (or, with `[pools] processes = 0`, to the threads, which frees the loop but not the
GIL). The jobs themselves are the pure functions in `workers/`.

Process-pool jobs must be pure and picklable: if a worker process dies, the pool is rebuilt
and the job runs once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TypeVar, TypeVarTuple

from chatserver.config import PoolsConfig
from chatserver.histogram import JOB_BUCKETS, Buckets
from workers import lifeline, markdown, passwords, thumbnails

__all__ = ["Executors", "PoolStats"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_P = TypeVar("_P", bound=Executor)

# A short message of letters, digits, spaces and sentence punctuation, not starting with a digit
# ("1. x" is a list): nothing in it can start a Markdown construct (with linkify-it-py
# installed a bare domain becomes a link, still cheap), so it renders in small, bounded time.
# It is the same `render` either way, so the HTML does not depend on where it ran.
# Measured on the dev box (2 vCPU, Python 3.11, markdown-it-py 4.3, nh3 0.3.8, uvloop):
#   render() of such text, 1..200 chars:           30-34 us of CPU
#   a pool round trip costs the event-loop thread: 45-58 us of CPU (submit, wake-up, result),
#   and 130-150 us (threads) / 260-310 us (process) of wall-clock latency.
# So for these texts rendering inline costs the loop less than handing the job off, and the
# sender gets the message sooner. Anything else, however short, goes to the pool: some Markdown
# is superlinear (100 KB of "[" takes seconds) and must never run on the loop.
_INLINE_MAX_CHARS = 200
_PLAIN_TEXT = re.compile(r"[^\W\d_](?:[^\W_]|[ ,.?!'])*")

_WARM_UP_HOLD = 0.05  # seconds; a fork from the forkserver takes 1-3 ms (measured)
_WARM_UP_ROUNDS = 3


@dataclass(slots=True)
class PoolStats:
    """Live counters for one kind of job; `chatserver.metrics` exports them."""

    queued: int = 0  # submitted and not finished: waiting for a worker or running
    done: int = 0  # finished with a result
    failed: int = 0  # finished with an exception, or cancelled
    seconds: float = 0.0  # total wall time from submit to finish, queue wait included
    # The same wall time per job, as a histogram.
    job_seconds: Buckets = field(default_factory=lambda: Buckets(JOB_BUCKETS), compare=False,
                                 repr=False)


class Executors:
    """The server's thread pool and process pool, with per-job counters.

    Opened with `start()` and closed with `close()` (from the app's `cleanup_ctx`). Every
    method is a coroutine that returns when the job is done; the event loop keeps serving
    meanwhile.
    """

    def __init__(self, pools: PoolsConfig) -> None:
        self._pools = pools
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None
        self._started = False
        self._closed = False
        self._replace_lock = asyncio.Lock()
        self.stats: dict[str, PoolStats] = {}

    async def start(self) -> None:
        """Create the pools and start every worker process, so no message pays for start-up."""
        if self._started or self._closed:
            raise RuntimeError("Executors.start() called twice or after close()")
        self._started = True
        self._threads = ThreadPoolExecutor(
            max_workers=self._pools.threads, thread_name_prefix="chat-pool",
            initializer=_lower_thread_priority,
        )
        if self._pools.processes > 0:
            self._processes = _new_process_pool(self._pools.processes)
            try:
                # The first submit starts the forkserver and waits for it (~70 ms measured),
                # and each further one forks a worker: do that on a thread, not on the loop.
                await asyncio.get_running_loop().run_in_executor(
                    self._threads, _warm_up, self._processes, self._pools.processes
                )
            except BaseException:
                # cleanup_ctx does not clean up after a failed start-up; we must.
                await self.close()
                raise

    async def close(self) -> None:
        """Cancel jobs not yet started, wait for running ones, stop the pools. Idempotent."""
        if self._closed:
            return
        self._closed = True
        pools: list[Executor] = [p for p in (self._processes, self._threads) if p is not None]
        self._threads = self._processes = None
        await asyncio.gather(*(_shut_down(pool) for pool in pools))

    async def render_markdown(self, text: str) -> str:
        """Message Markdown -> sanitised HTML (`workers.markdown.render`).

        Short plain text renders inline (see `_PLAIN_TEXT` for why that is cheaper); anything
        else goes to the process pool.
        """
        if len(text) <= _INLINE_MAX_CHARS and _PLAIN_TEXT.fullmatch(text):
            self._check_open(self._threads)
            with self._counting("render_markdown_inline"):
                return markdown.render(text)
        return await self.run_cpu(markdown.render, text, job="render_markdown")

    async def render_message(self, text: str) -> tuple[str, list[str], bool]:
        """`render_markdown` plus the text's mentions (`workers.markdown.render_message`):
        found while rendering, off the loop, by the parser that knows what is code. Text the
        inline path takes has no "@", hence no mention."""
        if len(text) <= _INLINE_MAX_CHARS and _PLAIN_TEXT.fullmatch(text):
            return await self.render_markdown(text), [], False
        return await self.run_cpu(markdown.render_message, text, job="render_markdown")

    async def make_thumbnail(self, source: str, target: str) -> thumbnails.Thumbnail:
        """A thumbnail of the image file `source` written to `target`
        (`workers.thumbnails.make_thumbnail`), in the process pool: decoding is GIL-bound C
        and Python, and a hostile image must cost a worker, never the loop."""
        return await self.run_cpu(thumbnails.make_thumbnail, source, target, job="thumbnail")

    async def hash_password(self, password: str) -> str:
        """An argon2id hash of `password` (`workers.passwords.hash_password`), on a thread."""
        return await self.run_blocking(passwords.hash_password, password, job="hash_password")

    async def verify_password(self, password_hash: str, password: str) -> bool:
        """True if `password` matches `password_hash`; False for a mismatch or a bad hash."""
        return await self.run_blocking(
            passwords.verify_password, password_hash, password, job="verify_password"
        )

    async def run_blocking(
        self, fn: Callable[[*_Ts], _T], *args: *_Ts, job: str | None = None
    ) -> _T:
        """Run blocking work (I/O, C code that frees the GIL, exports) on the thread pool.

        `job` names the counters in `stats`; it defaults to the function's name.
        """
        pool = self._check_open(self._threads)
        loop = asyncio.get_running_loop()
        with self._counting(job or _job_name(fn)):
            return await loop.run_in_executor(pool, fn, *args)

    async def run_cpu(self, fn: Callable[[*_Ts], _T], *args: *_Ts, job: str | None = None) -> _T:
        """Run pure, picklable, GIL-bound work in a worker process.

        With `[pools] processes = 0` it runs on the thread pool instead. If the worker process
        dies (BrokenProcessPool), the pool is rebuilt once and `fn` runs again.
        """
        loop = asyncio.get_running_loop()
        name = job or _job_name(fn)
        pool = self._check_open(self._processes or self._threads)
        if not isinstance(pool, ProcessPoolExecutor):
            with self._counting(name):
                return await loop.run_in_executor(pool, fn, *args)
        with self._counting(name):
            try:
                return await loop.run_in_executor(pool, fn, *args)
            except BrokenProcessPool:
                await self._replace_process_pool(pool)
                return await loop.run_in_executor(self._check_open(self._processes), fn, *args)

    async def _replace_process_pool(self, broken: ProcessPoolExecutor) -> None:
        # Every job in flight on the broken pool lands here; the first one replaces it.
        async with self._replace_lock:
            if self._processes is not broken:
                return
            log.warning(
                "a Markdown/CPU worker process died; restarting the process pool "
                "(jobs that were running on it are retried once)"
            )
            _shut_down(broken)  # not awaited: nothing to wait for but its manager thread
            # The forkserver is already running, so the retry's submit forks a worker in
            # ~1-3 ms (measured); not worth a warm-up on this rare path.
            self._processes = _new_process_pool(self._pools.processes)

    def _check_open(self, pool: _P | None) -> _P:
        if not self._started:
            raise RuntimeError("Executors used before start()")
        if self._closed or pool is None:
            raise RuntimeError("Executors used after close()")
        return pool

    def _stats(self, job: str) -> PoolStats:
        stats = self.stats.get(job)
        if stats is None:
            stats = self.stats[job] = PoolStats()
        return stats

    def _counting(self, job: str) -> _Counting:
        return _Counting(self._stats(job))


class _Counting:
    """Context manager that moves a PoolStats through one job's life."""

    __slots__ = ("_started", "_stats")

    def __init__(self, stats: PoolStats) -> None:
        self._stats = stats
        self._started = 0.0

    def __enter__(self) -> None:
        self._stats.queued += 1
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        elapsed = time.perf_counter() - self._started
        self._stats.queued -= 1
        self._stats.seconds += elapsed
        self._stats.job_seconds.observe(elapsed)
        if kind is None:
            self._stats.done += 1
        else:
            self._stats.failed += 1


def _new_process_pool(workers: int) -> ProcessPoolExecutor:
    # A process forked from this one would inherit the running event loop, its selector and
    # threads (the pool's own manager thread included): unsafe. "forkserver" forks workers from
    # a small clean server process instead, which has `workers.markdown` already imported, so a
    # worker starts in milliseconds without the cost of "spawn".
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["workers.markdown", "workers.lifeline"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=lifeline.init_process_worker,
                               initargs=(os.getpid(), RENDER_NICENESS))


# Pool work is throughput work; the event loop is latency work. With both on one busy core,
# equal priority made the loop wait behind four argon2 threads: ping p99 30 ms in
# `scripts/bench --scenario ping` with 20 logins running. Linux nice values are per thread and
# inherited by the threads they start (argon2's lanes). Rendering is on every message's path,
# a login is not: at one nice for both, 20 logins cut 8 KB Markdown sends from 14/s to 2/s.
RENDER_NICENESS = 5
THREAD_POOL_NICENESS = 15


def _lower_thread_priority() -> None:
    """Thread-pool initializer: this thread (and threads it starts) yields to the loop."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_POOL_NICENESS)
    except OSError as exc:  # not permitted in some sandboxes: run at normal priority
        log.debug("could not lower pool thread priority: %s", exc)


def _warm_up(pool: ProcessPoolExecutor, workers: int) -> None:
    # The pool starts a process for a submit only if it counts no idle worker. Jobs that hold
    # their worker for a moment make `workers` submits in a row start `workers` processes; a
    # round can still come up short if this thread stalls longer than the hold (a loaded
    # machine), so check the pids and go again. A worker still missing after that starts on
    # first use, as it would without a warm-up.
    seen: set[int] = set()
    for _ in range(_WARM_UP_ROUNDS):
        futures = [pool.submit(markdown.warm_up, _WARM_UP_HOLD) for _ in range(workers)]
        seen.update(future.result() for future in futures)
        if len(seen) >= workers:
            return
    log.info("process pool warm-up started %d of %d workers", len(seen), workers)


def _job_name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _shut_down(pool: Executor) -> asyncio.Future[None]:
    """Cancel the pool's queued jobs and stop it, waiting for running ones on a thread.

    One `shutdown(wait=True)` call, never a `wait=False` first: that drops the executor's
    reference to its manager thread, so nothing could join it later, and it is the path of
    known ProcessPoolExecutor shutdown races (gh-132969, fixed only after 3.11; we saw an
    "OSError: Bad file descriptor" at interpreter exit with it). The thread is our own: the
    pools are going, and the loop's default executor may be too.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def shut_down() -> None:
        pool.shutdown(wait=True, cancel_futures=True)
        # If the loop closed while we waited, nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_done, finished)

    threading.Thread(target=shut_down, name="chat-pool-shutdown", daemon=True).start()
    return finished


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
