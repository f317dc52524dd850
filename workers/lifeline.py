"""Process-pool worker start-up: lower priority than the event loop, and end with the server.

A worker whose server process died exits by itself.

A process pool's workers are children of the forkserver, not of the server, so neither
PR_SET_PDEATHSIG nor a closed pipe tells them reliably that a `kill -9` took the server away;
without this they would linger, one set per crash, under a supervisor that restarts only the
main process.
"""

from __future__ import annotations

import os
import threading
import time

CHECK_INTERVAL = 1.0


def exit_with(server_pid: int) -> None:
    """Pool initializer: watch `server_pid` from a daemon thread; exit once it is gone."""

    def watch() -> None:
        while True:
            time.sleep(CHECK_INTERVAL)
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                continue  # the pid exists (owned by someone else): keep waiting

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def init_process_worker(server_pid: int, niceness: int) -> None:
    """Process-pool initializer: yield the CPU to the server's event loop, die with the server.

    Rendering is throughput work and the loop is latency work: on a busy core, a worker at a
    higher nice value lets the loop run as soon as a frame arrives.
    """
    os.nice(niceness)
    exit_with(server_pid)
