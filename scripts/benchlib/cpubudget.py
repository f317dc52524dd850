"""More cores than the machine has: each server process gets a CPU budget (a CFS quota).

"Does a second process add capacity?" needs a core for each process and another for the load
generator; every machine here has two. Scaling the cores down instead of the machine up keeps
the question answerable: every server worker (with its pool processes) is confined to its own
cgroup whose quota is `budget` of one CPU, so one process gets `budget` cores and N processes
get N x `budget`, while the generator, PostgreSQL, Redis and the kernel's loopback work use
what is left. With budget 0.4, two workers use at most 0.8 of the machine's 2 cores.

The quota period is short (10 ms) so a worker that used up its budget waits at most a few ms,
not the 100 ms of the default period; that wait is part of its latency, in both runs alike.
Needs root and the cgroup v1 `cpu` controller (as on this machine's kind); the error says so.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

CPU_CONTROLLER = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000


class CpuBudgets:
    """The cgroups of one run: one per server worker, removed by close()."""

    def __init__(self, budget: float, name: str) -> None:
        if not 0.05 <= budget <= 1.0:
            raise ValueError(f"a CPU budget is a fraction of one core (0.05-1), got {budget}")
        self.budget = budget
        self.parent = CPU_CONTROLLER / f"chatbench-{os.getpid()}-{name}"
        try:
            self.parent.mkdir()
        except OSError as exc:
            raise RuntimeError(
                f"--cpu-share budget needs the cgroup v1 cpu controller at {CPU_CONTROLLER} "
                f"writable (run as root): {exc}") from exc
        self.groups: list[Path] = []

    def confine(self, pid: int) -> Path:
        """Put `pid` and all its descendants (pool processes) in a cgroup of their own."""
        group = self.parent / f"worker{len(self.groups)}"
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(round(self.budget * PERIOD_US)))
        self.groups.append(group)
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(ProcessLookupError, OSError):
                # cgroup.procs moves every thread of the process; children forked later inherit
                (group / "cgroup.procs").write_text(str(proc.pid))
        return group

    def throttled_s(self) -> float:
        """Seconds the workers were held back by their quota (cpu.stat throttled_time)."""
        total_ns = 0
        for group in self.groups:
            with contextlib.suppress(OSError):
                for line in (group / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "throttled_time":
                        total_ns += int(value)
        return total_ns / 1e9

    def close(self) -> None:
        """Move any survivor back to the root group and remove the cgroups."""
        for group in self.groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (CPU_CONTROLLER / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()
        with contextlib.suppress(OSError):
            self.parent.rmdir()


def server_workers(root_pid: int, processes: int) -> list[int]:
    """The pids that do a server's work: the server itself, or the supervisor's N workers."""
    if processes == 1:
        return [root_pid]
    return [child.pid for child in psutil.Process(root_pid).children(recursive=False)]
