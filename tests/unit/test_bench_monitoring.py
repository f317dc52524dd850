"""scripts/bench --compare-monitoring without running a server: which runs it plans, the
config of the "off" variant, and the arithmetic of its cost and target."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

import chatserver.config
from chatserver.config import parse_config
from tests.benchlib_import import benchlib

ROOT = Path(__file__).resolve().parents[2]


cli = benchlib("cli")
outcome = benchlib("outcome")
plan = benchlib("plan")
targets = benchlib("targets")


def test_pairs_alternate_on_and_off_in_one_section() -> None:
    args = cli.parse_args(["--compare-monitoring", "3", "--clients", "50", "--rate", "20"])
    (section,) = plan.sections(args)
    assert section.scenario == "fanout" and section.compare == "monitoring"
    assert [c.label for c in section.configs] == [
        "monitoring on #1", "monitoring off #1", "monitoring on #2", "monitoring off #2",
        "monitoring on #3", "monitoring off #3"]
    assert [c.kind for c in section.configs] == ["chatserver", "chatserver:unmonitored"] * 3
    assert [plan.is_unmonitored(c) for c in section.configs] == [False, True] * 3
    assert len({c.placement for c in section.configs}) == 1  # the same CPUs, on and off
    assert {c.spec["rate"] for c in section.configs} == {20}
    assert section.bases() == []  # outcome.monitoring_figures pairs them, not the ratios


def test_without_the_flag_nothing_changes() -> None:
    (section,) = plan.sections(cli.parse_args(["--clients", "50"]))
    assert [c.label for c in section.configs] == ["chatserver"] and section.compare == ""


@pytest.mark.parametrize(("flags", "message"), [
    (["--scenario", "capacity"], "(--scenario fanout)"),
    (["--scenario", "ping"], "(--scenario fanout)"),
    (["--baseline"], "drop --baseline/--peer/--calibrate/--compare-processes"),
    (["--peer", "websockets"], "drop --baseline/--peer/--calibrate/--compare-processes"),
    (["--calibrate"], "drop --baseline/--peer/--calibrate/--compare-processes"),
    (["--compare-processes", "1,2", "--backend", "postgres-redis"],
     "drop --baseline/--peer/--calibrate/--compare-processes"),
    (["--target", "naive"], "no --target or --server-cmd"),
    (["--server-cmd", "x {port}"], "no --target or --server-cmd"),
    (["--processes", "2", "--backend", "postgres-redis"], "choose --cpu-share"),
])
def test_rejected_combinations(flags: list[str], message: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--compare-monitoring", "2", *flags])
    assert message in capsys.readouterr().err


def test_negative_count_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--compare-monitoring", "-1"])
    assert "number of on/off pairs" in capsys.readouterr().err


def _config(monitoring: bool) -> chatserver.config.Config:
    storage = targets.Storage(Path("/tmp/bench.db"))
    text = targets.chatserver_config(8000, storage, monitoring=monitoring)
    return parse_config(tomllib.loads(text), "bench.toml")  # what the server would accept


def test_unmonitored_config_switches_metrics_and_watchdog_off() -> None:
    off, on = _config(False), _config(True)
    assert off.metrics.enabled is False and off.log.slow_callback_ms == 0
    assert off.log.level == "warning" and off.limits.rate.per_second == 100000
    assert on.metrics == chatserver.config.DEFAULT_CONFIG.metrics
    assert on.log.slow_callback_ms == chatserver.config.DEFAULT_CONFIG.log.slow_callback_ms


def test_unmonitored_config_fails_on_a_chatserver_without_the_switch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(chatserver.config, "MetricsConfig")
    with pytest.raises(RuntimeError, match=r"no \[metrics\] enabled setting"):
        _config(False)
    assert "[metrics]" not in targets.chatserver_config(
        8000, targets.Storage(Path("/tmp/bench.db")))  # "on" needs nothing new


def _run(cpu_us: float, rate: float = 50_000.0, cpu_pct: float = 40.0) -> dict[str, Any]:
    return {"scenario": "fanout", "server_cpu_per_delivery_us": cpu_us,
            "achieved_deliveries_per_s": rate, "server_cpu_pct_measured": cpu_pct}


def _section(pairs: int) -> Any:
    return plan.sections(cli.parse_args(["--compare-monitoring", str(pairs)]))[0]


def test_cost_is_the_ratio_of_the_medians_with_each_pair_alongside() -> None:
    section = _section(3)
    ok = {"monitoring on #1": _run(10.3), "monitoring off #1": _run(10.0, 49_000),
          "monitoring on #2": _run(10.1), "monitoring off #2": _run(10.2, 51_000),
          "monitoring on #3": _run(10.2), "monitoring off #3": _run(9.9, 50_000)}
    by_base = outcome.section_ratios(section, ok)
    figs = by_base["monitoring off"]
    assert figs["cpu_per_delivery_us_on"] == pytest.approx(10.2)
    assert figs["cpu_per_delivery_us_off"] == pytest.approx(10.0)
    assert figs["cost"] == pytest.approx(0.02)
    assert figs["cpu_per_delivery"] == pytest.approx(1.02)
    assert outcome.pair_costs(figs) == pytest.approx([0.03, 10.1 / 10.2 - 1, 10.2 / 9.9 - 1])
    assert figs["deliveries_per_s_on"] == 50_000 and figs["deliveries_per_s_off"] == 50_000
    assert figs["runs_on"] == figs["runs_off"] == 3

    lines = outcome.targets(section, ok, by_base, cli.parse_args([]))
    assert lines[0] == (
        "Target: loop-lag monitor and metrics cost < 2 % of throughput (server CPU per delivery "
        "on vs off; the throughput a core allows is 1 / CPU per delivery): +2.0 %, NOT met")
    assert "Caveat: the pairs' costs spread over 4.0 points" in lines[1]
    text = outcome.ratio_block(section, ok, by_base)
    assert "median: monitoring on 10.200 (3 runs), off 10.000 (3 runs)" in text
    assert "median on / median off - 1 = +2.0 %" in text
    assert "per pair (on #i / off #i - 1): #1 +3.0 %, #2 -1.0 %, #3 +3.0 %" in text
    assert "deliveries/s, median: monitoring on 50,000, off 50,000 (on / off = 1.000)" in text


def test_a_failed_run_leaves_its_pair_out_but_not_the_medians() -> None:
    section = _section(2)
    ok = {"monitoring on #1": _run(5.05), "monitoring off #1": _run(5.0),
          "monitoring on #2": _run(5.1, cpu_pct=95.0)}  # off #2 failed
    by_base = outcome.section_ratios(section, ok)
    figs = by_base["monitoring off"]
    assert figs["cost"] == pytest.approx(5.075 / 5.0 - 1)
    assert figs["runs_off"] == 1
    assert outcome.pair_costs(figs) == [pytest.approx(0.01), None]
    lines = outcome.targets(section, ok, by_base, cli.parse_args([]))
    assert lines[0].endswith(": +1.5 %, met")
    assert lines[1].startswith("Caveat: server CPU of its core monitoring on #2 95 %")
    assert "#2 -" in outcome.ratio_block(section, ok, by_base)


def test_no_off_run_is_not_measurable() -> None:
    section = _section(1)
    ok = {"monitoring on #1": _run(5.0)}
    by_base = outcome.section_ratios(section, ok)
    assert by_base["monitoring off"]["cost"] is None
    lines = outcome.targets(section, ok, by_base, cli.parse_args([]))
    assert lines[0].startswith("Target not measurable")
