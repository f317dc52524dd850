"""`--backend postgres-redis`: a throwaway PostgreSQL and Redis for the whole invocation.

The servers come from the test suite's helpers (`tests/services/postgres.py`, `redis.py`),
imported by path so that `scripts/bench` needs no package layout around `tests`. They run
Debian's binaries on free ports in temp dirs; the machine's own PostgreSQL (5432) and Redis
(6379) are never touched.

Both are started from a thread whose CPU affinity is set to the chosen CPU: children inherit
the mask of the thread that forks them, so the postmaster, every backend it forks later, and
redis-server all stay there without chasing pids. Each run gets its own database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = ROOT / "tests" / "services"


def _load(name: str) -> ModuleType:
    path = SERVICES_DIR / f"{name}.py"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: --backend postgres-redis needs the test "
                           "suite's service helpers")
    spec = importlib.util.spec_from_file_location(f"bench_services_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _affinity(cpus: set[int]) -> Iterator[None]:
    """Run the block with this thread pinned to `cpus`; what it forks inherits the mask."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Backends:
    """The running PostgreSQL and Redis, and where they run."""

    postgres: Any  # tests.services.postgres.PostgresServer
    redis: Any  # tests.services.redis.RedisServer
    cpu: int
    _databases: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def redis_url(self) -> str:
        return str(self.redis.url)

    def new_database(self, label: str) -> str:
        """A fresh, empty database for one run; returns its DSN."""
        safe = "".join(ch if ch.isalnum() else "_" for ch in label.lower())
        return str(self.postgres.create_database(f"bench_{safe}_{next(self._databases)}"))

    def pids(self) -> list[int]:
        """Root pids of the services' process trees (postmaster, redis-server)."""
        pids = []
        with contextlib.suppress(OSError, ValueError):
            pids.append(int((Path(self.postgres.data_dir) / "postmaster.pid")
                            .read_text().split("\n", 1)[0]))
        pids += [p.pid for p in psutil.Process().children(recursive=True)
                 if _is_redis(p, int(self.redis.port))]
        return pids

    def placement(self) -> str:
        """Where they actually run, read back from the kernel, for the header."""
        parts = []
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                cpus = ",".join(str(c) for c in proc.cpu_affinity() or [])
                parts.append(f"{proc.name()} (pid {pid}) on CPU {cpus}")
        return "; ".join(parts) or "unknown"

    def close(self) -> None:
        for server in (self.redis, self.postgres):
            with contextlib.suppress(Exception):  # best effort: the other must still close
                server.close()


def _is_redis(proc: psutil.Process, port: int) -> bool:
    try:
        return "redis-server" in proc.name() and str(port) in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def start(cpu: int) -> Backends:
    """Start PostgreSQL and Redis pinned to `cpu`; raise with their log if one fails."""
    pg_module, redis_module = _load("postgres"), _load("redis")
    postgres = pg_module.PostgresServer()
    redis = redis_module.RedisServer()
    try:
        with _affinity({cpu}):
            postgres.start()
            redis.start()
    except BaseException:
        redis.close()
        postgres.close()
        raise
    return Backends(postgres, redis, cpu)
