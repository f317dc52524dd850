"""`--plot DIR`: PNG charts of a bench invocation, for docs/benchmarks.md next to the tables.

    python -m benchlib.plots RESULT.json DIR     # the same charts again from a --json file

One chart per section of the invocation, named after its scenario, load and targets
(`capacity-1000-chatserver-websockets.png`, `fanout-1000x100-chatserver-calibration.png`):

- capacity: latency p50 (dashed) and p99 (solid) against offered deliveries/s, one colour per
  target, every step the rate search ran (sorted by load; a failed step is an open marker),
  and the p99 bound as a line;
- fanout and crossinstance: p50 and p99 bars per target, values written on the bars.

Latency axes are logarithmic: the targets differ by up to 100x. matplotlib's Agg backend, no
display, no pyplot state: each chart is its own Figure.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
CAPACITY_SUFFIX = " capacity"  # the label suffix of the capacity runs a fanout --peer adds


def _name(label: str) -> str:
    return label[: -len(CAPACITY_SUFFIX)] if label.endswith(CAPACITY_SUFFIX) else label


def file_name(scenario: str, labels: list[str], runs: list[Doc]) -> str:
    """`<scenario>-<load>-<targets>.png`: load = members (capacity) or members x msgs/s, so
    runs of one scenario at two loads do not overwrite each other's chart."""
    first = runs[0]
    load = f"{first.get('clients', 0)}" if scenario == "capacity" else \
        f"{first.get('clients', 0)}x{first.get('rate', 0):g}"
    parts = [scenario, load, *(_name(lb) for lb in labels)]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-") + ".png"


def _subtitle(doc: Doc, runs: list[Doc]) -> str:
    machine = doc.get("machine", {})
    first = runs[0]
    who = f"{first.get('clients', '?'):,} members" if isinstance(first.get("clients"), int) \
        else ""
    rate = f" x {first['rate']:g} msgs/s" if first.get("scenario") != "capacity" \
        and isinstance(first.get("rate"), (int, float)) else ""
    return (f"{who}{rate}, {first.get('size', '?')}-byte messages; "
            f"{machine.get('nproc', '?')} CPUs, commit {machine.get('git_commit') or '?'}")


def _capacity(fig: Any, doc: Doc, labels: list[str]) -> None:
    ax = fig.add_subplot()
    runs = [doc["runs"][lb] for lb in labels]
    bound = runs[0].get("p99_bound_ms")
    for i, (label, run) in enumerate(zip(labels, runs, strict=True)):
        colour = COLOURS[i % len(COLOURS)]
        steps = sorted(run["steps"], key=lambda s: s["offered_deliveries_per_s"])
        x = [s["offered_deliveries_per_s"] for s in steps]
        for key, style in (("p99", "-"), ("p50", "--")):
            y = [max(s["latency_ms"][key], 0.01) for s in steps]
            ax.plot(x, y, style, color=colour, label=f"{_name(label)} {key}", linewidth=1.6)
            for xi, yi, s in zip(x, y, steps, strict=True):
                ax.plot([xi], [yi], "o", color=colour, markersize=4,
                        markerfacecolor=colour if s["passed"] else "white")
    if bound:
        ax.axhline(bound, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"p99 bound {bound:g} ms", (0.01, bound), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 3), fontsize=8, color="grey")
    _log_ms(ax)
    ax.set_xlabel("offered deliveries/s (members x msgs/s)")
    ax.set_ylabel("delivery latency, ms (log)")
    ax.set_title("Latency against load (open markers: step failed)\n" + _subtitle(doc, runs),
                 fontsize=10)
    ax.xaxis.set_major_formatter(_thousands())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def _log_ms(ax: Any) -> None:
    """A log latency axis labelled 1, 2, 5, 10, 20, 50 ... ms instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _fanout(fig: Any, doc: Doc, labels: list[str]) -> None:
    ax = fig.add_subplot()
    runs = [doc["runs"][lb] for lb in labels]
    width = 0.38
    for j, (key, shade) in enumerate((("p50", 0.55), ("p99", 1.0))):
        xs = [i + (j - 0.5) * width for i in range(len(runs))]
        ys = [max(r["latency_ms"][key], 0.01) for r in runs]
        bars = ax.bar(xs, ys, width, label=key, alpha=shade,
                      color=[COLOURS[i % len(COLOURS)] for i in range(len(runs))])
        ax.bar_label(bars, labels=[f"{y:,.1f}" for y in ys], fontsize=8, padding=2)
    ax.set_xticks(range(len(runs)),
                  [f"{_name(lb)}\n{r.get('achieved_deliveries_per_s', 0):,.0f}/s"
                   for lb, r in zip(labels, runs, strict=True)])
    _log_ms(ax)
    ax.set_ylabel("delivery latency, ms (log)")
    ax.set_title("Delivery latency p50 (light) and p99 per target, achieved deliveries/s "
                 "under the name\n" + _subtitle(doc, runs), fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.margins(y=0.15)


def write_all(doc: Doc, out_dir: Path) -> list[Path]:
    """One PNG per plottable section of `doc` (the --json document); returns their paths.

    A section is drawn with the runs that succeeded; ping, stream and storm are not drawn."""
    from matplotlib.figure import Figure  # the Agg canvas by default: no display needed

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for section in doc.get("sections", []):
        scenario = section["scenario"]
        labels = [lb for lb in section["labels"]
                  if lb in doc["runs"] and "error" not in doc["runs"][lb]]
        if not labels or scenario not in ("capacity", "fanout", "crossinstance"):
            continue
        fig = Figure(figsize=(8, 4.8), dpi=110, layout="constrained")
        if scenario == "capacity":
            _capacity(fig, doc, labels)
        else:
            _fanout(fig, doc, labels)
        path = out_dir / file_name(scenario, labels, [doc["runs"][lb] for lb in labels])
        fig.savefig(path, format="png")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    doc = json.loads(Path(argv[1]).read_text())
    for path in write_all(doc, Path(argv[2])):
        print(f"chart: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
