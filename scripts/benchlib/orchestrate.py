"""One benchmark run against one server: prepare, start (CPU 0), generate load (CPU 1), measure.

The generator child prints phase events; at each one the server's CPU counters are read, so
the server's CPU is attributed to exactly the publishing interval the generator measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import servers, sysload, targets
from .procstats import ProcTree


@dataclass(frozen=True)
class Mark:
    """What was read when the generator announced a phase change."""

    server_cpu_s: float
    t_ns: int
    machine: sysload.CpuTimes
    own_cpu_s: float  # the orchestrator's own CPU, so it can be excluded from "other load"


@dataclass(frozen=True)
class RunConfig:
    label: str  # name in the report: "chatserver", "baseline", ...
    kind: str  # targets.prepare kind
    scenario: str
    spec: dict[str, Any]  # scenario parameters, without host/port/token
    server_cmd: str | None
    token: str
    startup_timeout: float
    run_timeout: float  # hard bound on the generator's whole life


async def run_one(cfg: RunConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{cfg.label}-") as tmp_name:
        tmp = Path(tmp_name)
        port = servers.free_port()
        prep = await asyncio.to_thread(
            targets.prepare, cfg.kind, tmp, port, room=str(cfg.spec.get("room", "bench")),
            with_pinger=cfg.scenario == "ping", server_cmd=cfg.server_cmd, token=cfg.token)
        argv = servers.pinned(0, prep.argv)
        server = servers.ManagedProcess(argv, tmp / "server.log")
        try:
            await servers.wait_healthy(server, port, cfg.startup_timeout)
            tree = ProcTree(server.pid)
            sampler = asyncio.create_task(tree.sample_forever(0.2))
            try:
                spec = {**cfg.spec, "scenario": cfg.scenario, "host": "127.0.0.1", "port": port,
                        "token": prep.token}
                result, marks = await _generate(spec, tmp, tree, cfg.run_timeout, server)
            finally:
                sampler.cancel()
            tree.sample()
        finally:
            exit_status = await asyncio.to_thread(server.stop)
        result.update(_server_figures(result, marks, tree))
        result.update({"target": cfg.label, "server_argv": argv, "prepare": prep.notes,
                       "server_exit_status": exit_status})
        return result


async def _generate(spec: dict[str, Any], tmp: Path, tree: ProcTree, timeout: float,
                    server: servers.ManagedProcess
                    ) -> tuple[dict[str, Any], dict[str, Mark]]:
    """Run the generator child; returns its result and the Mark taken at each phase event."""
    spec_path, out_path = tmp / "spec.json", tmp / "result.json"
    spec_path.write_text(json.dumps(spec))
    argv = servers.pinned(1, [sys.executable, "-m", "benchlib.generator", str(spec_path),
                              str(out_path)])
    with _open_log(tmp / "generator.log") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=servers.child_env(),
            start_new_session=True, preexec_fn=servers.die_with_parent)
    servers.register(proc.pid)
    marks: dict[str, Mark] = {}
    try:
        await asyncio.wait_for(_read_events(proc, tree, marks), timeout)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        servers.kill_group(proc.pid)  # no-op when it exited; ensures it is gone on error
        servers.unregister(proc.pid)
    if not out_path.exists():
        log_text = (tmp / "generator.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"generator wrote no result (exit {proc.returncode}):\n{log_text}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    if "error" in result:
        raise RuntimeError(f"generator failed:\n{result['error']}\nserver log:\n"
                           f"{server.log_tail()}")
    return result, marks


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")  # the child keeps its own copy of the descriptor


async def _read_events(proc: asyncio.subprocess.Process, tree: ProcTree,
                       marks: dict[str, Mark]) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        try:
            event = json.loads(line)["event"]
        except (ValueError, KeyError):
            continue
        marks[event] = Mark(tree.cpu_seconds(), time.monotonic_ns(), sysload.read(),
                            time.process_time())


def _server_figures(result: dict[str, Any], marks: dict[str, Mark],
                    tree: ProcTree) -> dict[str, Any]:
    """Server CPU over the load (publish start to drain end) and over the measured window."""
    figures: dict[str, Any] = {"server_peak_rss_mb": tree.peak_rss / 2**20,
                               "server_procs_max": tree.max_procs}
    if {"publish_start", "drain_end"} <= marks.keys():
        cpu = marks["drain_end"].server_cpu_s - marks["publish_start"].server_cpu_s
        figures["server_cpu_s"] = cpu
        deliveries = result.get("deliveries_total")
        if deliveries:
            figures["server_cpu_per_delivery_us"] = 1e6 * cpu / deliveries
    if {"measure_start", "send_end"} <= marks.keys():
        figures.update(_window_figures(result, marks["measure_start"], marks["send_end"]))
    return figures


def _window_figures(result: dict[str, Any], m0: Mark, m1: Mark) -> dict[str, Any]:
    """Server CPU % in the measured window, and what everything else on the machine used."""
    wall = max(1e-9, (m1.t_ns - m0.t_ns) / 1e9)
    server = m1.server_cpu_s - m0.server_cpu_s
    generator = result.get("generator_cpu_pct", 0.0) / 100.0 * wall
    machine = sysload.busy_seconds(m0.machine, m1.machine)
    softirq = sysload.softirq_seconds(m0.machine, m1.machine)
    other = machine - softirq - server - generator - (m1.own_cpu_s - m0.own_cpu_s)
    return {
        "server_cpu_pct_measured": 100.0 * server / wall,
        "machine_cpu_pct": {k: round(v, 1) for k, v in
                            sysload.per_cpu_pct(m0.machine, m1.machine).items()},
        "softirq_cpu_pct": 100.0 * softirq / wall,
        # other people's processes: high values mean the numbers are not clean
        "other_cpu_pct": max(0.0, 100.0 * other / wall),
    }
