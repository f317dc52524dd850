"""Tables of the capacity and crossinstance scenarios (Markdown, like the others)."""

from __future__ import annotations

from typing import Any

from .report import PLACEMENT_ROWS, Row, Run, _f, table

CAPACITY_METHOD = """Method (capacity): members and publisher connect once; each step publishes
open-loop at one rate for {warmup:g} s of warm-up + {duration:g} s measured (longer at low rates:
at least {min_messages} messages), then drains (at most {drain:g} s). A step passes when its p99
delivery latency (messages sent in the measured window, including any that arrived during the
drain) is at most {bound:g} ms, it kept up (achieved >= 95 % of the deliveries/s its messages
asked for), no acked message is missing at any member, every send is answered, no member was
closed, and it drained. Rates double from {start:g} msgs/s until a step fails, then {refine}
bisection steps narrow the bracket. Sustainable deliveries/s is the achieved deliveries/s of the
highest passing step. A step that fails to drain is followed by closing and reopening every
connection, so its backlog does not spill into the next step. Limits: one step per rate, so a
noisy step can end the climb early; the bracket is as fine as the bisection steps make it
(~6 % with 4); the generator is one process on CPU 1 and handles ~150,000 deliveries/s at most
(its CPU % is in each step: near 100 % it, not the server, is measured)."""


def _best(r: Run) -> dict[str, Any]:
    step = r.get("sustainable_step")
    return r["steps"][step] if step is not None else {}


def _first_fail(r: Run) -> str:
    failing = [s for s in r["steps"] if not s["passed"]]
    if not failing:
        return "none (capped at --max-rate)" if r["capped"] else "none"
    low = min(failing, key=lambda s: s["rate"])
    return f"{_f(low['rate'])} msgs/s: {'; '.join(low['failed_because'])}"


CAPACITY_ROWS: list[Row] = [
    ("clients connected", lambda r: f"{r['connected']}/{r['clients']}"),
    ("p99 bound ms", lambda r: _f(r["p99_bound_ms"])),
    ("sustainable rate msgs/s", lambda r: _f(r["sustainable_rate"])
     + (" (capped)" if r["capped"] else "")),
    ("**sustainable deliveries/s**", lambda r: _f(r["sustainable_deliveries_per_s"], 0)),
    ("latency p50 / p99 ms at that rate",
     lambda r: f"{_f(_best(r).get('latency_ms', {}).get('p50'), 2)} / "
               f"{_f(_best(r).get('latency_ms', {}).get('p99'), 2)}"),
    ("lowest failing rate", _first_fail),
    ("steps run / connection resets", lambda r: f"{len(r['steps'])} / {r['resets']}"),
    ("server CPU % (sustainable step)", lambda r: _f(r.get("server_cpu_pct_measured"))),
    ("server CPU us/delivery (sustainable step)",
     lambda r: _f(r.get("server_cpu_per_delivery_us"), 2)),
    ("generator CPU % (sustainable step)", lambda r: _f(r.get("generator_cpu_pct"))),
    *PLACEMENT_ROWS,
    ("kernel softirq CPU %", lambda r: _f(r.get("softirq_cpu_pct"))),
    ("other CPU on machine %", lambda r: _f(r.get("other_cpu_pct"))),
]


def steps_table(label: str, r: Run) -> str:
    lines = [f"{label}: steps",
             "| msgs/s | s | offered/s | achieved/s | p50 ms | p99 ms | lost | server CPU % | "
             "gen CPU % | CPU0/CPU1 % | other CPU % | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["steps"]:
        result = "pass" if s["passed"] else "FAIL: " + "; ".join(s["failed_because"])
        cpus = s.get("machine_cpu_pct", {})
        lines.append(
            f"| {_f(s['rate'])} | {_f(s['duration_s'])} | {_f(s['offered_deliveries_per_s'], 0)} | "
            f"{_f(s['achieved_deliveries_per_s'], 0)} | {_f(s['latency_ms']['p50'], 1)} | "
            f"{_f(s['latency_ms']['p99'], 1)} | {s['lost']:,} | "
            f"{_f(s.get('server_cpu_pct_measured'))} | {_f(s['generator_cpu_pct'])} | "
            f"{_f(cpus.get('cpu0'), 0)}/{_f(cpus.get('cpu1'), 0)} | "
            f"{_f(s.get('other_cpu_pct'), 0)} | {result} |")
    return "\n".join(lines)


def render_capacity(runs: dict[str, Run]) -> str:
    first = next(iter(runs.values()))
    steps = [steps_table(label, r) for label, r in runs.items()]
    method = CAPACITY_METHOD.format(
        warmup=first["step_warmup_s"], duration=first["step_duration_s"],
        min_messages=first["step_min_messages"],
        drain=first["drain_bound_s"], bound=first["p99_bound_ms"], start=first["start_rate"],
        refine=first["refine"])
    return "\n\n".join([table(runs, CAPACITY_ROWS), *steps, method])


def group(r: Run, i: int, key: str) -> float | None:
    groups = r.get("groups") or []
    if i >= len(groups):
        return None
    value: float = groups[i]["latency_ms"][key]
    return value


def copy(r: Run, i: int, key: str) -> float | None:
    """p50 of a per-message figure of group i (see fanout.group_figures)."""
    groups = r.get("groups") or []
    if i >= len(groups) or key not in groups[i]:
        return None
    value: float = groups[i][key]["p50"]
    return value


def difference(r: Run, key: str) -> float | None:
    a, b = group(r, 0, key), group(r, 1, key)
    return None if a is None or b is None else b - a


CROSS_ROWS: list[Row] = [
    ("clients connected (A / B)",
     lambda r: f"{r['connected']}/{r['clients']} ("
               + " / ".join(str(g["members"]) for g in r.get("groups", [])) + ")"),
    ("offered / achieved deliveries/s", lambda r: f"{_f(r['offered_deliveries_per_s'], 0)} / "
                                                  f"{_f(r['achieved_deliveries_per_s'], 0)}"),
    ("same instance (A) p50 / p99 ms",
     lambda r: f"{_f(group(r, 0, 'p50'), 2)} / {_f(group(r, 0, 'p99'), 2)}"),
    ("cross instance (B) p50 / p99 ms",
     lambda r: f"{_f(group(r, 1, 'p50'), 2)} / {_f(group(r, 1, 'p99'), 2)}"),
    ("**B - A at p50 ms**", lambda r: _f(difference(r, "p50"), 2)),
    ("B - A at p99 ms", lambda r: _f(difference(r, "p99"), 2)),
    ("A first / last copy of a message, p50 ms",
     lambda r: f"{_f(copy(r, 0, 'first_copy_ms'), 2)} / {_f(copy(r, 0, 'last_copy_ms'), 2)}"),
    ("B first / last copy of a message, p50 ms",
     lambda r: f"{_f(copy(r, 1, 'first_copy_ms'), 2)} / {_f(copy(r, 1, 'last_copy_ms'), 2)}"),
    ("B first copy - A last copy, p50 ms", lambda r: _f(copy(r, 1, "gap_to_first_group_ms"), 2)),
    ("ack latency p50 / p99 ms",
     lambda r: f"{_f(r['ack_latency_ms']['p50'], 2)} / {_f(r['ack_latency_ms']['p99'], 2)}"),
    ("lost (of expected)", lambda r: f"{r['lost']:,} (of {r['expected_deliveries']:,})"),
    ("duplicates / out of order", lambda r: f"{r['duplicates']} / {r['out_of_order']}"),
    ("instance CPU % A / B",
     lambda r: " / ".join(_f(x) for x in r.get("instance_cpu_pct", []))),
    ("generator CPU %", lambda r: _f(r["generator_cpu_pct"])),
    *PLACEMENT_ROWS[1:],
    ("kernel softirq CPU %", lambda r: _f(r.get("softirq_cpu_pct"))),
    ("other CPU on machine %", lambda r: _f(r.get("other_cpu_pct"))),
]


CROSS_NOTE = """Members alternate between instance A (the publisher's) and instance B; latencies are
send-to-receive at the generator. "first / last copy" are, per message, the earliest and latest
copy among that instance's members. "B first copy - A last copy" > 0 means B received the event
from Redis only after A had written the message to all of its own members: the cross-instance
cost is then A's local fan-out time plus the Redis hop, not the hop alone. Where the two
instances and the generator run is in the header; both placements share a core with something."""


CROSS_SEPARATE_NOTE = """Two runs one after the other: every member on instance A (the
publisher's), then every member on instance B; latencies are send-to-receive at the generator.
The generator reads the same number of copies per message in both, so B - A is what crossing
instances adds (Redis hop, B's decoding), not the order in which one generator process reads
two instances' copies. Lost / duplicates count both runs; CPU figures are the second run's."""


def render_crossinstance(runs: dict[str, Run]) -> str:
    separate = any(r.get("cross_members") == "separate" for r in runs.values())
    return table(runs, CROSS_ROWS) + "\n\n" + (CROSS_SEPARATE_NOTE if separate else CROSS_NOTE)
