"""The servers a run can target, and how each is prepared in its temp dir before it starts.

- `chatserver`: TOML config + admin CLI (PROTOCOL section 8): user, API token, room.
- `naive`: the baseline reference server (`naive_server.py`); accepts any token.
- `firehose`: a near-free server to calibrate the generator (`firehose_server.py`).
- `custom`: `--server-cmd` with `{port}` and `{tmp}` placeholders; `--token` is used as is.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from .servers import python_module, run_cli

PINGER_USER = "pinger"
PINGER_PASSWORD = "secret-pass"
BENCH_USER = "bench"


@dataclass(frozen=True)
class Prepared:
    argv: list[str]  # the server command, not yet pinned
    token: str
    notes: list[str]  # what was done to prepare it, for the report


def chatserver_config(tmp: Path, port: int) -> str:
    """The TOML the brief prescribes: free port, temp store, no rate limit on the publisher,
    and login throttling lifted so the ping scenario's logins really verify passwords."""
    return (
        "[server]\n"
        f"port = {port}\n"
        "[store]\n"
        f'path = "{tmp / "bench.db"}"\n'
        "[limits.rate]\n"
        "per_second = 100000\n"
        "burst = 100000\n"
        "[limits.login]\n"
        "user_per_minute = 1000000\n"
        "user_burst = 100000\n"
        "address_per_minute = 1000000\n"
        "address_burst = 100000\n"
        "[log]\n"
        'level = "warning"\n'
    )


def prepare_chatserver(tmp: Path, port: int, room: str, with_pinger: bool) -> Prepared:
    cfg = tmp / "bench.toml"
    cfg.write_text(chatserver_config(tmp, port))
    cli = python_module("chatserver", "--config", str(cfg))
    notes = [" ".join(cli + ["user", "add", BENCH_USER]) + " < /dev/null"]
    run_cli(cli + ["user", "add", BENCH_USER])  # empty stdin: the CLI generates a password
    lines = [ln.strip() for ln in run_cli(cli + ["user", "token", BENCH_USER]).splitlines()]
    token = next((ln for ln in reversed(lines) if ln), "")
    if not token:
        raise RuntimeError("`chatserver user token` printed no token")
    notes.append(" ".join(cli + ["user", "token", BENCH_USER]))
    run_cli(cli + ["room", "create", room])
    notes.append(" ".join(cli + ["room", "create", room]))
    if with_pinger:
        run_cli(cli + ["user", "add", PINGER_USER], stdin=f"{PINGER_PASSWORD}\n".encode())
        add_pinger = " ".join(cli + ["user", "add", PINGER_USER])
        notes.append(f"printf '{PINGER_PASSWORD}\\n' | {add_pinger}")
    return Prepared(cli, token, notes)


def prepare_naive(tmp: Path, port: int) -> Prepared:
    argv = python_module("benchlib.naive_server", "--port", str(port), "--db",
                         str(tmp / "naive.db"), "--user", f"{PINGER_USER}:{PINGER_PASSWORD}")
    return Prepared(argv, "bench", [])


def prepare_firehose(port: int) -> Prepared:
    return Prepared(python_module("benchlib.firehose_server", "--port", str(port)), "bench", [])


def prepare_custom(template: str, tmp: Path, port: int, token: str) -> Prepared:
    argv = [part.format(port=port, tmp=tmp) for part in shlex.split(template)]
    return Prepared(argv, token, [])


def prepare(kind: str, tmp: Path, port: int, *, room: str, with_pinger: bool,
            server_cmd: str | None, token: str) -> Prepared:
    if kind == "chatserver":
        return prepare_chatserver(tmp, port, room, with_pinger)
    if kind == "naive":
        return prepare_naive(tmp, port)
    if kind == "firehose":
        return prepare_firehose(port)
    if kind == "custom" and server_cmd:
        return prepare_custom(server_cmd, tmp, port, token)
    raise ValueError(f"unknown target {kind!r}")
