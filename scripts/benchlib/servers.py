"""Preparing, starting, health-checking and killing the processes a benchmark run owns.

Every child is started in its own session (process group), so stopping it also stops whatever
it forked (pool workers). All live children are registered in one place, and killed from
`finally`, `atexit` and the SIGTERM handler, so no server outlives the harness.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: the child only makes a call
SCRIPTS_DIR = Path(__file__).resolve().parent.parent
_live: set[int] = set()  # pids of process-group leaders we started and have not reaped


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child if the harness dies, even by SIGKILL (Linux prctl).

    Only for children started from the main thread: the kernel fires it when the *thread*
    that forked the child exits. It survives taskset's exec, so it reaches the server itself.
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int | str, argv: list[str]) -> list[str]:
    """`argv` run under `taskset -c cpu` (taskset execs, so the pid is the program's own).

    `cpu` may be a list such as "0,1"."""
    return ["taskset", "-c", str(cpu), *argv]


def child_env() -> dict[str, str]:
    """Environment for children: `benchlib` importable, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCRIPTS_DIR), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


GC_PROBE_DIR = Path(__file__).resolve().parent / "gcprobe"


def gc_probe_env(out_dir: Path) -> dict[str, str]:
    """child_env() plus the `--gc-stats` probe (gcprobe/sitecustomize.py) writing to out_dir."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(GC_PROBE_DIR), env["PYTHONPATH"]])
    env["BENCH_GC_STATS_DIR"] = str(out_dir)
    return env


def read_gc_stats(out_dir: Path) -> dict[str, Any] | None:
    """The probe's files merged: per generation, collections and time summed, max pause.

    Only the server processes count (their argv names --config or --port), not helpers such as
    a Markdown pool's forkserver, which inherit the environment.
    """
    merged = {str(g): {"count": 0, "total_ms": 0.0, "max_ms": 0.0} for g in range(3)}
    found = 0
    for path in out_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(path.read_text())
            if not {"--config", "--port"} & set(doc.get("argv", [])):
                continue
            found += 1
            for g, s in doc["generations"].items():
                m = merged[str(g)]
                m["count"] += s["count"]
                m["total_ms"] += s["total_ms"]
                m["max_ms"] = max(m["max_ms"], s["max_ms"])
    return {"processes": found, "generations": merged} if found else None


def raise_fd_limit() -> None:
    """Children inherit the limit: the server needs one descriptor per benchmark connection."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ManagedProcess:
    """A child in its own process group, with output to a log file, killed on stop()."""

    def __init__(self, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env or child_env(),
            start_new_session=True,
            # safe here: our only other threads are idle executor workers holding no locks
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        register(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to `grace` s, then SIGKILL it. Returns the exit status."""
        _stop(self.proc, grace)
        self._log.close()
        return self.proc.returncode


def register(pid: int) -> None:
    """Remember a child started with start_new_session=True, for the last-resort cleanup."""
    _live.add(pid)


def unregister(pid: int) -> None:
    _live.discard(pid)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group led by `pid` (group id == pid: start_new_session made it so)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    kill_group(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc, signal.SIGKILL)  # stragglers in the group (e.g. pool workers)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _live.discard(proc.pid)


def kill_all_now() -> None:
    """Last resort (atexit, signals): SIGKILL every group we still own."""
    for pid in list(_live):
        kill_group(pid, signal.SIGKILL)
        _live.discard(pid)


def install_cleanup() -> None:
    """Kill children at exit, and turn SIGTERM into KeyboardInterrupt so `finally` blocks run."""
    atexit.register(kill_all_now)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)


async def wait_healthy(server: ManagedProcess, port: int, timeout: float) -> None:
    """Poll GET /healthz until 200; fail fast if the server exits."""
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.proc.returncode} before becoming healthy:\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server not healthy after {timeout} s:\n{server.log_tail()}")


def listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (SO_REUSEPORT workers each have one)."""
    want = f"0100007F:{port:04X}"
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)  # header
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A: TCP_LISTEN
                count += 1
    return count


async def wait_listening(server: ManagedProcess, port: int, sockets: int, timeout: float) -> None:
    """Wait until `sockets` workers listen on `port`.

    /healthz answers as soon as the first worker listens; members that connected before the
    others bound the port would all land on that first one.
    """
    deadline = time.monotonic() + timeout
    while listening_sockets(port) < sockets:
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{listening_sockets(port)} of {sockets} workers listen on port "
                               f"{port}:\n{server.log_tail()}")
        await asyncio.sleep(0.1)


def run_cli(argv: list[str], stdin: bytes = b"", timeout: float = 60.0) -> str:
    """Run an admin command to completion; return stdout, or raise with its stderr."""
    done = subprocess.run(argv, check=False, input=stdin, capture_output=True,
                          timeout=timeout, env=child_env(), start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode()


def python_module(module: str, *args: str) -> list[str]:
    """argv running `module` with this interpreter, i.e. the venv's packages."""
    return [sys.executable, "-m", module, *args]
