"""One benchmark run against one server: prepare, start (CPU 0), generate load (CPU 1), measure.

The generator child prints phase events; at each one the CPU counters of every process the run
owns are read (server instances, PostgreSQL and Redis), so each one's CPU is attributed
to exactly the publishing interval the generator measured. The capacity scenario prefixes its
events with the step (`s3:measure_start`), so each step gets its own figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from . import pyspy, servers, sysload, targets
from .backends import Backends
from .cpubudget import CpuBudgets, server_workers
from .placement import Placement
from .procstats import ProcTree


@dataclass(frozen=True)
class Mark:
    """What was read when the generator announced a phase change."""

    cpu_s: dict[str, float]  # "server", "server0", "server1", ..., "services"
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
    processes: int = 1  # chatserver [server] processes
    placement: Placement = field(default_factory=Placement)
    gc_stats: bool = False  # time the server's GC collections (servers.gc_probe_env)
    profile_dir: str | None = None  # py-spy the server over the measured window (pyspy.py)

    @property
    def instances(self) -> int:
        return len(self.placement.instance_cpus)


@dataclass
class Trees:
    """Every process tree whose CPU a run accounts for."""

    servers: list[ProcTree]
    services: list[ProcTree]

    def all(self) -> Iterator[ProcTree]:
        yield from self.servers
        yield from self.services

    def read(self) -> dict[str, float]:
        cpu = {f"server{i}": t.cpu_seconds() for i, t in enumerate(self.servers)}
        cpu["server"] = sum(cpu.values())
        cpu["services"] = sum(t.cpu_seconds() for t in self.services)
        return cpu

    async def sample_forever(self, interval: float) -> None:
        while True:
            for tree in self.all():
                tree.sample()
            await asyncio.sleep(interval)


async def run_one(cfg: RunConfig, backends: Backends | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{cfg.label.replace(' ', '-')}-") as tmp_name:
        tmp = Path(tmp_name)
        ports = [servers.free_port() for _ in range(cfg.instances)]
        prep = await asyncio.to_thread(
            targets.prepare, cfg.kind, tmp, ports, label=cfg.label,
            room=str(cfg.spec.get("room", "bench")), with_pinger=cfg.scenario == "ping",
            server_cmd=cfg.server_cmd, token=cfg.token, processes=cfg.processes,
            backends=backends)
        argvs = [servers.pinned(cpus, argv)
                 for cpus, argv in zip(cfg.placement.instance_cpus, prep.argvs, strict=True)]
        gc_dir = tmp / "gc"
        gc_dir.mkdir()
        env = servers.gc_probe_env(gc_dir) if cfg.gc_stats else None
        procs = [servers.ManagedProcess(argv, tmp / f"server-{i}.log", env)
                 for i, argv in enumerate(argvs)]
        budgets = CpuBudgets(cfg.placement.cpu_budget, tmp.name) \
            if cfg.placement.cpu_budget else None
        profiler = pyspy.Sampler(Path(cfg.profile_dir), f"{cfg.scenario}-{cfg.label}", cfg.label,
                                procs[0].pid, cfg.placement.generator_cpu,
                                subprocesses=cfg.processes > 1) if cfg.profile_dir else None
        try:
            for proc, port in zip(procs, ports, strict=True):
                await servers.wait_healthy(proc, port, cfg.startup_timeout)
                if cfg.processes > 1:
                    await servers.wait_listening(proc, port, cfg.processes, cfg.startup_timeout)
                if budgets is not None:
                    for pid in server_workers(proc.pid, cfg.processes):
                        budgets.confine(pid)
            trees = Trees([ProcTree(p.pid) for p in procs],
                          [ProcTree(pid) for pid in (backends.pids() if backends else [])])
            sampler = asyncio.create_task(trees.sample_forever(0.2))
            try:
                spec = {**cfg.spec, "scenario": cfg.scenario, "host": "127.0.0.1",
                        "port": ports[0], "ports": ports, "token": prep.token,
                        "protocol": prep.protocol}
                result, marks = await _generate(cfg.label, spec, tmp, trees, cfg.run_timeout,
                                                procs[0], cfg.placement, profiler)
            finally:
                sampler.cancel()
            if profiler is not None:  # before the server stops: py-spy is still writing
                result["profile"] = await asyncio.to_thread(profiler.finish)
            for tree in trees.all():
                tree.sample()
            if budgets is not None:
                result["cpu_budget"] = {"cores_per_process": budgets.budget,
                                        "processes": len(budgets.groups),
                                        "throttled_s": round(budgets.throttled_s(), 2)}
        finally:
            pyspy.kill(profiler)
            exit_statuses = [await asyncio.to_thread(p.stop) for p in procs]
            if budgets is not None:
                budgets.close()
        result.update(_server_figures(result, marks, trees))
        if cfg.gc_stats:
            result["server_gc"] = servers.read_gc_stats(gc_dir)
        if result["scenario"] == "capacity":
            _step_figures(result, marks)
        result.update({"target": cfg.label, "server_argv": argvs[0], "server_argvs": argvs,
                       "prepare": prep.notes, "server_exit_status": exit_statuses[0],
                       "server_exit_statuses": exit_statuses, "processes": cfg.processes,
                       "placement": cfg.placement.note, "cpu_share": cfg.placement.share,
                       "services": bool(trees.services),
                       "config": [Path(c).read_text() for c in prep.config_files]})
        return result


async def _generate(label: str, spec: dict[str, Any], tmp: Path, trees: Trees, timeout: float,
                    server: servers.ManagedProcess, where: Placement,
                    profiler: pyspy.Sampler | None = None
                    ) -> tuple[dict[str, Any], dict[str, Mark]]:
    """Run the generator child; returns its result and the Mark taken at each phase event.

    `profiler` starts at the measured window's start and stops at its end (send_end)."""
    spec_path, out_path = tmp / "spec.json", tmp / "result.json"
    spec_path.write_text(json.dumps(spec))
    argv = servers.pinned(where.generator_cpu, [sys.executable, "-m", "benchlib.generator",
                                                str(spec_path), str(out_path)])
    if where.generator_nice:
        argv = ["nice", "-n", str(where.generator_nice), *argv]
    with _open_log(tmp / "generator.log") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=servers.child_env(),
            start_new_session=True, preexec_fn=servers.die_with_parent)
    servers.register(proc.pid)
    marks: dict[str, Mark] = {}
    try:
        await asyncio.wait_for(_read_events(label, proc, trees, marks, profiler), timeout)
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


async def _read_events(label: str, proc: asyncio.subprocess.Process, trees: Trees,
                       marks: dict[str, Mark], profiler: pyspy.Sampler | None = None) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        try:
            event = json.loads(line)["event"]
        except (ValueError, KeyError):
            continue
        if event.startswith("log:"):  # progress of a long scenario, for the operator
            print(f"    {label}: {event[4:]}", flush=True)
            continue
        marks[event] = Mark(trees.read(), time.monotonic_ns(), sysload.read(),
                            time.process_time())
        if profiler is not None and event == "measure_start":
            profiler.start()
        elif profiler is not None and event == "send_end":
            profiler.stop()


def _server_figures(result: dict[str, Any], marks: dict[str, Mark],
                    trees: Trees) -> dict[str, Any]:
    """Server CPU over the load (publish start to drain end) and over the measured window."""
    figures: dict[str, Any] = {
        "server_peak_rss_mb": sum(t.peak_rss for t in trees.servers) / 2**20,
        "server_procs_max": sum(t.max_procs for t in trees.servers)}
    if {"publish_start", "drain_end"} <= marks.keys():
        cpu = marks["drain_end"].cpu_s["server"] - marks["publish_start"].cpu_s["server"]
        figures["server_cpu_s"] = cpu
        deliveries = result.get("deliveries_total")
        if deliveries:
            figures["server_cpu_per_delivery_us"] = 1e6 * cpu / deliveries
    if {"measure_start", "send_end"} <= marks.keys():
        figures.update(window_figures(result.get("generator_cpu_pct", 0.0),
                                      marks["measure_start"], marks["send_end"]))
    return figures


def _step_figures(result: dict[str, Any], marks: dict[str, Mark]) -> None:
    """Capacity: CPU figures of each step's measured window, into the step itself."""
    for step in result["steps"]:
        m0, m1 = (marks.get(f"s{step['step']}:{e}") for e in ("measure_start", "send_end"))
        if m0 is None or m1 is None:
            continue
        step.update(window_figures(step["generator_cpu_pct"], m0, m1))
        rate = step["achieved_deliveries_per_s"]
        if rate:
            step["server_cpu_per_delivery_us"] = \
                1e4 * step["server_cpu_pct_measured"] / rate  # (pct / 100) s per s, in us
    best = result.get("sustainable_step")
    if best is not None:
        for key in ("server_cpu_pct_measured", "server_cpu_per_delivery_us", "machine_cpu_pct",
                    "other_cpu_pct", "services_cpu_pct", "softirq_cpu_pct", "instance_cpu_pct"):
            with contextlib.suppress(KeyError):
                result[key] = result["steps"][best][key]
        result["generator_cpu_pct"] = result["steps"][best]["generator_cpu_pct"]


def window_figures(generator_pct: float, m0: Mark, m1: Mark) -> dict[str, Any]:
    """CPU % of everything in a window: server, its instances, services, and everyone else."""
    wall = max(1e-9, (m1.t_ns - m0.t_ns) / 1e9)

    def pct(key: str) -> float:
        return 100.0 * (m1.cpu_s.get(key, 0.0) - m0.cpu_s.get(key, 0.0)) / wall

    machine = sysload.busy_seconds(m0.machine, m1.machine)
    softirq = sysload.softirq_seconds(m0.machine, m1.machine)
    ours = (pct("server") + pct("services") + generator_pct) / 100.0 * wall
    other = machine - softirq - ours - (m1.own_cpu_s - m0.own_cpu_s)
    instances = sorted(k for k in m1.cpu_s if k.startswith("server") and k != "server")
    return {
        "server_cpu_pct_measured": pct("server"),
        "instance_cpu_pct": [pct(k) for k in instances],
        "services_cpu_pct": pct("services"),
        "machine_cpu_pct": {k: round(v, 1) for k, v in
                            sysload.per_cpu_pct(m0.machine, m1.machine).items()},
        "softirq_cpu_pct": 100.0 * softirq / wall,
        # other people's processes: high values mean the numbers are not clean
        "other_cpu_pct": max(0.0, 100.0 * other / wall),
    }
