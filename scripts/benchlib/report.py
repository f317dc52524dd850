"""The human report (Markdown tables, pasteable into docs/benchmarks.md) and the JSON document."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from .stats import ratio

Run = dict[str, Any]
Row = tuple[str, Callable[[Run], Any]]


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "")
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "packages": {name: _version(name) for name in
                     ("aiohttp", "uvloop", "chatserver", "asyncpg", "redis", "python-socketio",
                      "websockets")},
        "git_commit": _git_commit(),
        "server_code_changed": _uncommitted(),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str, cwd: str | None = None) -> str | None:
    try:  # read-only queries; None outside a repository or without commits
        out = subprocess.run(["git", *args], check=False, capture_output=True, text=True,
                             timeout=5, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit(cwd: str | None = None) -> str | None:
    return _git("rev-parse", "--short", "HEAD", cwd=cwd)


def _uncommitted(cwd: str | None = None) -> bool:
    """Whether the server's code (chatserver/, workers/) differs from the commit reported."""
    status = _git("status", "--porcelain", "--", "chatserver", "workers", cwd=cwd)
    return bool(status)


def source_info(src: str) -> dict[str, Any]:
    """--chatserver-src: where the chatserver under test comes from, and its commit."""
    return {"path": src, "git_commit": _git_commit(src), "server_code_changed": _uncommitted(src)}


def command_line() -> str:
    return shlex.join([sys.executable, *sys.argv])


def header(info: dict[str, Any], sections: Sequence[Any] = ()) -> str:
    """Command, machine, and where every process of every run is placed."""
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    changed = " (chatserver/ or workers/ has uncommitted changes)" \
        if info.get("server_code_changed") else ""
    lines = [f"$ {command_line()}",
             f"machine: {info['nproc']} CPUs ({info['cpu_model']}), Linux {info['kernel']}, "
             f"Python {info['python']}, {pkgs}, commit {info['git_commit'] or 'none'}{changed}"]
    src = info.get("chatserver_src")
    if src:
        lines.append(f"chatserver from {src['path']}: commit {src['git_commit'] or 'none'}"
                     + (" (with uncommitted changes)" if src["server_code_changed"] else ""))
    lines.append("load generator pinned to CPU 1; server on CPU 0 unless said otherwise below")
    for section in sections:
        for cfg in section.configs:
            lines.append(f"{cfg.label} ({cfg.scenario}): {cfg.placement.note}")
    return "\n".join(lines) + "\n"


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def per_instance(r: Run) -> str:
    """Members per server instance (process), as the servers reported them."""
    counts = sorted(r.get("members_per_instance", {}).values(), reverse=True)
    return " / ".join(str(c) for c in counts) if counts else "-"


def cpu_pair(r: Run) -> str:
    cpus = r.get("machine_cpu_pct", {})
    return " / ".join(_f(cpus.get(f"cpu{i}")) for i in (0, 1))


def gc_row(r: Run) -> str:
    """Full collections and their longest pause; all collections' time (whole server life)."""
    gc = r.get("server_gc")
    if not gc:
        return "-"
    gens = gc["generations"]
    total = sum(g["total_ms"] for g in gens.values())
    return (f"{gens['2']['count']} / {gens['2']['max_ms']:.1f} ms; all gens "
            f"{total:,.0f} ms")


def budget_row(r: Run) -> str:
    """Cores each process may use under --cpu-share budget, and the time its quota held it."""
    budget = r.get("cpu_budget")
    if not budget:
        return "-"
    return (f"{budget['cores_per_process']:g} x {budget['processes']} / "
            f"{budget['throttled_s']:.1f} s")


PLACEMENT_ROWS: list[Row] = [
    ("members per server process", per_instance),
    ("CPU budget cores x processes / throttled (whole run)", budget_row),
    ("server GC: full collections / max pause", gc_row),
    ("PostgreSQL + Redis CPU %",
     lambda r: _f(r.get("services_cpu_pct")) if r.get("services") else "-"),
    ("CPU 0 / CPU 1 busy %", cpu_pair),
]

FANOUT_ROWS: list[Row] = [
    ("clients connected", lambda r: f"{r['connected']}/{r['clients']}"),
    ("offered deliveries/s", lambda r: _f(r["offered_deliveries_per_s"], 0)),
    ("achieved deliveries/s", lambda r: _f(r["achieved_deliveries_per_s"], 0)),
    ("latency p50 ms", lambda r: _f(r["latency_ms"]["p50"], 2)),
    ("latency p90 ms", lambda r: _f(r["latency_ms"]["p90"], 2)),
    ("latency p99 ms", lambda r: _f(r["latency_ms"]["p99"], 2)),
    ("latency max ms", lambda r: _f(r["latency_ms"]["max"], 2)),
    ("ack latency p50 / p99 ms",
     lambda r: f"{_f(r['ack_latency_ms']['p50'], 2)} / {_f(r['ack_latency_ms']['p99'], 2)}"),
    ("sent / acked / errors / unanswered",
     lambda r: f"{r['sent']} / {r['acked']} / {sum(r['send_errors'].values())} / "
               f"{r['unanswered']}"),
    ("lost (of expected)", lambda r: f"{r['lost']:,} (of {r['expected_deliveries']:,})"),
    ("duplicates / out of order", lambda r: f"{r['duplicates']} / {r['out_of_order']}"),
    ("server CPU s (load + drain)", lambda r: _f(r.get("server_cpu_s"), 2)),
    ("server CPU % (measured)", lambda r: _f(r.get("server_cpu_pct_measured"))),
    ("server CPU us/delivery", lambda r: _f(r.get("server_cpu_per_delivery_us"), 2)),
    ("server peak RSS MB", lambda r: _f(r.get("server_peak_rss_mb"))),
    ("generator CPU %", lambda r: _f(r["generator_cpu_pct"])),
    ("publisher max lag ms", lambda r: _f(r["publisher_max_lag_ms"], 2)),
    ("drained / drain s", lambda r: f"{'yes' if r['drained'] else 'NO'} / {r['drain_s']}"),
    *PLACEMENT_ROWS,
    ("kernel softirq CPU %", lambda r: _f(r.get("softirq_cpu_pct"))),
    ("other CPU on machine %", lambda r: _f(r.get("other_cpu_pct"))),
]

PING_ROWS: list[Row] = [
    ("ping RTT p50 ms", lambda r: _f(r["ping_rtt_ms"]["p50"], 2)),
    ("ping RTT p99 ms", lambda r: _f(r["ping_rtt_ms"]["p99"], 2)),
    ("ping RTT max ms", lambda r: _f(r["ping_rtt_ms"]["max"], 2)),
    ("pings sent / unanswered", lambda r: f"{r['pings_sent']} / {r['pings_unanswered']}"),
    ("Markdown msgs/s (8 KB)", lambda r: _f(r["md_messages_per_s"])),
    ("logins/s (200)", lambda r: _f(r["logins_per_s"])),
    ("login statuses", lambda r: " ".join(f"{k}:{v}" for k, v in
                                          sorted(r["login_statuses"].items()))),
    ("login p50 ms", lambda r: _f(r["login_latency_ms"]["p50"], 1)),
    ("server CPU % (measured)", lambda r: _f(r.get("server_cpu_pct_measured"))),
    ("server peak RSS MB", lambda r: _f(r.get("server_peak_rss_mb"))),
    ("generator CPU %", lambda r: _f(r["generator_cpu_pct"])),
    ("kernel softirq CPU %", lambda r: _f(r.get("softirq_cpu_pct"))),
    ("other CPU on machine %", lambda r: _f(r.get("other_cpu_pct"))),
]

OTHER_LOAD_WARN_PCT = 15.0
PING_P99_TARGET_MS = 25.0  # the brief's target for a free event loop


def table(runs: dict[str, Run], rows: list[Row]) -> str:
    labels = list(runs)
    lines = ["| metric | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, get in rows:
        cells = [str(get(runs[k])) for k in labels]
        if all(c == "-" for c in cells):
            continue  # nothing measured in any run (e.g. GC without --gc-stats)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(main: Run, base: Run) -> dict[str, float | None]:
    """main / baseline for the three headline figures."""
    if main["scenario"] == "ping":
        return {"ping_p99": ratio(main["ping_rtt_ms"]["p99"], base["ping_rtt_ms"]["p99"]),
                "md_messages_per_s": ratio(main["md_messages_per_s"], base["md_messages_per_s"]),
                "logins_per_s": ratio(main["logins_per_s"], base["logins_per_s"])}
    return {
        "p99": ratio(main["latency_ms"]["p99"], base["latency_ms"]["p99"]),
        "deliveries_per_s": ratio(main["achieved_deliveries_per_s"],
                                  base["achieved_deliveries_per_s"]),
        "cpu_per_delivery": ratio(main.get("server_cpu_per_delivery_us"),
                                  base.get("server_cpu_per_delivery_us")),
    }


RATIO_NAMES = {"p99": "p99 latency", "deliveries_per_s": "deliveries/s",
               "cpu_per_delivery": "server CPU per delivery", "ping_p99": "ping RTT p99",
               "md_messages_per_s": "Markdown msgs/s", "logins_per_s": "logins/s",
               "sustainable_deliveries_per_s": "sustainable deliveries/s",
               "p99_at_sustainable": "p99 at the sustainable rate"}


def ratio_lines(main_label: str, base_label: str, r: dict[str, float | None]) -> str:
    return "\n".join(f"- {RATIO_NAMES[k]}: {main_label} / {base_label} = {_f(v, 3)}"
                     for k, v in r.items() if k in RATIO_NAMES)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f} %"


def monitoring_lines(figures: dict[str, float | None], costs: list[float | None]) -> str:
    """--compare-monitoring: the medians of the runs on and off, the cost, each pair's cost."""
    def runs(key: str) -> str:
        n = int(figures.get(key) or 0)
        return f"{n} run{'s' if n != 1 else ''}"

    pairs = ", ".join(f"#{i} {_pct(c)}" for i, c in enumerate(costs, start=1))
    return "\n".join([
        "- server CPU us/delivery, median: monitoring on "
        f"{_f(figures['cpu_per_delivery_us_on'], 3)} ({runs('runs_on')}), "
        f"off {_f(figures['cpu_per_delivery_us_off'], 3)}"
        f" ({runs('runs_off')})",
        f"- cost of monitoring: median on / median off - 1 = {_pct(figures['cost'])}",
        f"- per pair (on #i / off #i - 1): {pairs or '-'}",
        f"- achieved deliveries/s, median: monitoring on {_f(figures['deliveries_per_s_on'], 0)}, "
        f"off {_f(figures['deliveries_per_s_off'], 0)} (on / off = "
        f"{_f(figures['deliveries_per_s'], 3)})",
    ])


def warnings(runs: dict[str, Run]) -> list[str]:
    out = []
    for label, run in runs.items():
        other = run.get("other_cpu_pct", 0.0)
        if other > OTHER_LOAD_WARN_PCT:
            out.append(f"\nWARNING: {label}: other processes used {other:.0f}% of a core during "
                       "the measured window; on this machine that competes with the pinned "
                       "server or generator, so treat these numbers as noisy.")
        if run.get("generator_cpu_pct", 0.0) > 85.0:
            out.append(f"\nWARNING: {label}: the generator used {run['generator_cpu_pct']:.0f}% "
                       "of its core: the results may measure the generator, not the server.")
        if run.get("connect_refused"):
            out.append(f"\nWARNING: {label}: the server refused {run['connect_refused']} "
                       "upgrade(s) with 503 (its overload guard) before every client connected; "
                       "they were tried again after Retry-After. The machine was busy at the "
                       "start.")
    return out


def render_basic(runs: dict[str, Run], ratios_text: str = "") -> str:
    """fanout and ping tables, with the section's ratio lines under them."""
    first = next(iter(runs.values()))
    rows = PING_ROWS if first["scenario"] == "ping" else FANOUT_ROWS
    out = [table(runs, rows)]
    if ratios_text:
        out.append("\n" + ratios_text)
    for label, run in runs.items():
        if run["scenario"] == "ping":
            p99 = run["ping_rtt_ms"]["p99"]
            verdict = "met" if p99 < PING_P99_TARGET_MS else "NOT met"
            out.append(f"\n{label}: ping RTT p99 {p99:.1f} ms; "
                       f"target < {PING_P99_TARGET_MS:.0f} ms {verdict}")
    return "\n".join(out + warnings(runs))
