"""From the command line to the list of runs: which targets, which scenario, where they run.

Runs are grouped in sections; each section is one table in the report, and its `compare` says
how its runs relate (what the ratios under the table mean):

- "baseline": chatserver vs the naive server (`--baseline`)
- "peer": chatserver vs python-socketio or the websockets library (`--peer socketio|websockets`)
- "calibration": chatserver vs the calibration server (`--calibrate`)
- several of those joined by "+" (e.g. "peer+calibration"): chatserver, the first run, against
  each of the others in turn; `Section.bases()` names each one's role
- "processes": chatserver with different process counts (`--compare-processes`)
- "monitoring": chatserver with its metrics and loop-lag monitoring on (the defaults) and off
  (the `chatserver:unmonitored` variant), alternating on, off, on, off, ... so a noisy
  machine's drift hits both (`--compare-monitoring N`: N pairs)
- "": a single run (crossinstance reports its own A/B difference)
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from . import placement
from .backends import Backends
from .orchestrate import RunConfig
from .placement import Placement
from .targets import (
    PINGER_PASSWORD,
    PINGER_USER,
    STREAM_MESSAGE_BYTES,
    UNMONITORED,
    variant_kind,
)

CAPACITY_KEYS = ("start_rate", "max_rate", "refine", "step_warmup", "step_duration",
                 "step_min_messages", "max_steps")
# issue 4's scenarios speak chatserver's stream ops and restart it: chatserver only
CHATSERVER_ONLY = ("stream", "storm")
# --clients and --rate when not given: the issue's numbers for its scenarios
DEFAULT_CLIENTS = {"stream": 200, "storm": 2000}
DEFAULT_RATE = {"stream": 500.0}
# stream: a throttled reader is a few hundred KB behind when the stream ends (20 KB/s); the
# wait ends as soon as every reader has the end, so a long bound costs nothing
DEFAULT_DRAIN = {"stream": 60.0}
STREAM_DELTA_BYTES = 5  # "1f3 ": hex digits of the delta's index and a space


# What a run other than the first is, in a section of comparisons, by its server kind.
ROLE_OF_KIND = {"naive": "baseline", "socketio": "peer", "websockets": "peer",
                "firehose": "calibration"}
COMPARED_SCENARIOS = ("fanout", "capacity")  # what the peers and the calibration server speak
PLOTTED_SCENARIOS = ("fanout", "capacity", "crossinstance")


@dataclass(frozen=True)
class Section:
    scenario: str
    configs: list[RunConfig]
    compare: str

    def bases(self) -> list[tuple[str, str, str]]:
        """(label, role, server kind) of each run the first one is compared with: role
        "baseline", "peer" or "calibration"; empty for sections of processes, of monitoring
        (outcome.monitoring_figures pairs those) or of one run."""
        if self.compare in ("", "processes", "monitoring"):
            return []
        return [(c.label, ROLE_OF_KIND.get(c.kind, ""), c.kind) for c in self.configs[1:]]


def monitoring_label(on: bool, pair: int) -> str:
    """The label of a --compare-monitoring run: "monitoring on #1", "monitoring off #1", ..."""
    return f"monitoring {'on' if on else 'off'} #{pair}"


def is_unmonitored(cfg: RunConfig) -> bool:
    """Whether a run is chatserver with its metrics and stall watchdog switched off."""
    return cfg.kind.split(":")[1:] == [UNMONITORED]


def process_counts(args: argparse.Namespace) -> list[int]:
    if args.compare_processes:
        return [int(n) for n in args.compare_processes.split(",") if n.strip()]
    return [args.processes]


def fill_defaults(args: argparse.Namespace) -> None:
    """--clients, --rate and --drain that were not given take the scenario's default."""
    if args.clients is None:
        args.clients = DEFAULT_CLIENTS.get(args.scenario, 1000)
    if args.rate is None:
        args.rate = DEFAULT_RATE.get(args.scenario, 100.0)
    if args.drain is None:
        args.drain = DEFAULT_DRAIN.get(args.scenario, 10.0)


def _check_issue4(args: argparse.Namespace) -> str | None:
    if args.baseline or args.peer or args.target != "chatserver" or args.server_cmd:
        return f"--scenario {args.scenario} runs against chatserver only (no --baseline, " \
               "--peer, --target or --server-cmd)"
    if args.processes != 1 or args.compare_processes:
        return f"--scenario {args.scenario} runs one chatserver process"
    if args.scenario == "stream":
        if not 0 <= args.throttled <= args.clients:
            return "--throttled must be between 0 and --clients"
        deltas = args.rate * (args.warmup + args.duration)
        if deltas * STREAM_DELTA_BYTES > STREAM_MESSAGE_BYTES:
            return f"the stream would be ~{deltas * STREAM_DELTA_BYTES:,.0f} bytes, over the " \
                   f"bench's max_message_bytes ({STREAM_MESSAGE_BYTES:,}): shorten it"
    if args.scenario == "storm" and args.storm_window < 0:
        return "--storm-window must be at least 0"
    return None


def _check_monitoring(args: argparse.Namespace) -> str | None:
    if args.compare_monitoring < 0:
        return "--compare-monitoring takes a number of on/off pairs (0: no comparison)"
    if not args.compare_monitoring:
        return None
    if args.scenario != "fanout":
        return "--compare-monitoring measures server CPU per delivery of fanout runs " \
               "(--scenario fanout)"
    if args.baseline or args.peer or args.calibrate or args.compare_processes:
        return "--compare-monitoring runs chatserver only, on and off: drop " \
               "--baseline/--peer/--calibrate/--compare-processes"
    if args.target != "chatserver" or args.server_cmd:
        return "--compare-monitoring switches chatserver's own monitoring: no --target or " \
               "--server-cmd"
    if args.processes > 1 and args.cpu_share == "both":
        return "--compare-monitoring compares runs in one placement: with --processes, " \
               "choose --cpu-share spread, one-core or budget"
    return None


def check(args: argparse.Namespace) -> str | None:
    """The first problem with a combination of options, or None."""
    problem = _check_monitoring(args)
    if problem:
        return problem
    if args.profile and args.scenario != "fanout":
        return "--profile samples the server during a fanout run's measured window " \
               "(--scenario fanout)"
    if args.plot and args.scenario not in PLOTTED_SCENARIOS:
        return f"--plot draws {', '.join(PLOTTED_SCENARIOS)} runs"
    if args.scenario in CHATSERVER_ONLY:
        if args.calibrate:
            return f"--scenario {args.scenario} runs against chatserver only (no --calibrate)"
        return _check_issue4(args)
    try:
        counts = process_counts(args)
    except ValueError:
        return "--compare-processes takes process counts such as 1,2"
    if not counts or min(counts) < 1:
        return "process counts must be at least 1"
    several = max(counts) > 1 or bool(args.compare_processes)
    if several and args.backend != "postgres-redis":
        return "several chatserver processes share messages only through Redis: add " \
               "--backend postgres-redis"
    if several and (args.target != "chatserver" or args.server_cmd):
        return "--processes and --compare-processes apply to chatserver only"
    if args.compare_processes and args.scenario not in ("capacity", "fanout"):
        return "--compare-processes works with --scenario capacity (or fanout)"
    if args.compare_processes and (args.peer or args.baseline or args.calibrate):
        return "--compare-processes runs chatserver only: drop --peer/--baseline/--calibrate"
    if args.scenario == "crossinstance":
        if args.backend != "postgres-redis":
            return "crossinstance needs --backend postgres-redis (two instances, one store, Redis)"
        if max(counts) > 1 or args.peer or args.baseline or args.calibrate \
                or args.target != "chatserver":
            return "crossinstance runs two single-process chatserver instances, nothing else"
    if (args.peer or args.calibrate) and args.scenario not in COMPARED_SCENARIOS:
        return "the peers and the calibration server speak only the fanout subset (--scenario " \
               "fanout or capacity)"
    if args.calibrate and args.target == "firehose":
        return "--target firehose is the calibration server itself: drop --calibrate"
    if args.start_rate <= 0 or args.max_rate < args.start_rate:
        return "--start-rate must be positive and at most --max-rate"
    return None


def scenario_spec(args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    common = {"room": args.room, "duration": args.duration, "warmup": args.warmup,
              "drain": args.drain, "connect_timeout": args.connect_timeout}
    if scenario == "ping":
        return {**common, "md_senders": 4, "md_size": 8192, "login_concurrency": 20,
                "login_user": PINGER_USER, "login_password": PINGER_PASSWORD}
    if scenario == "storm":
        return {**common, "clients": args.clients, "size": args.size,
                "connect_concurrency": args.connect_concurrency,
                "storm_window": args.storm_window, "storm_give_up": args.storm_give_up}
    spec = {**common, "clients": args.clients, "rate": args.rate, "size": args.size,
            "connect_concurrency": args.connect_concurrency}
    if scenario == "capacity":
        spec.update({k: getattr(args, k) for k in CAPACITY_KEYS})
        spec["p99_bound_ms"] = args.p99_bound
    if scenario == "stream":
        spec.update({"throttled": args.throttled, "throttle_rate": args.throttle_rate})
    if scenario == "crossinstance":
        spec["cross_members"] = args.cross_members
    return spec


def run_timeout(args: argparse.Namespace, scenario: str) -> float:
    """A hard bound on one generator's life: the run stops even if a server hangs."""
    if scenario == "capacity":
        longest = max(args.step_duration, args.step_min_messages / args.start_rate * 16)
        per_step: float = args.step_warmup + longest + args.drain + 5 + args.connect_timeout
        return 120.0 + int(args.max_steps) * per_step
    if scenario == "storm":  # connect, restart (up to 60 s), the storm, closing
        return 240.0 + int(args.clients) / 20 + float(args.storm_give_up)
    once: float = (args.warmup + args.duration + 2 * args.drain) * \
        (2 if scenario == "crossinstance" and args.cross_members == "separate" else 1)
    return 120.0 + once


def _config(args: argparse.Namespace, scenario: str, label: str, kind: str, *,
            processes: int = 1, where: Placement | None = None) -> RunConfig:
    custom = kind == "chatserver" and args.server_cmd
    if kind == "chatserver" and not custom:
        kind = variant_kind(scenario, args.clients)
    return RunConfig(label, "custom" if custom else kind, scenario, scenario_spec(args, scenario),
                     args.server_cmd if custom else None, args.token, args.startup_timeout,
                     run_timeout(args, scenario), processes, where or Placement(), args.gc_stats)


def _main_configs(args: argparse.Namespace, scenario: str, suffix: str) -> list[RunConfig]:
    label = "chatserver" if args.target == "chatserver" and not args.server_cmd else \
        ("custom" if args.server_cmd else args.target)
    if scenario == "crossinstance":
        return [_config(args, scenario, label + suffix, args.target,
                        where=placement.for_instances(args.cross_pin))]
    counts = process_counts(args)
    if args.cpu_share == "budget":
        return [_config(args, scenario, f"{label} x{n} budget{suffix}", args.target,
                        processes=n, where=placement.for_budget(n, args.cpu_budget))
                for n in counts]
    if len(counts) == 1 and not args.compare_processes:
        n = counts[0]
        if n == 1:
            return [_config(args, scenario, label + suffix, args.target)]
        return [_config(args, scenario, f"{label} x{n} {share}{suffix}", args.target,
                        processes=n, where=placement.for_processes(n, share))
                for share in placement.shares(args.cpu_share)]
    configs = []
    for n in counts:
        for share in placement.shares(args.cpu_share) if n > 1 else ["spread"]:
            name = f"{label} x{n}" + (f" {share}" if n > 1 else "")
            configs.append(_config(args, scenario, name + suffix, args.target, processes=n,
                                   where=placement.for_processes(n, share)))
    return configs


def _comparisons(args: argparse.Namespace, scenario: str, suffix: str) -> list[RunConfig]:
    """The runs chatserver is compared with, in the order of the table's columns."""
    out = []
    if args.baseline:
        out.append(_config(args, scenario, "baseline" + suffix, "naive"))
    if args.peer:
        out.append(_config(args, scenario, args.peer + suffix, args.peer))
    if args.calibrate:
        out.append(_config(args, scenario, "calibration" + suffix, "firehose"))
    return out


def _compare(args: argparse.Namespace) -> str:
    flags = (("baseline", args.baseline), ("peer", args.peer), ("calibration", args.calibrate))
    return "+".join(name for name, on in flags if on)


def _profiled(args: argparse.Namespace, configs: list[RunConfig]) -> list[RunConfig]:
    """With --profile, the fanout runs of chatserver (not its comparisons) sample py-spy."""
    if not args.profile:
        return configs
    return [dataclasses.replace(c, profile_dir=args.profile) for c in configs]


def _monitoring_configs(args: argparse.Namespace) -> list[RunConfig]:
    """N pairs of chatserver runs: monitoring on (its normal config), off (the unmonitored
    variant), on, off, ...; all in the placement a single chatserver run would have."""
    (on,) = _main_configs(args, args.scenario, "")
    off_kind = f"{on.kind}:{UNMONITORED}"
    return [dataclasses.replace(on, label=monitoring_label(monitored, pair),
                                kind=on.kind if monitored else off_kind)
            for pair in range(1, args.compare_monitoring + 1) for monitored in (True, False)]


def sections(args: argparse.Namespace) -> list[Section]:
    if args.compare_monitoring:
        return [Section(args.scenario, _profiled(args, _monitoring_configs(args)), "monitoring")]
    main = _profiled(args, _main_configs(args, args.scenario, ""))
    if args.compare_processes:
        return [Section(args.scenario, main, "processes")]
    others = _comparisons(args, args.scenario, "")
    if not others:
        return [Section(args.scenario, main, "")]
    out = [Section(args.scenario, main + others, _compare(args))]
    if args.peer and args.scenario == "fanout" and not args.no_peer_capacity:
        # the issue compares sustainable deliveries/s too: measure them in the same invocation
        cap = _main_configs(args, "capacity", " capacity") + \
            _comparisons(args, "capacity", " capacity")
        out.append(Section("capacity", cap, _compare(args)))
    return out


PEER_NOTES = {"socketio": ("socketio: in-process AsyncManager",
                           "socketio: AsyncRedisManager on the same Redis"),
              "websockets": ("websockets: in-process broadcast()",
                             "websockets: in-process broadcast(), no Redis")}


def backend_note(args: argparse.Namespace, backends: Backends | None) -> str:
    peer = PEER_NOTES.get(args.peer or "")
    if backends is None:
        return "SQLite store file and in-process broker" + (f" ({peer[0]})" if peer else "")
    return f"PostgreSQL + Redis (throwaway, {backends.placement()})" + \
        (f"; {peer[1]}" if peer else "")
