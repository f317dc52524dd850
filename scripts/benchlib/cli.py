"""Command line of `scripts/bench`: options, running each target in turn, printing, JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from . import backends as backends_mod
from . import outcome, placement, plan, plots, pyspy, report, servers, sysload
from .backends import Backends
from .orchestrate import run_one
from .plan import Section

USAGE = """Benchmark chatserver: WebSocket fan-out latency and throughput (scenario fanout),
event-loop freedom under Markdown and login load (ping), sustainable deliveries/s under a p99
bound (capacity), the cost of crossing instances through Redis (crossinstance), one token
stream into a room with slow readers (stream: 500 deltas/s, 200 readers, 10 throttled to
20 KB/s), and a reconnect storm after a restart (storm: 2,000 clients, each its own user,
back within 1 s, resumed with `join after`). The server runs pinned to CPU 0, the load
generator (and PostgreSQL and Redis) pinned to CPU 1. In fanout and capacity, --baseline,
--peer and --calibrate add runs of other servers under the same load, in one table with
chatserver's ratio to each; --plot draws them, --profile shows where chatserver's time goes;
--compare-monitoring measures what chatserver's metrics and loop-lag monitoring cost."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those options say in their help what they default to."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=USAGE,
                                formatter_class=_HelpFormatter)
    p.add_argument("--scenario", choices=["fanout", "ping", "capacity", "crossinstance",
                                          "stream", "storm"], default="fanout")
    p.add_argument("--clients", type=int,
                   help="room members (default: 1000; stream 200 readers, storm 2000 clients)")
    p.add_argument("--rate", type=float,
                   help="fanout: publisher msgs/s (default: 100); stream: deltas/s (default: "
                        "500)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--size", type=int, default=200, help="text bytes per message")
    p.add_argument("--drain", type=float,
                   help="max seconds to wait for stragglers after sending stops (default: 10; "
                        "stream 60, for the throttled readers)")
    p.add_argument("--room", default="bench")
    p.add_argument("--target", choices=["chatserver", "naive", "firehose"], default="chatserver",
                   help="server under test (firehose: the calibration server alone, to "
                        "calibrate the generator; --calibrate runs it next to chatserver)")
    p.add_argument("--server-cmd", help="custom server command; {port} and {tmp} are "
                                        "substituted; must serve /healthz and /ws")
    p.add_argument("--token", default="bench", help="bearer token for --server-cmd")
    p.add_argument("--chatserver-src", metavar="DIR",
                   help="run chatserver (server and admin CLI) from this source tree instead "
                        "of the installed one, e.g. a `git worktree add DIR <older commit>`: "
                        "figures and --profile of the code before a change, with this harness")
    p.add_argument("--baseline", action="store_true",
                   help="also run the same load against the naive reference server")
    p.add_argument("--calibrate", action="store_true",
                   help="also run the same load against the calibration server (one pre-built "
                        "frame written per member, nothing else: the physical limit), and print "
                        "chatserver's p99 and server CPU per delivery relative to it")
    p.add_argument("--compare-monitoring", type=int, default=0, metavar="N",
                   help="fanout: N pairs of chatserver runs with its metrics and loop-lag "
                        "monitoring on (the defaults) and off ([metrics] enabled = false, [log] "
                        "slow_callback_ms = 0), alternating on, off, on, off so a noisy "
                        "machine's drift hits both; prints the cost (median server CPU per "
                        "delivery on / off - 1), each pair's cost, and issue 5's target "
                        "(< 2 %%)")
    p.add_argument("--json", metavar="OUT", help="write machine-readable results here")
    p.add_argument("--plot", metavar="DIR",
                   help="write PNG charts here: capacity = latency p50/p99 against offered "
                        "deliveries/s, one line per target; fanout = p50/p99 bars per target")
    p.add_argument("--profile", metavar="DIR",
                   help="fanout: sample chatserver's server process with py-spy during the "
                        "measured window; raw stacks and a summary of the top functions by "
                        "own and inclusive time go here (the summary is printed too)")
    p.add_argument("--gc-stats", action="store_true",
                   help="time every cyclic-GC collection in the servers under test (a "
                        "sitecustomize on their PYTHONPATH; their code is untouched)")
    p.add_argument("--connect-concurrency", type=int, default=64)
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--startup-timeout", type=float, default=60.0)

    g = p.add_argument_group("backends and processes")
    g.add_argument("--backend", choices=["sqlite", "postgres-redis"], default="sqlite",
                   help="chatserver's store and broker. sqlite: a SQLite file and the in-process "
                        "broker. postgres-redis: a throwaway PostgreSQL and Redis started for "
                        "this invocation, pinned to CPU 1; the socketio peer uses that Redis")
    g.add_argument("--processes", type=int, default=1,
                   help="chatserver [server] processes (needs --backend postgres-redis)")
    g.add_argument("--compare-processes", metavar="N,M",
                   help="run chatserver once per process count (e.g. 1,2) and print the ratio "
                        "of the last to the first (needs --backend postgres-redis)")
    g.add_argument("--cpu-share", choices=["both", "spread", "one-core", "budget"],
                   default="both",
                   help="where N>1 processes run (1 process: CPU 0). spread = CPUs 0-1, sharing "
                        "CPU 1 with the generator, PostgreSQL and Redis; one-core = CPU 0 only "
                        "(per-core efficiency); both = one run of each; budget = every run, 1 "
                        "process too, gives each worker --cpu-budget of a core (cgroup quota, "
                        "needs root), emulating a core per process plus cores for the generator")
    g.add_argument("--cpu-budget", type=float, default=0.4,
                   help="with --cpu-share budget: cores per worker process")
    g.add_argument("--cross-pin", choices=["split", "split-priority", "same"], default="split",
                   help="crossinstance: split = instance A on CPU 0, B on CPU 1; "
                        "split-priority = the same with the generator at nice 10, so B "
                        "preempts it (B as if on its own host); same = both on CPU 0")
    g.add_argument("--cross-members", choices=["alternate", "separate"], default="alternate",
                   help="crossinstance: alternate = one run, members alternating between A and "
                        "B; separate = a run with every member on A, then one with every member "
                        "on B, so the generator's reading is the same in both (use with "
                        "--cross-pin same)")
    g.add_argument("--peer", choices=["socketio", "websockets"],
                   help="also run the same load against a peer: socketio = python-socketio's "
                        "AsyncServer (AsyncRedisManager with postgres-redis); websockets = the "
                        "websockets library's server fanning out with broadcast(), in-process "
                        "only. With fanout, the capacity of every target is measured as well")
    g.add_argument("--no-peer-capacity", action="store_true",
                   help="with --peer and fanout: skip the capacity runs")

    c = p.add_argument_group("capacity scenario")
    c.add_argument("--p99-bound", type=float, default=100.0,
                   help="ms: a step passes while its p99 delivery latency stays at or under it")
    c.add_argument("--start-rate", type=float, default=10.0, help="msgs/s of the first step")
    c.add_argument("--max-rate", type=float, default=2000.0, help="msgs/s: stop climbing here")
    c.add_argument("--refine", type=int, default=4,
                   help="bisection steps after the first failing step")
    c.add_argument("--step-duration", type=float, default=4.0, help="measured seconds per step")
    c.add_argument("--step-min-messages", type=int, default=20,
                   help="a step measures for at least this many messages (longer at low rates)")
    c.add_argument("--step-warmup", type=float, default=1.0, help="warm-up seconds per step")
    c.add_argument("--max-steps", type=int, default=16)

    i = p.add_argument_group("stream and storm scenarios (issue 4)")
    i.add_argument("--throttled", type=int, default=10,
                   help="stream: readers with a small SO_RCVBUF that read at most "
                        "--throttle-rate (they are among --clients)")
    i.add_argument("--throttle-rate", type=float, default=20_000.0,
                   help="stream: bytes/s a throttled reader takes off its socket")
    i.add_argument("--storm-window", type=float, default=1.0,
                   help="storm: every client reconnects at a uniformly random moment this many "
                        "seconds after the restarted server listens again")
    i.add_argument("--storm-give-up", type=float, default=60.0,
                   help="storm: stop waiting for clients to resume this long after the server "
                        "is back (the target is 15 s; the rest measures how late they are)")
    args = p.parse_args(argv)
    plan.fill_defaults(args)
    problem = plan.check(args)
    if problem:
        p.error(problem)
    return args


async def run_sections(sections: list[Section], backends: Backends | None
                       ) -> dict[str, dict[str, Any]]:
    """Run each target in turn; a failed run is recorded and the next one still runs."""
    results: dict[str, dict[str, Any]] = {}
    for section in sections:
        for cfg in section.configs:
            print(f"--- running {cfg.scenario} against {cfg.label} ({cfg.placement.note}) ...",
                  flush=True)
            try:
                results[cfg.label] = await run_one(cfg, backends)
            except Exception as exc:  # noqa: BLE001 - report it and go on: the others still count
                traceback.print_exc()
                results[cfg.label] = {"target": cfg.label, "scenario": cfg.scenario,
                                      "error": str(exc)}
    return results


def start_backends(args: argparse.Namespace) -> Backends | None:
    if args.backend != "postgres-redis":
        return None
    print(f"starting a throwaway PostgreSQL and Redis on CPU {placement.SERVICES_CPU} ...",
          flush=True)
    return backends_mod.start(placement.SERVICES_CPU)


def use_chatserver_src(src: str) -> None:
    """Put `src` first on the module path of the harness (which reads chatserver's config
    classes) and of every child (the server, its admin CLI)."""
    path = str(Path(src).resolve())
    if not (Path(path) / "chatserver" / "__init__.py").exists():
        raise SystemExit(f"--chatserver-src {src}: no chatserver/ package there")
    if "chatserver" in sys.modules:
        raise RuntimeError("chatserver was imported before --chatserver-src took effect")
    sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [path,
                                                             os.environ.get("PYTHONPATH")]))
    # `python -m` puts the working directory first on the path, and when that is this
    # checkout its chatserver/ would win: PYTHONSAFEPATH (3.11+) leaves it out
    os.environ["PYTHONSAFEPATH"] = "1"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    servers.install_cleanup()
    servers.raise_fd_limit()
    info = report.machine_info()
    if args.chatserver_src:
        use_chatserver_src(args.chatserver_src)
        info["chatserver_src"] = report.source_info(args.chatserver_src)
    info["busy_before_pct"] = round(sysload.idle_check(1.0), 1)
    sections = plan.sections(args)
    backends: Backends | None = None
    print(report.header(info, sections) + "machine busy before start: "
          f"{info['busy_before_pct']}% of one core (should be near 0 for clean numbers)",
          flush=True)
    try:
        backends = start_backends(args)
        info["backend"] = plan.backend_note(args, backends)
        print(f"backend: {info['backend']}", flush=True)
        runs = asyncio.run(run_sections(sections, backends))
    finally:
        servers.kill_all_now()
        if backends is not None:
            backends.close()
    return finish(args, info, sections, runs)


def finish(args: argparse.Namespace, info: dict[str, Any], sections: list[Section],
           runs: dict[str, dict[str, Any]]) -> int:
    """Print the tables, ratios and profiles, write the JSON and the charts; exit status 1 if
    any run failed."""
    section_docs = []
    first_ratios = None
    for section in sections:
        section_runs = {c.label: runs[c.label] for c in section.configs if c.label in runs}
        ok = {k: v for k, v in section_runs.items() if "error" not in v}
        by_base = outcome.section_ratios(section, ok)
        figures = next(iter(by_base.values()), None)
        if first_ratios is None:
            first_ratios = figures
        if ok:
            print("\n" + outcome.render(section, ok, by_base, args))
        section_docs.append({"scenario": section.scenario, "compare": section.compare,
                             "labels": [c.label for c in section.configs], "ratios": figures,
                             "ratios_by_base": by_base})
    for label, run in runs.items():
        if "profile" in run:
            print("\n" + pyspy.render(label, run["profile"]))
    for label, run in runs.items():
        if "error" in run:
            first_line = run["error"].splitlines()[0] if run["error"] else ""
            print(f"\n{label}: FAILED: {first_line}")
    doc = {"command": report.command_line(), "machine": info, "scenario": args.scenario,
           "params": plan.scenario_spec(args, args.scenario), "runs": runs,
           "ratios": first_ratios, "sections": section_docs}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        for path in plots.write_all(doc, Path(args.plot)):
            print(f"chart: {path}")
    return 0 if all("error" not in r for r in runs.values()) else 1


def entry() -> None:
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
