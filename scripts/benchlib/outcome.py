"""Each section's ratios, its table, and the issues' targets checked against the numbers.

A section compares its first run (chatserver) with each of the others in turn: the ratios are
chatserver / other, one set per other run. Targets (same machine, one invocation):
- peer socketio (issue 3): chatserver >= 5x socketio's sustainable deliveries/s, and p99 <= 1/10
  of socketio's at 1,000 members x 20 msgs/s;
- calibration (issue 5): p99 <= 2x the calibration server's at 1,000 members x 100 msgs/s, and
  server CPU per delivery <= 1.2x its own at 1,000 x 50 msgs/s, below saturation;
- peer websockets (issue 5): server CPU per delivery <= 2/3 of the `broadcast()` server's at
  1,000 x 50 msgs/s, below saturation;
  a fanout run checks them at its own load (the line says which); a capacity run at its steps
  of 100 and 50 msgs/s, when both runs have them (`--start-rate 12.5`);
- processes: the largest process count >= 1.6x the smallest's sustainable deliveries/s;
- crossinstance: cross-instance p50 - same-instance p50 < 2 ms;
- monitoring (issue 5): the loop-lag monitor and metrics cost < 2 % of throughput, on vs off in
  the same invocation: median server CPU per delivery of the "on" runs over the "off" runs' (a
  core's throughput is 1 / CPU per delivery), with each on/off pair's own figure for the spread;
- stream and storm (issue 4): in `report_resilience`.
"""

from __future__ import annotations

import argparse
import statistics

from . import report
from .plan import Section, is_unmonitored
from .report import Run
from .report_capacity import difference, render_capacity, render_crossinstance
from .report_resilience import render_resilience
from .stats import ratio

PEER_THROUGHPUT_TARGET = 5.0
PEER_P99_TARGET = 0.1
PROCESSES_TARGET = 1.6
CROSS_P50_TARGET_MS = 2.0
MONITORING_COST_TARGET = 0.02  # of throughput: CPU per delivery on / off - 1
MONITORING_BASE = "monitoring off"  # the key of the monitoring section's figures
CALIBRATION_P99_TARGET = 2.0
CALIBRATION_CPU_TARGET = 1.2
WEBSOCKETS_CPU_TARGET = 2 / 3
ISSUE5_P99_RATE = 100.0  # msgs/s into 1,000 members: the p99 target's load
ISSUE5_CPU_RATE = 50.0  # ... and the CPU targets' load
# server CPU % of its core at which a run counts as saturated: its CPU per delivery is then
# not the "below saturation" figure issue 5's CPU targets ask for
SATURATED_PCT = 90.0

Ratios = dict[str, float | None]
Pair = tuple[str, str, str, str]  # main label, base label, base role, base server kind


def pairs(section: Section, ok: dict[str, Run]) -> list[Pair]:
    """(main, base, role, kind) for each ratio the section reports: main / base.

    processes: the most processes, measured spread over the cores (not the one-core run),
    against the first (fewest) processes, once every planned run succeeded. Comparisons:
    chatserver against each other run that succeeded.
    """
    labels = list(ok)
    if section.compare == "processes":
        if len(labels) < 2 or len(ok) != len(section.configs):
            return []
        spread = [k for k in labels[1:] if ok[k].get("cpu_share") != "one-core"]
        return [((spread or labels[1:])[-1], labels[0], "processes", "chatserver")]
    main = section.configs[0].label
    if main not in ok:
        return []
    return [(main, label, role, kind) for label, role, kind in section.bases() if label in ok]


def _one_core(ok: dict[str, Run]) -> str | None:
    """The label of the one-core run of a processes section, if there is one."""
    return next((k for k, r in ok.items() if r.get("cpu_share") == "one-core"), None)


def capacity_ratios(main: Run, base: Run) -> Ratios:
    def p99(r: Run) -> float | None:
        step = r.get("sustainable_step")
        return None if step is None else float(r["steps"][step]["latency_ms"]["p99"])

    return {
        "sustainable_deliveries_per_s": ratio(main["sustainable_deliveries_per_s"],
                                              base["sustainable_deliveries_per_s"]),
        "p99_at_sustainable": ratio(p99(main), p99(base)),
        "cpu_per_delivery": ratio(main.get("server_cpu_per_delivery_us"),
                                  base.get("server_cpu_per_delivery_us")),
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _cost(on: float | None, off: float | None) -> float | None:
    r = ratio(on, off)
    return None if r is None else r - 1.0


def monitoring_figures(section: Section, ok: dict[str, Run]) -> Ratios:
    """On vs off: the medians of server CPU per delivery and of achieved deliveries/s over the
    runs that succeeded, cost = median on / median off - 1, and each pair's own cost
    (`cost_pair_<i>`: run i on / run i off - 1, None when either failed), in run order."""
    on = [c.label for c in section.configs if not is_unmonitored(c)]
    off = [c.label for c in section.configs if is_unmonitored(c)]

    def medians(labels: list[str], key: str) -> float | None:
        return _median([ok[k].get(key) for k in labels if k in ok])

    cpu_on = medians(on, "server_cpu_per_delivery_us")
    cpu_off = medians(off, "server_cpu_per_delivery_us")
    rate_on = medians(on, "achieved_deliveries_per_s")
    rate_off = medians(off, "achieved_deliveries_per_s")
    figures: Ratios = {
        "cpu_per_delivery_us_on": cpu_on, "cpu_per_delivery_us_off": cpu_off,
        "runs_on": float(sum(k in ok for k in on)), "runs_off": float(sum(k in ok for k in off)),
        "cpu_per_delivery": ratio(cpu_on, cpu_off), "cost": _cost(cpu_on, cpu_off),
        "deliveries_per_s_on": rate_on, "deliveries_per_s_off": rate_off,
        "deliveries_per_s": ratio(rate_on, rate_off),
    }
    for i, (a, b) in enumerate(zip(on, off, strict=False), start=1):
        cpu = [ok[k].get("server_cpu_per_delivery_us") if k in ok else None for k in (a, b)]
        figures[f"cost_pair_{i}"] = _cost(cpu[0], cpu[1])
    return figures


def pair_costs(figures: Ratios) -> list[float | None]:
    """The per-pair costs of monitoring_figures, pair 1 first."""
    return [figures[f"cost_pair_{i}"] for i in range(1, len(figures) + 1)
            if f"cost_pair_{i}" in figures]


def section_ratios(section: Section, ok: dict[str, Run]) -> dict[str, Ratios]:
    """The ratios of every pair, keyed by the base's label (empty: nothing to compare).

    A single crossinstance run reports its B - A differences, keyed by its own label; the
    monitoring section its on vs off figures (`monitoring_figures`), keyed "monitoring off"."""
    if section.compare == "monitoring":
        return {MONITORING_BASE: monitoring_figures(section, ok)} if ok else {}
    if len(ok) == 1 and next(iter(ok.values()))["scenario"] == "crossinstance":
        label, run = next(iter(ok.items()))
        return {label: {"cross_minus_same_p50_ms": difference(run, "p50"),
                        "cross_minus_same_p99_ms": difference(run, "p99")}}
    out: dict[str, Ratios] = {}
    for main_label, base_label, role, _ in pairs(section, ok):
        main, base = ok[main_label], ok[base_label]
        if main["scenario"] != "capacity":
            out[base_label] = report.ratios(main, base)
            continue
        figures = capacity_ratios(main, base)
        one_core = _one_core(ok)
        if role == "processes" and one_core is not None and one_core != main_label:
            same_core = capacity_ratios(ok[one_core], base)
            figures["one_core_deliveries_per_s"] = same_core["sustainable_deliveries_per_s"]
            figures["one_core_cpu_per_delivery"] = same_core["cpu_per_delivery"]
        out[base_label] = figures
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _unmeasurable(section: Section, ok: dict[str, Run], pair: Pair,
                  args: argparse.Namespace) -> list[str]:
    """Say so when a capacity ratio has no denominator: the base passed no step at all."""
    if section.scenario != "capacity":
        return []
    base = ok[pair[1]]
    if base["sustainable_deliveries_per_s"]:
        return []
    return [f"Target not measurable: {pair[1]} passed no step (its lowest rate tried, "
            f"{min(s['rate'] for s in base['steps']):g} msgs/s, already exceeded "
            f"p99 {args.p99_bound:g} ms or lost messages); {pair[0]} sustained "
            f"{ok[pair[0]]['sustainable_deliveries_per_s']:,.0f} deliveries/s. "
            "A looser --p99-bound measures both."]


def _saturation(figs: dict[str, Run]) -> str:
    """A caveat for a below-saturation target when a server was at its core's limit."""
    busy = [f"{k} {f['server_cpu_pct_measured']:.0f} %" for k, f in figs.items()
            if f.get("server_cpu_pct_measured", 0.0) >= SATURATED_PCT]
    if not busy:
        return ""
    return (f" (server CPU of its core: {', '.join(busy)}; at or above {SATURATED_PCT:g} % "
            "a server is saturated, so this is not the below-saturation figure the target "
            "means: lower the rate)")


def _p99_target(pair: Pair, a: Run, b: Run, where: str) -> list[str]:
    """Issue 5: chatserver's p99 within 2x the calibration server's. `a`, `b`: the two runs'
    figures (a fanout run, or a capacity step)."""
    r = ratio(a["latency_ms"]["p99"], b["latency_ms"]["p99"])
    if r is None:
        return []
    return [f"Target: p99 of {pair[0]} <= {CALIBRATION_P99_TARGET:g} x p99 of {pair[1]} "
            f"(the issue: at 1,000 members x {ISSUE5_P99_RATE:g} msgs/s; {where}): {r:.3f}, "
            f"{_verdict(r <= CALIBRATION_P99_TARGET)}"]


def _cpu_target(pair: Pair, a: Run, b: Run, where: str) -> list[str]:
    """Issue 5: server CPU per delivery at most 1.2x the calibration server's, at most 2/3 of
    the websockets peer's; below saturation."""
    bound, text = (CALIBRATION_CPU_TARGET, f"{CALIBRATION_CPU_TARGET:g}") \
        if pair[2] == "calibration" else (WEBSOCKETS_CPU_TARGET, "2/3")
    r = ratio(a.get("server_cpu_per_delivery_us"), b.get("server_cpu_per_delivery_us"))
    if r is None:
        return []
    return [f"Target: server CPU per delivery of {pair[0]} <= {text} x {pair[1]}'s "
            f"(the issue: at 1,000 members x {ISSUE5_CPU_RATE:g} msgs/s, below saturation; "
            f"{where}): {r:.3f}, {_verdict(r <= bound)}" + _saturation({pair[0]: a, pair[1]: b})]


def _step_at(run: Run, rate: float) -> Run | None:
    return next((s for s in run["steps"] if abs(s["rate"] - rate) < 1e-9), None)


def _issue5_capacity(ok: dict[str, Run], pair: Pair) -> list[str]:
    """Issue 5's targets from a capacity run: the steps at 100 (p99) and 50 msgs/s (CPU)."""
    wanted = [(ISSUE5_P99_RATE, _p99_target)] if pair[2] == "calibration" else []
    wanted.append((ISSUE5_CPU_RATE, _cpu_target))
    out = []
    for rate, target in wanted:
        a, b = _step_at(ok[pair[0]], rate), _step_at(ok[pair[1]], rate)
        if a is None or b is None:
            out.append(f"Not measured here: issue 5's target against {pair[1]} at {rate:g} "
                       f"msgs/s needs a step at that rate in both runs (--start-rate 12.5 "
                       "doubles through 50 and 100)")
            continue
        out += target(pair, a, b, f"here the {rate:g} msgs/s step x {a['members']:,} members")
    return out


def pair_targets(section: Section, ok: dict[str, Run], pair: Pair, figures: Ratios,
                 args: argparse.Namespace) -> list[str]:
    """The issues' targets that one pair of a section measures, with the measured figure."""
    main, base, role, kind = pair
    out = _unmeasurable(section, ok, pair, args)
    here = f"here {args.clients:,} members x {args.rate:g} msgs/s"
    issue5 = role == "calibration" or kind == "websockets"
    if role == "processes" and section.scenario == "capacity":
        r = figures.get("sustainable_deliveries_per_s")
        if r is not None:
            out.append(f"Target: {main} >= {PROCESSES_TARGET:g}x the sustainable "
                       f"deliveries/s of {base} at p99 <= {args.p99_bound:g} ms: "
                       f"{r:.2f}x, {_verdict(r >= PROCESSES_TARGET)}")
        same = figures.get("one_core_deliveries_per_s")
        if same is not None:
            out.append(f"Per-core efficiency (not the target): confined to CPU 0 like "
                       f"{base}, the processes deliver {same:.2f}x of it; above 1.0 means "
                       "splitting the members across processes costs no CPU, so the spread "
                       "ratio is limited by the shared second core, not by chatserver.")
    elif kind == "socketio" and section.scenario == "capacity":
        r = figures.get("sustainable_deliveries_per_s")
        if r is not None:
            out.append(f"Target: {main} >= {PEER_THROUGHPUT_TARGET:g}x the sustainable "
                       f"deliveries/s of {base}: {r:.2f}x, "
                       f"{_verdict(r >= PEER_THROUGHPUT_TARGET)}")
    elif kind == "socketio" and section.scenario == "fanout":
        r = figures.get("p99")
        if r is not None:
            out.append(f"Target: p99 of {main} <= {PEER_P99_TARGET:g} x p99 of {base} "
                       f"(the issue: at 1,000 members x 20 msgs/s; {here}): {r:.3f}, "
                       f"{_verdict(r <= PEER_P99_TARGET)}")
    elif issue5 and section.scenario == "capacity":
        out += _issue5_capacity(ok, pair)
    elif issue5 and section.scenario == "fanout":
        if role == "calibration":
            out += _p99_target(pair, ok[main], ok[base], here)
        out += _cpu_target(pair, ok[main], ok[base], here)
    return out


def monitoring_target(figures: Ratios, ok: dict[str, Run]) -> list[str]:
    """Issue 5: metrics and the loop-lag monitor cost < 2 % of throughput, on vs off."""
    cost = figures.get("cost")
    if cost is None:
        return ["Target not measurable: the loop-lag monitor and metrics cost needs server CPU "
                "per delivery of at least one run on and one run off"]
    target = f"{100 * MONITORING_COST_TARGET:g} %"
    out = [f"Target: loop-lag monitor and metrics cost < {target} of throughput (server CPU "
           "per delivery on vs off; the throughput a core allows is 1 / CPU per delivery): "
           f"{100 * cost:+.1f} %, {_verdict(cost < MONITORING_COST_TARGET)}"]
    costs = [c for c in pair_costs(figures) if c is not None]
    spread = max(costs) - min(costs) if costs else 0.0
    if spread > MONITORING_COST_TARGET:
        out.append(f"Caveat: the pairs' costs spread over {100 * spread:.1f} points, wider "
                   f"than the {target} target: the machine's noise is as large as what is "
                   "measured; more pairs (--compare-monitoring) or a quieter machine narrow it")
    busy = [f"{k} {r['server_cpu_pct_measured']:.0f} %" for k, r in ok.items()
            if r.get("server_cpu_pct_measured", 0.0) >= SATURATED_PCT]
    if busy:
        out.append(f"Caveat: server CPU of its core {', '.join(busy)}: at or above "
                   f"{SATURATED_PCT:g} % a server is saturated and falls behind the load, so "
                   "the runs may not have served the same deliveries: lower the rate")
    return out


def targets(section: Section, ok: dict[str, Run], figures: dict[str, Ratios],
            args: argparse.Namespace) -> list[str]:
    """The issues' targets that this section measures, with the measured figures."""
    if section.compare == "monitoring":
        return monitoring_target(figures.get(MONITORING_BASE, {}), ok)
    if section.scenario == "crossinstance":
        d = next(iter(figures.values()), {}).get("cross_minus_same_p50_ms")
        if d is None:
            return []
        return [f"Target: cross-instance delivery adds < {CROSS_P50_TARGET_MS:g} ms at p50 "
                f"over same-instance: +{d:.2f} ms, {_verdict(d < CROSS_P50_TARGET_MS)}"]
    out = []
    for pair in pairs(section, ok):
        if pair[1] in figures:
            out += pair_targets(section, ok, pair, figures[pair[1]], args)
    return out


def ratio_block(section: Section, ok: dict[str, Run], figures: dict[str, Ratios]) -> str:
    """The ratio lines of every pair: "- p99 latency: chatserver / calibration = 1.234";
    the monitoring section's medians and costs."""
    if section.compare == "monitoring":
        figs = figures.get(MONITORING_BASE)
        return report.monitoring_lines(figs, pair_costs(figs)) if figs else ""
    return "\n".join(report.ratio_lines(main, base, figures[base])
                     for main, base, _, _ in pairs(section, ok) if base in figures)


def render(section: Section, ok: dict[str, Run], figures: dict[str, Ratios],
           args: argparse.Namespace) -> str:
    ratios_text = ratio_block(section, ok, figures)
    if section.scenario == "capacity":
        body = render_capacity(ok)
        if ratios_text:
            body += "\n\n" + ratios_text
        body += "\n".join(["", *report.warnings(ok)])
    elif section.scenario == "crossinstance":
        body = "\n".join([render_crossinstance(ok), *report.warnings(ok)])
    elif section.scenario in ("stream", "storm"):
        body = render_resilience(ok)  # with its targets (issue 4)
    else:
        body = report.render_basic(ok, ratios_text)
    lines = targets(section, ok, figures, args)
    title = f"## {section.scenario}" + (f" ({section.compare})" if section.compare else "")
    return "\n".join([title, "", body, *(["", *lines] if lines else [])])
