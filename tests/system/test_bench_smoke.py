"""Smoke tests of the benchmark harness: tiny runs of every scenario and target, end to end.

Each run is small (20 members, a few seconds) so the file stays well under 90 s; the numbers are
not checked, only that the harness produces complete, loss-free results. The postgres-redis runs
need the throwaway-server helpers (tests/services) and Debian's binaries; without them they skip.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
TINY = ["--clients", "20", "--rate", "20", "--duration", "2", "--warmup", "1", "--drain", "5",
        "--startup-timeout", "20"]
TINY_CAPACITY = ["--max-rate", "40", "--step-duration", "0.5", "--step-warmup", "0.3",
                 "--step-min-messages", "5", "--refine", "0"]

RUN_KEYS = {
    "scenario", "target", "clients", "connected", "sent", "acked", "expected_deliveries",
    "deliveries_total", "lost", "duplicates", "out_of_order", "latency_ms",
    "offered_deliveries_per_s", "achieved_deliveries_per_s", "server_cpu_s",
    "server_cpu_per_delivery_us", "server_peak_rss_mb", "generator_cpu_pct",
}
CAPACITY_KEYS = {"scenario", "target", "connected", "steps", "sustainable_rate",
                 "sustainable_deliveries_per_s", "capped", "p99_bound_ms"}
LATENCY_KEYS = {"p50", "p90", "p99", "max"}


def bench(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """Run scripts/bench with `args`; returns its stdout and its JSON document."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    return done.stdout, doc


def assert_fanout_clean(label: str, run: dict[str, Any], clients: int = 20) -> None:
    assert RUN_KEYS <= run.keys(), f"{label}: missing {RUN_KEYS - run.keys()}"
    assert LATENCY_KEYS <= run["latency_ms"].keys()
    assert run["connected"] == clients
    assert run["acked"] == run["sent"] > 0
    assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0
    assert run["expected_deliveries"] == clients * run["acked"]


def assert_capacity_clean(label: str, run: dict[str, Any]) -> None:
    assert CAPACITY_KEYS <= run.keys(), f"{label}: missing {CAPACITY_KEYS - run.keys()}"
    assert run["connected"] == 20
    assert run["steps"], label
    # 20 members x 40 msgs/s is far below any server's capacity: every step passes
    assert all(step["passed"] and step["lost"] == 0 for step in run["steps"]), run["steps"]
    assert run["sustainable_rate"] == 40 and run["capped"]
    assert run["sustainable_deliveries_per_s"] > 0


def services_missing() -> str | None:
    """Why the postgres-redis runs cannot run here, or None."""
    for name in ("postgres", "redis"):
        if not (ROOT / "tests" / "services" / f"{name}.py").exists():
            return f"tests/services/{name}.py is missing"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed"
    spec = importlib.util.find_spec("tests.services.postgres")
    if spec is None:
        return "tests.services.postgres is not importable"
    from tests.services.postgres import PostgresBinariesMissing, find_bin_dir

    try:
        find_bin_dir()
    except PostgresBinariesMissing as exc:
        return str(exc)
    return None


@pytest.mark.timeout(60)
def test_small_fanout_against_both_servers_loses_nothing(tmp_path: Path) -> None:
    """20 clients x 20 msg/s for 2 s: every acked message reaches every member of both servers."""
    stdout, doc = bench(tmp_path, "--scenario", "fanout", *TINY, "--baseline", timeout=55)
    assert "| lost (of expected) | 0 (of " in stdout
    assert stdout.count(" 0 (of ") == 2, stdout  # both columns report zero losses

    assert {"command", "machine", "scenario", "params", "runs", "ratios"} <= doc.keys()
    assert set(doc["runs"]) == {"chatserver", "baseline"}
    for label, run in doc["runs"].items():
        assert_fanout_clean(label, run)
    assert {"p99", "deliveries_per_s", "cpu_per_delivery"} <= doc["ratios"].keys()


@pytest.mark.timeout(60)
def test_socketio_peer_fanout_and_capacity(tmp_path: Path) -> None:
    """--peer socketio speaks socket.io to the python-socketio server: fanout, then capacity."""
    stdout, doc = bench(tmp_path, "--scenario", "fanout", *TINY, "--peer", "socketio",
                        *TINY_CAPACITY, "--gc-stats", timeout=55)
    assert set(doc["runs"]) == {"chatserver", "socketio", "chatserver capacity",
                                "socketio capacity"}
    for label in ("chatserver", "socketio"):
        assert_fanout_clean(label, doc["runs"][label])
    assert doc["runs"]["socketio"]["protocol"] == "socketio"
    for run in doc["runs"].values():  # --gc-stats: one server process each, timed
        assert run["server_gc"]["processes"] == 1, run["server_gc"]
        assert run["server_gc"]["generations"]["0"]["count"] > 0
    for label in ("chatserver capacity", "socketio capacity"):
        assert_capacity_clean(label, doc["runs"][label])
    assert [s["compare"] for s in doc["sections"]] == ["peer", "peer"]
    assert doc["sections"][1]["ratios"]["sustainable_deliveries_per_s"] is not None
    assert "Target: chatserver capacity >= 5x" in stdout
    assert "Target: p99 of chatserver <= 0.1 x p99 of socketio" in stdout


@pytest.mark.timeout(75)
def test_postgres_redis_processes_and_crossinstance(tmp_path: Path) -> None:
    """--backend postgres-redis: 1 vs 2 processes (capacity), then two instances (A/B)."""
    missing = services_missing()
    if missing:
        pytest.skip(f"no throwaway PostgreSQL/Redis: {missing}")
    stdout, doc = bench(tmp_path, "--scenario", "capacity", "--backend", "postgres-redis",
                        "--compare-processes", "1,2", "--cpu-share", "spread",
                        "--clients", "20", "--drain", "5", *TINY_CAPACITY, timeout=40)
    assert set(doc["runs"]) == {"chatserver x1", "chatserver x2 spread"}
    for label, run in doc["runs"].items():
        assert_capacity_clean(label, run)
        assert 'backend = "postgres"' in run["config"][0]
        assert 'backend = "redis"' in run["config"][0]
    assert "processes = 2" in doc["runs"]["chatserver x2 spread"]["config"][0]
    assert len(doc["runs"]["chatserver x2 spread"]["members_per_instance"]) == 2
    assert "PostgreSQL + Redis (throwaway" in stdout

    stdout, doc = bench(tmp_path, "--scenario", "crossinstance", "--backend", "postgres-redis",
                        *TINY, timeout=30)
    run = doc["runs"]["chatserver"]
    assert_fanout_clean("crossinstance", run)
    assert [g["members"] for g in run["groups"]] == [10, 10]
    assert len(run["members_per_instance"]) == 2  # really two instances
    assert doc["ratios"]["cross_minus_same_p50_ms"] is not None
    assert "Target: cross-instance delivery adds" in stdout


def test_rate_search_doubles_then_bisects() -> None:
    """The capacity scenario's step search, on a server that passes up to 100 msgs/s."""
    spec = importlib.util.spec_from_file_location(
        "bench_ratesearch", ROOT / "scripts" / "benchlib" / "ratesearch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the dataclass decorator looks its module up
    spec.loader.exec_module(module)
    RateSearch = module.RateSearch  # noqa: N806 - a class, named as such
    search = RateSearch(start=10, max_rate=1000, refine=3, floor=1)
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= 100)
    assert tried == [10, 20, 40, 80, 160, 120, 100, 110]
    assert search.passed == 100 and search.failed == 110 and not search.capped

    down = RateSearch(start=10, max_rate=1000, refine=0, floor=1)
    while (rate := down.next_rate()) is not None:
        down.record(rate, rate <= 3)
    assert [r for r, _ in down.history] == [10, 5, 2.5] and down.passed == 2.5
