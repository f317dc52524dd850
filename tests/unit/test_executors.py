"""Executors: CPU and blocking work runs in pools, never on the event loop (PROTOCOL 6.5)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator

import pytest
import uvloop

from chatserver.config import PoolsConfig
from chatserver.executors import Executors, PoolStats


@pytest.fixture
async def executors() -> AsyncIterator[Executors]:
    pools = Executors(PoolsConfig(threads=4, processes=1))
    await pools.start()
    yield pools
    await pools.close()


def _fail(message: str) -> None:
    raise ValueError(message)


async def test_cpu_work_runs_in_another_process(executors: Executors) -> None:
    """run_cpu runs the function in a worker process, not in the server's process."""
    worker = await executors.run_cpu(os.getpid)
    assert worker != os.getpid()


async def test_worker_processes_are_started_by_start() -> None:
    """start() starts every worker process, so the first message pays no process start-up."""
    pools = Executors(PoolsConfig(threads=1, processes=2))
    await pools.start()
    try:
        process_pool = pools._processes
        assert process_pool is not None
        assert len(process_pool._processes) == 2  # white-box: the pool has no public count
    finally:
        await pools.close()


async def test_render_markdown_returns_sanitised_html(executors: Executors) -> None:
    """render_markdown gives the same HTML as workers.markdown.render, via the process pool."""
    html = await executors.render_markdown("**hi** <script>x</script>")
    assert html == "<p><strong>hi</strong> &lt;script&gt;x&lt;/script&gt;</p>\n"
    assert executors.stats["render_markdown"].done == 1


async def test_short_plain_text_renders_inline(executors: Executors) -> None:
    """A short message with no Markdown-significant character is rendered without a pool trip."""
    assert await executors.render_markdown("see you at ten, ok?") == "<p>see you at ten, ok?</p>\n"
    assert executors.stats["render_markdown_inline"].done == 1
    assert "render_markdown" not in executors.stats


@pytest.mark.parametrize(
    "text",
    ["see *you*", "1. first", "a_b", "[x]", "hi\nthere", "    code", "x" * 201, "a & b", "🎉"],
)
async def test_anything_else_renders_in_the_pool(executors: Executors, text: str) -> None:
    """Markdown syntax, newlines, leading digits or spaces, or length send a render to the pool."""
    await executors.render_markdown(text)
    assert executors.stats["render_markdown"].done == 1
    assert "render_markdown_inline" not in executors.stats


async def test_passwords_hash_and_verify_on_threads(executors: Executors) -> None:
    """hash_password and verify_password round-trip, and a wrong password is just False."""
    password_hash = await executors.hash_password("s3cret")
    assert await executors.verify_password(password_hash, "s3cret") is True
    assert await executors.verify_password(password_hash, "wrong") is False
    assert await executors.verify_password("not a hash", "s3cret") is False


async def test_run_blocking_uses_the_named_thread_pool(executors: Executors) -> None:
    """run_blocking runs on a "chat-pool" thread, not the event loop's thread."""
    name = await executors.run_blocking(lambda: threading.current_thread().name)
    assert name.startswith("chat-pool")


async def test_loop_keeps_running_while_passwords_hash(executors: Executors) -> None:
    """While 20 argon2 hashes run, a ticker on the loop keeps ticking with small gaps."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    hashes = await asyncio.gather(*(executors.hash_password(f"pw{i}") for i in range(20)))
    elapsed = time.perf_counter() - started
    done.set()
    await ticking

    assert len(set(hashes)) == 20
    # On the loop, the 20 hashes would be one gap as long as the whole batch (~2 s on the dev
    # box). Off it, the loop ticks on; only the OS scheduler, busy with the hashing threads and
    # whatever else shares the machine, delays a tick now and then, so judge the typical gap
    # and the longest one against the batch, not against a fixed bound.
    gaps.sort()
    summary = f"{len(gaps)} ticks in {elapsed:.2f}s, median {gaps[len(gaps) // 2]:.3f}s"
    assert gaps[len(gaps) // 2] < 0.05, summary
    assert gaps[-1] < elapsed / 4, f"{summary}, longest {gaps[-1]:.3f}s"


async def test_stats_count_jobs_in_flight_done_and_failed(executors: Executors) -> None:
    """Per-job counters show a job in flight, then done with its time, and failures apart."""
    job = asyncio.create_task(executors.hash_password("pw"))
    await asyncio.sleep(0)
    assert executors.stats["hash_password"] == PoolStats(queued=1)
    await job
    stats = executors.stats["hash_password"]
    assert (stats.queued, stats.done, stats.failed) == (0, 1, 0)
    assert stats.seconds > 0

    with pytest.raises(ValueError, match="boom"):
        await executors.run_blocking(_fail, "boom")
    failed = executors.stats["_fail"]
    assert (failed.queued, failed.done, failed.failed) == (0, 0, 1)

    await executors.run_cpu(os.getpid, job="pid")
    assert executors.stats["pid"].done == 1


async def test_close_is_idempotent_and_final() -> None:
    """close() may be called twice; afterwards every method raises RuntimeError."""
    pools = Executors(PoolsConfig(threads=1, processes=1))
    await pools.start()
    await pools.close()
    await pools.close()
    with pytest.raises(RuntimeError):
        await pools.render_markdown("*x*")
    with pytest.raises(RuntimeError):
        await pools.render_markdown("plain")
    with pytest.raises(RuntimeError):
        await pools.hash_password("pw")


async def test_start_after_close_raises() -> None:
    """Executors are single-use: start() after close() is a RuntimeError."""
    pools = Executors(PoolsConfig(threads=1, processes=0))
    await pools.close()
    with pytest.raises(RuntimeError):
        await pools.start()


async def test_use_before_start_raises() -> None:
    """Using the pools before start() is a RuntimeError, not a silent inline run."""
    pools = Executors(PoolsConfig())
    with pytest.raises(RuntimeError, match="before start"):
        await pools.run_blocking(os.getpid)
    await pools.close()


async def test_close_cancels_queued_jobs_and_waits_for_running_ones() -> None:
    """close() lets the running job finish and cancels those still waiting for a thread."""
    pools = Executors(PoolsConfig(threads=1, processes=0))
    await pools.start()
    running = threading.Event()

    def first() -> None:
        running.set()
        time.sleep(0.3)

    jobs = [asyncio.create_task(pools.run_blocking(first))]
    jobs += [asyncio.create_task(pools.run_blocking(time.sleep, 0.3)) for _ in range(2)]
    while not running.is_set():
        await asyncio.sleep(0.01)
    await pools.close()
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert results[0] is None
    assert all(isinstance(r, asyncio.CancelledError) for r in results[1:])


async def test_no_processes_renders_on_threads() -> None:
    """With [pools] processes = 0, CPU work and Markdown run on the thread pool."""
    pools = Executors(PoolsConfig(threads=2, processes=0))
    await pools.start()
    try:
        assert await pools.run_cpu(os.getpid) == os.getpid()
        assert await pools.render_markdown("**b**") == "<p><strong>b</strong></p>\n"
    finally:
        await pools.close()


async def test_killed_worker_is_replaced_and_the_job_retried(
    executors: Executors, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed worker process is replaced once, with a warning, and rendering goes on."""
    worker = await executors.run_cpu(os.getpid)
    os.kill(worker, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="chatserver.executors"):
        assert await executors.render_markdown("*still*") == "<p><em>still</em></p>\n"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert await executors.run_cpu(os.getpid) not in (worker, os.getpid())


async def test_jobs_in_flight_on_a_killed_worker_all_complete(
    executors: Executors, caplog: pytest.LogCaptureFixture
) -> None:
    """Every job queued on a pool whose worker dies completes on the one replacement pool."""
    worker = await executors.run_cpu(os.getpid)
    slow = asyncio.create_task(executors.run_cpu(time.sleep, 0.2))
    renders = [asyncio.create_task(executors.render_markdown(f"*{i}*")) for i in range(5)]
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="chatserver.executors"):
        os.kill(worker, signal.SIGKILL)
        await slow
        htmls = await asyncio.gather(*renders)
    assert htmls == [f"<p><em>{i}</em></p>\n" for i in range(5)]
    assert len(caplog.records) == 1


def test_works_under_uvloop() -> None:
    """The pools work the same on uvloop, the loop the server runs under."""

    async def scenario() -> tuple[int, str, bool]:
        pools = Executors(PoolsConfig(threads=2, processes=1))
        await pools.start()
        try:
            pid = await pools.run_cpu(os.getpid)
            html = await pools.render_markdown("~~old~~ **new**")
            ok = await pools.verify_password(await pools.hash_password("pw"), "pw")
            return pid, html, ok
        finally:
            await pools.close()

    pid, html, ok = uvloop.run(scenario())
    assert pid != os.getpid()
    assert html == "<p><s>old</s> <strong>new</strong></p>\n"
    assert ok
