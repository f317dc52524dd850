"""Each section's ratios, its table, and the issue's targets checked against the numbers.

Targets (same machine, one invocation):
- peer: chatserver >= 5x socketio's sustainable deliveries/s, and p99 <= 1/10 of socketio's
  at 1,000 members x 20 msgs/s;
- processes: the largest process count >= 1.6x the smallest's sustainable deliveries/s;
- crossinstance: cross-instance p50 - same-instance p50 < 2 ms;
- stream and storm (issue 4): in `report_resilience`.
"""

from __future__ import annotations

import argparse

from . import report
from .plan import Section
from .report import Run
from .report_capacity import difference, render_capacity, render_crossinstance
from .report_resilience import render_resilience
from .stats import ratio

PEER_THROUGHPUT_TARGET = 5.0
PEER_P99_TARGET = 0.1
PROCESSES_TARGET = 1.6
CROSS_P50_TARGET_MS = 2.0

Ratios = dict[str, float | None]


def _pair(compare: str, ok: dict[str, Run]) -> tuple[str, str] | None:
    """(main, base) labels for a section's ratio: main / base.

    processes: the most processes, measured spread over the cores (not the one-core run),
    against the first (fewest) processes.
    """
    labels = list(ok)
    if len(labels) < 2 or not compare:
        return None
    if compare == "processes":
        spread = [k for k in labels[1:] if ok[k].get("cpu_share") != "one-core"]
        return (spread or labels[1:])[-1], labels[0]
    return labels[0], labels[1]


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


def section_ratios(compare: str, ok: dict[str, Run], planned: int) -> Ratios | None:
    """None unless every planned run of the section succeeded and there is something to
    compare."""
    pair = _pair(compare, ok)
    if pair is None or len(ok) != planned:
        if len(ok) == 1 and next(iter(ok.values()))["scenario"] == "crossinstance":
            run = next(iter(ok.values()))
            return {"cross_minus_same_p50_ms": difference(run, "p50"),
                    "cross_minus_same_p99_ms": difference(run, "p99")}
        return None
    main, base = ok[pair[0]], ok[pair[1]]
    if main["scenario"] != "capacity":
        return report.ratios(main, base)
    figures = capacity_ratios(main, base)
    one_core = _one_core(ok)
    if compare == "processes" and one_core is not None and one_core != pair[0]:
        same_core = capacity_ratios(ok[one_core], base)
        figures["one_core_deliveries_per_s"] = same_core["sustainable_deliveries_per_s"]
        figures["one_core_cpu_per_delivery"] = same_core["cpu_per_delivery"]
    return figures


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _unmeasurable(section: Section, ok: dict[str, Run], pair: tuple[str, str] | None,
                  args: argparse.Namespace) -> list[str]:
    """Say so when a capacity ratio has no denominator: the base passed no step at all."""
    if section.scenario != "capacity" or pair is None:
        return []
    base = ok[pair[1]]
    if base["sustainable_deliveries_per_s"]:
        return []
    return [f"Target not measurable: {pair[1]} passed no step (its lowest rate tried, "
            f"{min(s['rate'] for s in base['steps']):g} msgs/s, already exceeded "
            f"p99 {args.p99_bound:g} ms or lost messages); {pair[0]} sustained "
            f"{ok[pair[0]]['sustainable_deliveries_per_s']:,.0f} deliveries/s. "
            "A looser --p99-bound measures both."]


def targets(section: Section, ok: dict[str, Run], figures: Ratios | None,
            args: argparse.Namespace) -> list[str]:
    """The issue's targets that this section measures, with the measured figure."""
    if not figures:
        return []
    pair = _pair(section.compare, ok)
    out = _unmeasurable(section, ok, pair, args)
    if section.scenario == "crossinstance":
        d = figures.get("cross_minus_same_p50_ms")
        if d is not None:
            out.append(f"Target: cross-instance delivery adds < {CROSS_P50_TARGET_MS:g} ms at p50 "
                       f"over same-instance: +{d:.2f} ms, {_verdict(d < CROSS_P50_TARGET_MS)}")
    elif pair and section.compare == "processes" and section.scenario == "capacity":
        r = figures.get("sustainable_deliveries_per_s")
        if r is not None:
            out.append(f"Target: {pair[0]} >= {PROCESSES_TARGET:g}x the sustainable "
                       f"deliveries/s of {pair[1]} at p99 <= {args.p99_bound:g} ms: "
                       f"{r:.2f}x, {_verdict(r >= PROCESSES_TARGET)}")
        same = figures.get("one_core_deliveries_per_s")
        if same is not None:
            out.append(f"Per-core efficiency (not the target): confined to CPU 0 like "
                       f"{pair[1]}, the processes deliver {same:.2f}x of it; above 1.0 means "
                       "splitting the members across processes costs no CPU, so the spread "
                       "ratio is limited by the shared second core, not by chatserver.")
    elif pair and section.compare == "peer" and section.scenario == "capacity":
        r = figures.get("sustainable_deliveries_per_s")
        if r is not None:
            out.append(f"Target: {pair[0]} >= {PEER_THROUGHPUT_TARGET:g}x the sustainable "
                       f"deliveries/s of {pair[1]}: {r:.2f}x, "
                       f"{_verdict(r >= PEER_THROUGHPUT_TARGET)}")
    elif pair and section.compare == "peer" and section.scenario == "fanout":
        r = figures.get("p99")
        load = f"{args.clients:,} members x {args.rate:g} msgs/s"
        if r is not None:
            out.append(f"Target: p99 of {pair[0]} <= {PEER_P99_TARGET:g} x p99 of {pair[1]} "
                       f"(the issue: at 1,000 members x 20 msgs/s; here {load}): {r:.3f}, "
                       f"{_verdict(r <= PEER_P99_TARGET)}")
    return out


def render(section: Section, ok: dict[str, Run], figures: Ratios | None,
           args: argparse.Namespace) -> str:
    if section.scenario == "capacity":
        body = render_capacity(ok)
        pair = _pair(section.compare, ok)
        if figures and pair:
            body += "\n\n" + report.ratio_lines(pair[0], pair[1], figures)
        body += "\n".join(["", *report.warnings(ok)])
    elif section.scenario == "crossinstance":
        body = "\n".join([render_crossinstance(ok), *report.warnings(ok)])
    elif section.scenario in ("stream", "storm"):
        body = render_resilience(ok)  # with its targets (issue 4)
    else:
        body = report.render_basic(ok, figures, section.compare)
    lines = targets(section, ok, figures, args)
    title = f"## {section.scenario}" + (f" ({section.compare})" if section.compare else "")
    return "\n".join([title, "", body, *(["", *lines] if lines else [])])

