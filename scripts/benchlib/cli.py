"""Command line of `scripts/bench`: options, running each target in turn, printing, JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from . import report, servers, sysload
from .orchestrate import RunConfig, run_one
from .targets import PINGER_PASSWORD, PINGER_USER

USAGE = """Benchmark chatserver: WebSocket fan-out latency and throughput (scenario fanout), and
event-loop freedom under Markdown and login load (scenario ping). The server runs pinned to
CPU 0, the load generator pinned to CPU 1."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=USAGE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scenario", choices=["fanout", "ping"], default="fanout")
    p.add_argument("--clients", type=int, default=1000, help="fanout: room members")
    p.add_argument("--rate", type=float, default=100.0, help="fanout: publisher msgs/s")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    p.add_argument("--size", type=int, default=200, help="fanout: text bytes per message")
    p.add_argument("--drain", type=float, default=10.0,
                   help="max seconds to wait for stragglers after sending stops")
    p.add_argument("--room", default="bench")
    p.add_argument("--target", choices=["chatserver", "naive", "firehose"], default="chatserver",
                   help="server under test (firehose: a near-free server to calibrate the "
                        "generator)")
    p.add_argument("--server-cmd", help="custom server command; {port} and {tmp} are "
                                        "substituted; must serve /healthz and /ws")
    p.add_argument("--token", default="bench", help="bearer token for --server-cmd")
    p.add_argument("--baseline", action="store_true",
                   help="also run the same load against the naive reference server")
    p.add_argument("--json", metavar="OUT", help="write machine-readable results here")
    p.add_argument("--connect-concurrency", type=int, default=64)
    p.add_argument("--connect-timeout", type=float, default=30.0)
    p.add_argument("--startup-timeout", type=float, default=60.0)
    return p.parse_args(argv)


def scenario_spec(args: argparse.Namespace) -> dict[str, Any]:
    common = {"room": args.room, "duration": args.duration, "warmup": args.warmup,
              "drain": args.drain, "connect_timeout": args.connect_timeout}
    if args.scenario == "ping":
        return {**common, "md_senders": 4, "md_size": 8192, "login_concurrency": 20,
                "login_user": PINGER_USER, "login_password": PINGER_PASSWORD}
    return {**common, "clients": args.clients, "rate": args.rate, "size": args.size,
            "connect_concurrency": args.connect_concurrency}


def run_configs(args: argparse.Namespace) -> list[RunConfig]:
    spec = scenario_spec(args)
    bound = 120 + args.warmup + args.duration + 2 * args.drain
    kind = "custom" if args.server_cmd else args.target
    label = "chatserver" if kind == "chatserver" else kind
    main = RunConfig(label, kind, args.scenario, spec, args.server_cmd, args.token,
                     args.startup_timeout, bound)
    configs = [main]
    if args.baseline:
        configs.append(RunConfig("baseline", "naive", args.scenario, spec, None, args.token,
                                 args.startup_timeout, bound))
    return configs


async def run_all(configs: list[RunConfig]) -> dict[str, dict[str, Any]]:
    """Run each target in turn; a failed run is recorded and the next one still runs."""
    results: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        print(f"--- running {cfg.scenario} against {cfg.label} ...", flush=True)
        try:
            results[cfg.label] = await run_one(cfg)
        except Exception as exc:  # noqa: BLE001 - report it and go on: the other run still counts
            traceback.print_exc()
            results[cfg.label] = {"target": cfg.label, "error": str(exc)}
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    servers.install_cleanup()
    servers.raise_fd_limit()
    info = report.machine_info()
    info["busy_before_pct"] = round(sysload.idle_check(1.0), 1)
    print(report.header(info) + f"machine busy before start: {info['busy_before_pct']}% of one "
          "core (should be near 0 for clean numbers)", flush=True)
    try:
        runs = asyncio.run(run_all(run_configs(args)))
    finally:
        servers.kill_all_now()
    return finish(args, info, runs)


def finish(args: argparse.Namespace, info: dict[str, Any], runs: dict[str, dict[str, Any]]) -> int:
    """Print the tables and ratios, write the JSON; exit status 1 if any run failed."""
    ok = {k: v for k, v in runs.items() if "error" not in v}
    ratio_figures = report.ratios(*ok.values()) if len(ok) == 2 else None
    if ok:
        print("\n" + report.render(ok, ratio_figures))
    for label, run in runs.items():
        if "error" in run:
            first_line = run["error"].splitlines()[0] if run["error"] else ""
            print(f"\n{label}: FAILED: {first_line}")
    if args.json:
        doc = {"command": report.command_line(), "machine": info, "scenario": args.scenario,
               "params": scenario_spec(args), "runs": runs, "ratios": ratio_figures}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if len(ok) == len(runs) else 1


def entry() -> None:
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
