"""`python -m benchlib.restarter --control DIR -- SERVER ARGV...`: a server that can be restarted.

The storm scenario restarts chatserver mid-run the way systemd's `restart` does: SIGTERM, wait
for the process to exit, start the same command again (same port, same SQLite file). The
orchestrator starts this wrapper in the server's place, so the restarted server is still in the
run's process group (stopped with it), still pinned to CPU 0 (the affinity is inherited) and
still counted in the run's CPU and RSS figures (the process tree is sampled by pid).

Control: the wrapper writes its pid to DIR/restarter.pid; SIGUSR1 asks for one restart. Each
restart appends a JSON line to DIR/restarter.events with CLOCK_MONOTONIC times in ns, which
every process on the machine shares: `sigterm_ns`, `exited_ns` (with the old server's
`exit_status`) and `started_ns`. SIGTERM or SIGINT stops the server and then the wrapper, with
the server's exit status. Standard library only, so the wrapper itself stays small (~10 MB).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
STOP_GRACE_S = 30.0  # the server's own shutdown_timeout is 10 s; this only bounds a hang
_LIBC = ctypes.CDLL(None, use_errno=True)

PIDFILE = "restarter.pid"
EVENTS = "restarter.events"


def _child_setup() -> None:
    """preexec_fn: the server must not inherit the wrapper's blocked signals, and dies with it."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    # same process group (no new session): stopping the run's group stops this server too
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_child_setup)  # noqa: PLW1509


def stop(child: subprocess.Popen[bytes]) -> int:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


def serve(argv: list[str], control: Path) -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # taken with sigwait, never as handlers
    child = start(argv)
    (control / PIDFILE).write_text(f"{os.getpid()}\n")
    while True:
        sig = signal.sigwait(SIGNALS)
        if sig in (signal.SIGTERM, signal.SIGINT):
            return stop(child)
        if sig == signal.SIGCHLD:
            if child.poll() is not None:  # the server ended by itself: so does the wrapper
                return child.returncode
            continue
        event = {"sigterm_ns": time.monotonic_ns()}
        event["exit_status"] = stop(child)
        event["exited_ns"] = time.monotonic_ns()
        child = start(argv)
        event["started_ns"] = time.monotonic_ns()
        with open(control / EVENTS, "a") as f:
            f.write(json.dumps(event) + "\n")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.restarter")
    p.add_argument("--control", required=True, type=Path, help="directory for pid and events")
    p.add_argument("server", nargs=argparse.REMAINDER, help="-- then the server's argv")
    args = p.parse_args(argv)
    server = args.server[1:] if args.server[:1] == ["--"] else args.server
    if not server:
        p.error("give the server's command after --")
    status = serve(server, args.control)
    return status if status >= 0 else 128 - status  # killed by a signal: as a shell reports it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
