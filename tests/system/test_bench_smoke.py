"""Smoke tests of the benchmark harness: tiny runs of every scenario and target, end to end.

Each run is small (20 members, a few seconds) so each test stays under a minute; the numbers
are not checked, only that the harness produces complete, loss-free results (and its charts
and profiles). The postgres-redis runs
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

from tests.benchlib_import import benchlib

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
TINY = ["--clients", "20", "--rate", "20", "--duration", "1.5", "--warmup", "0.5", "--drain", "5",
        "--startup-timeout", "20"]
# A loose p99 bound: these check the harness, and the suite runs on two cores shared with
# other tests, where 20 members x 40 msgs/s can still see a 100 ms hiccup.
TINY_CAPACITY = ["--max-rate", "40", "--step-duration", "0.5", "--step-warmup", "0.3",
                 "--step-min-messages", "5", "--refine", "0", "--p99-bound", "3000"]

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
    assert run["connected"] == clients, (label, run.get("connect_errors"))
    assert run["acked"] == run["sent"] > 0
    assert run["lost"] == run["duplicates"] == run["out_of_order"] == 0
    assert run["expected_deliveries"] == clients * run["acked"]


def assert_capacity_clean(label: str, run: dict[str, Any]) -> None:
    assert CAPACITY_KEYS <= run.keys(), f"{label}: missing {CAPACITY_KEYS - run.keys()}"
    assert run["connected"] == 20
    assert run["steps"], label
    # 20 members x 40 msgs/s is far below any server's capacity: nothing is lost, doubled or
    # refused, and every step passes — except that on two cores shared with the browser
    # tests' chromium a 0.5 s step can miss on timing alone (p99, keeping up); those verdicts
    # are the benchmark's, which runs on a quiet machine. The harness must still say why.
    for step in run["steps"]:
        assert step["lost"] == step["duplicates"] == step["out_of_order"] == 0, (label, step)
        assert not step["send_errors"] and not step["closed_by_server"], (label, step)
        assert step["passed"] == (not step["failed_because"]), (label, step)
        timing = ("p99 ", "fell behind", "not drained")
        assert all(why.startswith(timing) for why in step["failed_because"]), (label, step)
    if all(step["passed"] for step in run["steps"]):
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5_000, (path, len(data))  # a chart, not an empty canvas


@pytest.mark.timeout(60)
def test_websockets_peer_fanout_and_capacity_with_charts(tmp_path: Path) -> None:
    """--peer websockets: the websockets library's broadcast() server speaks chatserver's
    protocol subset and loses nothing; --plot draws the fanout bars and the capacity lines."""
    charts = tmp_path / "charts"
    stdout, doc = bench(tmp_path, "--scenario", "fanout", *TINY, "--peer", "websockets",
                        *TINY_CAPACITY, "--plot", str(charts), timeout=55)
    assert set(doc["runs"]) == {"chatserver", "websockets", "chatserver capacity",
                                "websockets capacity"}
    for label in ("chatserver", "websockets"):
        assert_fanout_clean(label, doc["runs"][label])
    instances = doc["runs"]["websockets"]["members_per_instance"]  # from its hello frames
    assert len(instances) == 1 and next(iter(instances)).startswith("websockets-")
    for label in ("chatserver capacity", "websockets capacity"):
        assert_capacity_clean(label, doc["runs"][label])
    assert [s["compare"] for s in doc["sections"]] == ["peer", "peer"]
    assert "- server CPU per delivery: chatserver / websockets = " in stdout
    assert "Target: server CPU per delivery of chatserver <= 2/3 x websockets's" in stdout
    pngs = {p.name for p in charts.glob("*.png")}
    assert pngs == {"fanout-20x20-chatserver-websockets.png",
                    "capacity-20-chatserver-websockets.png"}
    for name in pngs:
        assert_png(charts / name)
        assert f"chart: {charts / name}" in stdout


@pytest.mark.timeout(60)
def test_calibrate_adds_the_calibration_server_and_its_ratios(tmp_path: Path) -> None:
    """--calibrate runs the calibration server (one pre-built frame per member) next to
    chatserver and prints chatserver's p99 and server CPU per delivery relative to it."""
    stdout, doc = bench(tmp_path, "--scenario", "fanout", *TINY, "--calibrate", timeout=55)
    assert set(doc["runs"]) == {"chatserver", "calibration"}
    for label, run in doc["runs"].items():
        assert_fanout_clean(label, run)
    assert "benchlib.firehose_server" in " ".join(doc["runs"]["calibration"]["server_argv"])
    assert doc["sections"][0]["compare"] == "calibration"
    assert {"p99", "cpu_per_delivery"} <= doc["ratios"].keys()
    assert "- p99 latency: chatserver / calibration = " in stdout
    assert "- server CPU per delivery: chatserver / calibration = " in stdout
    assert "Target: p99 of chatserver <= 2 x p99 of calibration" in stdout
    assert "Target: server CPU per delivery of chatserver <= 1.2 x calibration's" in stdout


@pytest.mark.timeout(60)
def test_chatserver_src_runs_chatserver_from_another_tree(tmp_path: Path) -> None:
    """--chatserver-src DIR runs the server and its admin CLI from DIR (an older commit's
    tree), not from the installed checkout; the header names it."""
    src = tmp_path / "src"
    src.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD", "chatserver", "workers"], cwd=ROOT,
                             check=True, capture_output=True, timeout=30).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True, timeout=30)
    marker = tmp_path / "ran-from-src"
    with open(src / "chatserver" / "cli.py", "a") as f:  # the admin CLI and the server
        f.write(f"\nimport pathlib as _p\n_p.Path({str(marker)!r}).write_text('yes')\n")
    stdout, doc = bench(tmp_path, "--scenario", "fanout", *TINY, "--chatserver-src", str(src),
                        timeout=55)
    assert_fanout_clean("chatserver", doc["runs"]["chatserver"])
    assert marker.read_text() == "yes"
    assert f"chatserver from {src}: commit " in stdout
    assert doc["machine"]["chatserver_src"]["path"] == str(src)


def pyspy_cannot_attach() -> str | None:
    """Why py-spy cannot sample a process here (no binary, no ptrace permission), or None."""
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        found = shutil.which("py-spy")
        if found is None:
            return "py-spy is not installed (it comes with the bench extra)"
        exe = Path(found)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        done = subprocess.run([str(exe), "dump", "--pid", str(child.pid)], check=False,
                              capture_output=True, text=True, timeout=20)
    finally:
        child.kill()
        child.wait()
    if done.returncode != 0:
        return (f"py-spy dump of a child failed (exit {done.returncode}; ptrace needs root or "
                f"CAP_SYS_PTRACE): {(done.stderr or done.stdout).strip()[-300:]}")
    return None


@pytest.mark.timeout(60)
def test_profile_summarizes_chatserver_functions(tmp_path: Path) -> None:
    """--profile samples chatserver's server process with py-spy over the measured window and
    writes (and prints) its top functions by own and inclusive time."""
    why = pyspy_cannot_attach()
    if why:
        pytest.skip(why)
    prof = tmp_path / "prof"
    stdout, doc = bench(tmp_path, "--scenario", "fanout", *TINY, "--profile", str(prof),
                        timeout=55)
    profile = doc["runs"]["chatserver"]["profile"]
    assert "error" not in profile, profile
    assert profile["samples"] > 0 and profile["main_thread_samples"] > 0
    summary = (prof / "fanout-chatserver.profile.txt").read_text()
    assert summary == profile["summary"]
    assert "top 20 functions by own time" in summary
    assert "top 20 functions by inclusive time" in summary
    assert "(chatserver/" in summary  # a chatserver function, e.g. "on_send (chatserver/...)"
    assert (prof / "fanout-chatserver.pyspy-raw.txt").stat().st_size > 0
    assert "## profile of chatserver" in stdout


def test_issue5_targets_from_capacity_steps() -> None:
    """A capacity run checks issue 5's targets at its 100 msgs/s step (p99 vs calibration) and
    its 50 msgs/s step (CPU per delivery), and says when a run has no step at that rate."""
    outcome = benchlib("outcome")

    def step(rate: float, p99: float, cpu_us: float, cpu_pct: float) -> dict[str, Any]:
        return {"rate": rate, "members": 1000, "latency_ms": {"p99": p99},
                "server_cpu_per_delivery_us": cpu_us, "server_cpu_pct_measured": cpu_pct}

    ok = {"chatserver": {"steps": [step(50, 20, 3.0, 40), step(100, 40, 2.5, 60)]},
          "calibration": {"steps": [step(50, 10, 2.6, 30), step(100, 25, 2.4, 50)]},
          "websockets": {"steps": [step(50, 300, 6.0, 95)]}}
    calib = outcome._issue5_capacity(ok, ("chatserver", "calibration", "calibration",
                                          "firehose"))
    assert calib[0].startswith("Target: p99 of chatserver <= 2 x p99 of calibration")
    assert "100 msgs/s step x 1,000 members): 1.600, met" in calib[0]
    assert "50 msgs/s step x 1,000 members): 1.154, met" in calib[1]
    peer = outcome._issue5_capacity(ok, ("chatserver", "websockets", "peer", "websockets"))
    assert len(peer) == 1 and "<= 2/3 x websockets's" in peer[0] and "0.500, met" in peer[0]
    assert "websockets 95 %" in peer[0]  # saturated: not the figure the target means
    ok["calibration"]["steps"] = ok["calibration"]["steps"][:1]
    missing = outcome._issue5_capacity(ok, ("chatserver", "calibration", "calibration",
                                            "firehose"))
    assert missing[0].startswith("Not measured here") and "100 msgs/s" in missing[0]


def test_profile_summary_folds_collapsed_stacks() -> None:
    """py-spy's raw lines fold into own time (innermost frame) and inclusive time (anywhere on
    the stack, once per sample), per thread and for all threads."""
    pyspy = benchlib("pyspy")
    raw = ["thread (1): MainThread;run (a.py:1);fanout (hub.py:5);write (outbox.py:9) 6",
           "thread (1): MainThread;run (a.py:1);fanout (hub.py:5) 3",
           "thread (1): MainThread;run (a.py:1);f (r.py:2);f (r.py:2) 1",
           "thread (2): sqlite-writer;commit (db.py:3) 10",
           "not a sample line"]
    profs = pyspy.collapse(raw)
    main = profs.threads["MainThread"]
    assert main.samples == 10 and profs.total.samples == 20
    assert main.own == {"write (outbox.py:9)": 6, "fanout (hub.py:5)": 3, "f (r.py:2)": 1}
    assert main.inclusive["fanout (hub.py:5)"] == 9 and main.inclusive["f (r.py:2)"] == 1
    assert main.inclusive["run (a.py:1)"] == 10
    text = pyspy.summarize(profs, label="x", pid=1, window_s=1.0)
    assert "MainThread 10 (10.0 %)" in text and "sqlite-writer 10 (10.0 %)" in text
    assert "  60.0   0.06   60.0  write (outbox.py:9)" in text
    assert "not listed: 1 frames from run (a.py:1)" in text


@pytest.mark.timeout(130)
def test_postgres_redis_processes_and_crossinstance(tmp_path: Path) -> None:
    """--backend postgres-redis: 1 vs 2 processes (capacity), then two instances (A/B).

    The timeouts only catch a hang: the two runs take 30-55 s together on a loaded 2-core
    machine (the capacity one took over 40 s in a full suite on a slow day)."""
    missing = services_missing()
    if missing:
        pytest.skip(f"no throwaway PostgreSQL/Redis: {missing}")
    stdout, doc = bench(tmp_path, "--scenario", "capacity", "--backend", "postgres-redis",
                        "--compare-processes", "1,2", "--cpu-share", "spread",
                        "--clients", "20", "--drain", "5", *TINY_CAPACITY, timeout=70)
    assert set(doc["runs"]) == {"chatserver x1", "chatserver x2 spread"}
    for label, run in doc["runs"].items():
        assert_capacity_clean(label, run)
        assert 'backend = "postgres"' in run["config"][0]
        assert 'backend = "redis"' in run["config"][0]
    assert "processes = 2" in doc["runs"]["chatserver x2 spread"]["config"][0]
    assert len(doc["runs"]["chatserver x2 spread"]["members_per_instance"]) == 2
    assert "PostgreSQL + Redis (throwaway" in stdout

    stdout, doc = bench(tmp_path, "--scenario", "crossinstance", "--backend", "postgres-redis",
                        *TINY, timeout=50)
    run = doc["runs"]["chatserver"]
    assert_fanout_clean("crossinstance", run)
    assert [g["members"] for g in run["groups"]] == [10, 10]
    assert len(run["members_per_instance"]) == 2  # really two instances
    assert doc["ratios"]["cross_minus_same_p50_ms"] is not None
    assert "Target: cross-instance delivery adds" in stdout


@pytest.mark.timeout(60)
def test_small_stream_reaches_fast_and_throttled_readers(tmp_path: Path) -> None:
    """A 2.5 s stream at 500 deltas/s into 30 readers, 5 of them throttled to 20 KB/s: every
    reader gets the whole text in order and the stored message that ends it."""
    stdout, doc = bench(tmp_path, "--scenario", "stream", "--clients", "30", "--throttled", "5",
                        "--duration", "2", "--warmup", "0.5", "--drain", "20",
                        "--startup-timeout", "20", timeout=55)
    run = doc["runs"]["chatserver"]
    assert run["connected"] == 30 and run["rate"] == 500
    assert run["deltas_sent"] > 1000 and run["stream_errors"] == {}
    assert LATENCY_KEYS <= run["fast_latency_ms"].keys() and run["fast_latency_ms"]["count"] > 0
    for group, readers in (("fast", 25), ("slow", 5)):
        figures = run[group]
        assert figures["readers"] == readers
        assert figures["complete_text"] == figures["got_end"] == figures["end_text_matches"] \
            == readers, figures
        assert figures["closed"] == {}
    assert run["fast"]["delta_frames_min"] == run["deltas_sent"]  # fast: one frame per delta
    assert run["throttled_read_bytes_per_s"] < 25_000  # the token bucket held them to ~20 KB/s
    assert run["server_peak_rss_mb"] > 0
    assert "| fast delta latency p99 ms |" in stdout
    assert "Target: every throttled reader gets the complete text (and the end): 5/5" in stdout
    assert "Target: server RSS < 300 MB" in stdout


@pytest.mark.timeout(60)
def test_small_storm_resumes_every_client_after_a_restart(tmp_path: Path) -> None:
    """100 clients (one user each) see 1001 at a restart, reconnect within 1 s of the server
    being back, and resume with every missed message, none twice; loop lag comes from
    /metrics."""
    stdout, doc = bench(tmp_path, "--scenario", "storm", "--clients", "100",
                        "--storm-give-up", "20", "--startup-timeout", "20", timeout=55)
    run = doc["runs"]["chatserver"]
    assert run["connected"] == 100 and run["received_before"]
    assert run["close_codes_at_restart"] == {"1001": 100}
    assert run["server_exit_status_at_restart"] == 0 and run["down_s"] > 0
    assert run["missed_per_client"] == run["messages_after"] > 0
    assert run["resumed"] == run["resumed_within_target"] == 100, run["failures"]
    assert run["failed"] == run["duplicates"] == run["out_of_order"] == 0
    assert run["statuses"]["101"] >= 100
    assert run["loop_lag_samples"] > 0 and run["loop_lag_p99_bound_ms"] is not None
    assert "benchlib.restarter" in " ".join(run["server_argv"])
    assert "Target: all 100 clients back and resumed within 15 s" in stdout
    assert "Target: event-loop lag p99 < 100 ms during the storm" in stdout


def test_loop_lag_percentile_from_two_scrapes() -> None:
    """The storm's loop-lag p99: bucket deltas between two scrapes, reported as the bound of
    the bucket the 99th percentile falls in."""
    promtext = benchlib("promtext")

    def scrape(counts: list[int]) -> str:
        bounds = ["0.01", "0.05", "0.1", "0.25", "+Inf"]
        return "\n".join(["# TYPE chat_event_loop_lag_seconds histogram"] + [
            f'chat_event_loop_lag_seconds_bucket{{le="{le}"}} {n}.0'
            for le, n in zip(bounds, counts, strict=True)])

    lag = "chat_event_loop_lag_seconds"
    before = promtext.buckets(promtext.parse(scrape([5, 5, 5, 5, 5])), lag)
    after = promtext.buckets(promtext.parse(scrape([90, 103, 104, 105, 105])), lag)
    storm = promtext.delta(after, before)  # 100 samples: 85 <= 10 ms, 13 <= 50, 1 <= 100, 1 <= 250
    assert promtext.percentile_bound(storm, 50) == 0.01
    assert promtext.percentile_bound(storm, 99) == 0.1
    assert promtext.highest_bound(storm) == 0.25
    assert promtext.percentile_bound(promtext.delta(before, before), 99) is None
    labelled = promtext.parse('chat_overload_shed_total{what="connections"} 7.0')
    assert promtext.value(labelled, "chat_overload_shed_total", what="connections") == 7.0


def test_rate_search_doubles_then_bisects() -> None:
    """The capacity scenario's step search, on a server that passes up to 100 msgs/s."""
    RateSearch = benchlib("ratesearch").RateSearch  # noqa: N806 - a class, named as such
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
