"""Smoke test of the benchmark harness: a small fanout run against chatserver and the baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"

RUN_KEYS = {
    "scenario", "target", "clients", "connected", "sent", "acked", "expected_deliveries",
    "deliveries_total", "lost", "duplicates", "out_of_order", "latency_ms",
    "offered_deliveries_per_s", "achieved_deliveries_per_s", "server_cpu_s",
    "server_cpu_per_delivery_us", "server_peak_rss_mb", "generator_cpu_pct",
}
LATENCY_KEYS = {"p50", "p90", "p99", "max"}


@pytest.mark.timeout(60)
def test_small_fanout_against_both_servers_loses_nothing(tmp_path: Path) -> None:
    """20 clients x 20 msg/s for 2 s: every acked message reaches every member of both servers."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--scenario", "fanout", "--clients", "20", "--rate", "20",
         "--duration", "2", "--warmup", "1", "--drain", "5", "--startup-timeout", "20",
         "--baseline", "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=55,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| lost (of expected) | 0 (of " in done.stdout
    assert done.stdout.count(" 0 (of ") == 2, done.stdout  # both columns report zero losses

    doc = json.loads(out.read_text())
    assert {"command", "machine", "scenario", "params", "runs", "ratios"} <= doc.keys()
    assert set(doc["runs"]) == {"chatserver", "baseline"}
    for label, run in doc["runs"].items():
        assert RUN_KEYS <= run.keys(), f"{label}: missing {RUN_KEYS - run.keys()}"
        assert LATENCY_KEYS <= run["latency_ms"].keys()
        assert run["connected"] == 20
        assert run["acked"] == run["sent"] > 0
        assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0
        assert run["expected_deliveries"] == 20 * run["acked"]
    assert {"p99", "deliveries_per_s", "cpu_per_delivery"} <= doc["ratios"].keys()
