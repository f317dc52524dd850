"""Entry point of the load-generator child process: `python -m benchlib.generator SPEC OUT`.

The orchestrator starts this under `taskset -c 1` so it never competes with the server (CPU 0).
SPEC is a JSON file naming the scenario and its parameters; the result goes to OUT as JSON.
Phase changes are printed to stdout as one JSON object per line, for the orchestrator.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import traceback
from collections.abc import Callable, Coroutine
from time import monotonic_ns
from typing import Any

import uvloop

from . import capacity, fanout, ping, storm, stream
from .timing import Emit

Scenario = Callable[[dict[str, Any], Emit], Coroutine[Any, Any, dict[str, Any]]]


SETTLE_BETWEEN_RUNS = 12.0  # s: the overload guard steps down one level per 3 calm seconds


async def crossinstance(spec: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """fanout with members on two instances (ports); per-instance latency in `groups`.

    `cross_members` "alternate": one run, members alternating between A and B. "separate":
    two runs one after the other, every member on A, then every member on B (the publisher
    on A both times), so the generator reads the same number of copies in both and B - A is
    the cross-instance path alone, not the generator reading A's copies before B's.
    """
    if spec.get("cross_members") != "separate":
        result = await fanout.run(spec, emit)
        result["scenario"] = "crossinstance"
        return result
    a, b = spec["ports"][:2]
    same = await fanout.run({**spec, "member_ports": [a]}, emit)
    # 1,000 members leaving at once is a presence storm (each one's offline goes to the
    # rest): let the instances' overload guards settle before the second run connects.
    await asyncio.sleep(SETTLE_BETWEEN_RUNS)
    cross = await fanout.run({**spec, "member_ports": [b]}, emit)
    result = dict(cross)  # the server CPU figures are the second run's (marks are replaced)
    for key in ("lost", "expected_deliveries", "duplicates", "out_of_order"):
        result[key] = same[key] + cross[key]
    result["groups"] = [same["groups"][0], cross["groups"][0]]
    result.update({"scenario": "crossinstance", "cross_members": "separate",
                   "same_instance_run": {k: same[k] for k in ("connected", "latency_ms",
                                                               "ack_latency_ms")}})
    return result


SCENARIOS: dict[str, Scenario] = {"fanout": fanout.run, "ping": ping.run,
                                  "capacity": capacity.run, "crossinstance": crossinstance,
                                  "stream": stream.run, "storm": storm.run}


def emit(event: str) -> None:
    print(json.dumps({"event": event, "t_ns": monotonic_ns()}), flush=True)


def raise_fd_limit() -> None:
    """Thousands of sockets need more than the common soft limit of 1024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    spec_path, out_path = argv[1], argv[2]
    with open(spec_path) as f:
        spec: dict[str, Any] = json.load(f)
    # the run's temp dir, which the server's helpers share (storm: the restarter's control)
    spec.setdefault("run_dir", os.path.dirname(os.path.abspath(spec_path)))
    raise_fd_limit()
    try:
        result: dict[str, Any] = uvloop.run(SCENARIOS[spec["scenario"]](spec, emit))
    except Exception:  # noqa: BLE001 - handed to the orchestrator, which prints it
        result = {"error": traceback.format_exc()}
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
