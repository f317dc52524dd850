"""Tables and target lines of issue 4's scenarios: a token stream with slow readers (stream)
and a reconnect storm after a restart (storm)."""

from __future__ import annotations

from typing import Any

from .report import Row, Run, _f, table, warnings
from .storm import LAG_P99_TARGET_MS, RESUME_TARGET_S
from .stream import FAST_P99_TARGET_MS, RSS_TARGET_MB


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _frames(g: dict[str, Any]) -> str:
    return (f"{_f(g['delta_frames_mean'], 0)} (min {g['delta_frames_min']:,}, "
            f"max {g['delta_frames_max']:,})")


def _codes(codes: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(codes.items())) or "none"


STREAM_ROWS: list[Row] = [
    ("readers connected (fast / throttled)",
     lambda r: f"{r['connected']}/{r['clients']} ({r['fast']['readers']} / "
               f"{r['slow']['readers']})"),
    ("deltas sent (measured) at deltas/s",
     lambda r: f"{r['deltas_sent']:,} ({r['deltas_measured']:,}) at {r['rate']:g}"),
    ("stream text bytes", lambda r: _f(r["text_bytes"])),
    ("fast delta latency p50 ms", lambda r: _f(r["fast_latency_ms"]["p50"], 2)),
    ("fast delta latency p90 ms", lambda r: _f(r["fast_latency_ms"]["p90"], 2)),
    ("fast delta latency p99 ms", lambda r: _f(r["fast_latency_ms"]["p99"], 2)),
    ("fast delta latency max ms", lambda r: _f(r["fast_latency_ms"]["max"], 2)),
    ("delta frames per fast reader", lambda r: _frames(r["fast"])),
    ("delta frames per throttled reader", lambda r: _frames(r["slow"])),
    ("complete text: fast / throttled",
     lambda r: f"{r['fast']['complete_text']}/{r['fast']['readers']} / "
               f"{r['slow']['complete_text']}/{r['slow']['readers']}"),
    ("got the end (stored message): fast / throttled",
     lambda r: f"{r['fast']['got_end']}/{r['fast']['readers']} / "
               f"{r['slow']['got_end']}/{r['slow']['readers']}"),
    ("throttled: last end after stream_end s",
     lambda r: _f(r["slow"]["end_after_stream_end_s"], 2)),
    ("closed by server (code:count)",
     lambda r: _codes({**r["fast"]["closed"], **{f"{k} throttled": v
                                                for k, v in r["slow"]["closed"].items()}})),
    ("stream errors", lambda r: _codes(r["stream_errors"])),
    ("streamer max lag ms", lambda r: _f(r["streamer_max_lag_ms"], 2)),
    ("server CPU % (measured)", lambda r: _f(r.get("server_cpu_pct_measured"))),
    ("server CPU us/delta frame", lambda r: _f(r.get("server_cpu_per_delivery_us"), 2)),
    ("server peak RSS MB", lambda r: _f(r.get("server_peak_rss_mb"))),
    ("generator CPU %", lambda r: _f(r["generator_cpu_pct"])),
    ("kernel softirq CPU %", lambda r: _f(r.get("softirq_cpu_pct"))),
    ("other CPU on machine %", lambda r: _f(r.get("other_cpu_pct"))),
]


def _resumed(r: Run) -> str:
    return f"{r['resumed']}/{r['clients']} ({r['resumed_within_target']} within " \
           f"{r['resume_target_s']:g} s)"


def _bound(ms: float | None) -> str:
    return "-" if ms is None else f"<= {ms:g}"


STORM_ROWS: list[Row] = [
    ("clients connected before the restart", lambda r: f"{r['connected']}/{r['clients']}"),
    ("close codes at the restart", lambda r: _codes(r["close_codes_at_restart"])),
    ("server shutdown / start / down s",
     lambda r: f"{r['shutdown_s']:.2f} / {r['start_s']:.2f} / {r['down_s']:.2f}"),
    ("missed messages per client", lambda r: str(r["missed_per_client"])),
    ("resumed (within target)", _resumed),
    ("last client resumed after s", lambda r: _f(r["last_resumed_s"], 2)),
    ("resume p50 / p99 s",
     lambda r: f"{r['resume_s']['p50'] / 1e3:.2f} / {r['resume_s']['p99'] / 1e3:.2f}"),
    ("failed (reasons)",
     lambda r: f"{r['failed']} ({_codes(r['failures'])})" if r["failed"] else "0"),
    ("connect statuses in the storm", lambda r: _codes(r["statuses"])),
    ("refused by the overload guard", lambda r: _f(r["refused_connections_overload"], 0)),
    ("duplicates / out of order", lambda r: f"{r['duplicates']} / {r['out_of_order']}"),
    ("presence frames received", lambda r: _f(r["presence_frames"])),
    ("loop lag p50 / p99 / max ms (bucket bounds)",
     lambda r: f"{_bound(r['loop_lag_p50_bound_ms'])} / {_bound(r['loop_lag_p99_bound_ms'])}"
               f" / {_bound(r['loop_lag_max_bound_ms'])}"),
    ("loop lag samples in the storm", lambda r: _f(r["loop_lag_samples"], 0)),
    ("overload level at the end", lambda r: _f(r["overload_level_after"], 0)),
    ("server CPU % (storm)", lambda r: _f(r.get("server_cpu_pct_measured"))),
    ("server peak RSS MB (incl. restarter)", lambda r: _f(r.get("server_peak_rss_mb"))),
    ("generator CPU %", lambda r: _f(r["generator_cpu_pct"])),
    ("kernel softirq CPU %", lambda r: _f(r.get("softirq_cpu_pct"))),
    ("other CPU on machine %", lambda r: _f(r.get("other_cpu_pct"))),
]


def stream_targets(label: str, r: Run) -> list[str]:
    p99 = r["fast_latency_ms"]["p99"]
    slow = r["slow"]
    complete = slow["complete_text"] == slow["readers"] == slow["got_end"]
    rss = r.get("server_peak_rss_mb")
    return [
        f"{label}: Target: fast readers' delta latency p99 < {FAST_P99_TARGET_MS:g} ms: "
        f"{p99:.2f} ms, {_verdict(p99 < FAST_P99_TARGET_MS)}",
        f"{label}: Target: every throttled reader gets the complete text (and the end): "
        f"{slow['complete_text']}/{slow['readers']} complete, {slow['got_end']} ended, "
        f"{_verdict(complete)}",
        f"{label}: Target: server RSS < {RSS_TARGET_MB:g} MB: peak {_f(rss)} MB, "
        f"{_verdict(rss is not None and rss < RSS_TARGET_MB)}",
    ]


def storm_targets(label: str, r: Run) -> list[str]:
    all_back = r["resumed_within_target"] == r["clients"]
    p99 = r["loop_lag_p99_bound_ms"]
    return [
        f"{label}: Target: all {r['clients']:,} clients back and resumed within "
        f"{RESUME_TARGET_S:g} s of the restart: {r['resumed_within_target']:,} did, the last "
        f"after {_f(r['last_resumed_s'], 2)} s, {_verdict(all_back)}",
        f"{label}: Target: event-loop lag p99 < {LAG_P99_TARGET_MS:g} ms during the storm: "
        f"in the bucket up to {_f(p99, 0)} ms of chat_event_loop_lag_seconds "
        f"({r['loop_lag_samples']:.0f} samples; a histogram only bounds it), "
        f"{_verdict(p99 is not None and p99 <= LAG_P99_TARGET_MS)}",
    ]


def render_resilience(runs: dict[str, Run]) -> str:
    """The stream or storm table (one column per run), then each run's targets."""
    first = next(iter(runs.values()))
    stream = first["scenario"] == "stream"
    out = [table(runs, STREAM_ROWS if stream else STORM_ROWS), ""]
    for label, run in runs.items():
        out += stream_targets(label, run) if stream else storm_targets(label, run)
    return "\n".join(out + warnings(runs))
