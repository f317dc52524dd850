"""CPU seconds and RSS of the server under test, including every descendant (process pools).

A pool worker may exit before the run ends, and its CPU time would then vanish from a single
end-of-run reading; so the tree is sampled periodically and the last reading of every process
is kept (keyed by pid and start time, so a reused pid is not confused with its predecessor).
Only user+system of each process is summed, never `children_*`, which would count a reaped
worker twice.
"""

from __future__ import annotations

import asyncio

import psutil


class ProcTree:
    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._cpu: dict[tuple[int, float], float] = {}
        self.peak_rss = 0
        self.max_procs = 0

    def _members(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> None:
        """Record CPU of every live process in the tree, and the tree's summed RSS."""
        rss = 0
        procs = self._members()
        for p in procs:
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    rss += p.memory_info().rss
                    self._cpu[(p.pid, p.create_time())] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        self.peak_rss = max(self.peak_rss, rss)
        self.max_procs = max(self.max_procs, len(procs))

    def cpu_seconds(self) -> float:
        """User+system seconds used so far by the tree, including processes that have exited."""
        self.sample()
        return sum(self._cpu.values())

    async def sample_forever(self, interval: float) -> None:
        """Run as a task during the load; cancel it to stop."""
        while True:
            self.sample()
            await asyncio.sleep(interval)
