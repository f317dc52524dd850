"""The servers a run can target, and how each is prepared in its temp dir before it starts.

- `chatserver`: TOML config + admin CLI (PROTOCOL section 8): user, API token, room. With
  `--backend postgres-redis` the TOML names a fresh PostgreSQL database and the Redis broker;
  one config file per instance (they differ only in the port), users and rooms made once.
- `socketio`: the python-socketio peer (`socketio_server.py`), with AsyncRedisManager when
  there is a Redis; speaks socket.io, not chatserver's protocol.
- `websockets`: the `websockets` library's peer (`websockets_server.py`): `broadcast()` fan-out,
  in-process only; speaks chatserver's protocol subset, so the generator's chatserver dialect.
- `naive`: the baseline reference server (`naive_server.py`); accepts any token.
- `firehose`: the calibration server (`firehose_server.py`): one pre-built frame written per
  member, nothing else; the physical-limit reference of `--calibrate` and `--target firehose`.
- `custom`: `--server-cmd` with `{port}` and `{tmp}` placeholders; `--token` is used as is.

Scenarios that need more than the common chatserver setup name a variant in the kind
(`chatserver:<variant>`, see `variant_kind`): `stream` raises the message size limits so the
whole stream fits in its stored message; `storm:<n>` makes n users with API tokens (one per
client) and runs the server under `restarter.py`, so the generator can restart it;
`unmonitored` (`--compare-monitoring`) switches off chatserver's metrics (`[metrics] enabled =
false`: no /metrics, no delivery-latency or loop-lag observations) and its stall watchdog
(`[log] slow_callback_ms = 0`), to measure what they cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .backends import Backends
from .servers import python_module, run_cli

PINGER_USER = "pinger"
PINGER_PASSWORD = "secret-pass"
BENCH_USER = "bench"


@dataclass(frozen=True)
class Prepared:
    argvs: list[list[str]]  # the server command of each instance, not yet pinned
    token: str
    notes: list[str]  # what was done to prepare it, for the report
    protocol: str = "chatserver"  # the generator's dialect: fanout.DIALECTS
    config_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Storage:
    """Where a chatserver run keeps its messages and passes events between processes."""

    sqlite_path: Path
    dsn: str = ""  # PostgreSQL when set
    redis_url: str = ""  # Redis broker when set


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


# Every benchmark connection is the same user, so per-user and per-instance connection caps
# must be out of the way. Written only when this chatserver has the key: an unknown key stops
# start-up (exit 78), and the caps are newer than the harness.
CONNECTION_CAPS = {"connections_per_user": 1_000_000, "connections_per_instance": 1_000_000}


# The stream scenario's text is ~5 bytes per delta (10 s at 500 deltas/s: ~30 KB), over the
# default max_message_bytes (16 KiB); the delta that would pass the limit is refused, so the
# limit (and max_frame_bytes, which must be at least as large) is raised for that scenario.
STREAM_MESSAGE_BYTES = 262_144
STREAM_LIMITS = {"max_message_bytes": STREAM_MESSAGE_BYTES,
                 "max_frame_bytes": STREAM_MESSAGE_BYTES}
STORM_USER_PREFIX = "storm"
UNMONITORED = "unmonitored"  # the variant with metrics and the stall watchdog off
_NO_PASSWORD = "!"  # the storm's users never log in; no password verifies against this


def variant_kind(scenario: str, clients: int) -> str:
    """The prepare kind of chatserver for `scenario` (plain "chatserver" for most)."""
    if scenario == "stream":
        return "chatserver:stream"
    if scenario == "storm":
        return f"chatserver:storm:{clients}"
    return "chatserver"


def member_token(base: str, index: int) -> str:
    """The API token of storm user `index`, derived from the bench user's (secret) token."""
    return f"{base}.{index}"


def _limits_section(extra: dict[str, int] | None = None) -> str:
    from chatserver.config import LimitsConfig  # the installed chatserver's own keys

    known = {f.name for f in dataclasses.fields(LimitsConfig)}
    wanted = {**CONNECTION_CAPS, **(extra or {})}
    lines = [f"{k} = {v}\n" for k, v in wanted.items() if k in known]
    return "[limits]\n" + "".join(lines) if lines else ""


def _monitoring_off() -> tuple[str, str]:
    """The [log] line and the [metrics] table that switch chatserver's monitoring off.

    Raises when this chatserver (an older `--chatserver-src` tree) has no such keys: its
    monitoring cannot be switched off, and a run "off" would measure it on."""
    from chatserver import config  # the installed chatserver's own keys

    metrics = getattr(config, "MetricsConfig", None)
    missing = [key for key, cls, name in (("[metrics] enabled", metrics, "enabled"),
                                          ("[log] slow_callback_ms", config.LogConfig,
                                           "slow_callback_ms"))
               if cls is None or name not in {f.name for f in dataclasses.fields(cls)}]
    if missing:
        raise RuntimeError(f"this chatserver ({config.__file__}) has no {' or '.join(missing)} "
                           "setting: its metrics and loop-lag monitoring cannot be switched "
                           "off (an older tree? --compare-monitoring needs one that has them)")
    return "slow_callback_ms = 0\n", "[metrics]\nenabled = false\n"


def chatserver_config(port: int, storage: Storage, processes: int = 1,
                      limits: dict[str, int] | None = None, monitoring: bool = True) -> str:
    """The TOML the brief prescribes: free port, temp store, no rate limit on the publisher,
    no connection caps (one user holds every connection), and login throttling lifted so the
    ping scenario's logins really verify passwords. `limits`: more [limits] keys.
    `monitoring` False: no metrics and no stall watchdog (`_monitoring_off`)."""
    if storage.dsn:
        store = f'backend = "postgres"\ndsn = {_toml_str(storage.dsn)}\n'
    else:
        store = f"path = {_toml_str(str(storage.sqlite_path))}\n"
    broker = f'[broker]\nbackend = "redis"\nurl = {_toml_str(storage.redis_url)}\n' \
        if storage.redis_url else ""
    log_off, metrics_off = ("", "") if monitoring else _monitoring_off()
    return (
        "[server]\n"
        f"port = {port}\n"
        f"processes = {processes}\n"
        "[store]\n"
        f"{store}"
        f"{broker}"
        f"{_limits_section(limits)}"
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
        f"{log_off}"
        f"{metrics_off}"
    )


def prepare_chatserver(tmp: Path, ports: list[int], room: str, with_pinger: bool,
                       storage: Storage, processes: int, variant: str = "") -> Prepared:
    configs = []
    for i, port in enumerate(ports):
        cfg = tmp / f"bench-{i}.toml"
        limits = STREAM_LIMITS if variant == "stream" else None
        cfg.write_text(chatserver_config(port, storage, processes, limits,
                                         monitoring=variant != UNMONITORED))
        configs.append(cfg)
    argvs = [python_module("chatserver", "--config", str(cfg)) for cfg in configs]
    cli = argvs[0]  # every instance shares the store: users and rooms are made once
    notes = [" ".join(cli + ["user", "add", BENCH_USER]) + " < /dev/null"]
    run_cli(cli + ["user", "add", BENCH_USER])  # empty stdin: the CLI generates a password
    lines = [ln.strip() for ln in run_cli(cli + ["user", "token", BENCH_USER]).splitlines()]
    token = next((ln for ln in reversed(lines) if ln), "")
    if not token:
        raise RuntimeError("`chatserver user token` printed no token")
    notes.append(" ".join(cli + ["user", "token", BENCH_USER]))
    run_cli(cli + ["room", "create", room])
    notes.append(" ".join(cli + ["room", "create", room]))
    if variant == UNMONITORED:
        notes.append("monitoring off: [metrics] enabled = false, [log] slow_callback_ms = 0")
    if with_pinger:
        run_cli(cli + ["user", "add", PINGER_USER], stdin=f"{PINGER_PASSWORD}\n".encode())
        add_pinger = " ".join(cli + ["user", "add", PINGER_USER])
        notes.append(f"printf '{PINGER_PASSWORD}\\n' | {add_pinger}")
    if variant.startswith("storm:"):
        users = int(variant.split(":")[1])
        asyncio.run(_add_token_users(configs[0], users, token))
        notes.append(f"{users} users {STORM_USER_PREFIX}0.. with one API token each, written "
                     "through the store (the admin CLI would take a process per user)")
        argvs = [python_module("benchlib.restarter", "--control", str(tmp), "--", *argv)
                 for argv in argvs]
        notes.append("server run under benchlib.restarter (SIGUSR1: SIGTERM, wait, start again)")
    return Prepared(argvs, token, notes, config_files=[str(c) for c in configs])


async def _add_token_users(config_file: Path, count: int, base_token: str) -> None:
    """Users storm0..storm<count-1>, each with the API token `member_token(base_token, i)`."""
    from chatserver.app import make_store
    from chatserver.config import load_config
    from chatserver.tokens import hash_token

    store = make_store(load_config(str(config_file)).store)
    await store.open()
    try:
        for first in range(0, count, 500):  # the store's write queue is bounded
            batch = range(first, min(count, first + 500))
            users = await asyncio.gather(*(
                store.create_user(f"{STORM_USER_PREFIX}{i}", _NO_PASSWORD) for i in batch))
            await asyncio.gather(*(
                store.add_token(user.id, hash_token(member_token(base_token, i)), "api")
                for i, user in zip(batch, users, strict=True)))
    finally:
        await store.close()


def prepare_socketio(ports: list[int], redis_url: str) -> Prepared:
    argvs = [python_module("benchlib.socketio_server", "--port", str(port),
                           *(["--redis", redis_url] if redis_url else [])) for port in ports]
    manager = "AsyncRedisManager" if redis_url else "in-process AsyncManager"
    return Prepared(argvs, "", [f"python-socketio AsyncServer (aiohttp, uvloop), {manager}, "
                                "no message store"], protocol="socketio")


def prepare_websockets(ports: list[int]) -> Prepared:
    argvs = [python_module("benchlib.websockets_server", "--port", str(port)) for port in ports]
    return Prepared(argvs, "bench", ["websockets asyncio server (uvloop), broadcast() to the "
                                     "room's connections, in-process only, no message store"])


def prepare_naive(tmp: Path, port: int) -> Prepared:
    argv = python_module("benchlib.naive_server", "--port", str(port), "--db",
                         str(tmp / "naive.db"), "--user", f"{PINGER_USER}:{PINGER_PASSWORD}")
    return Prepared([argv], "bench", [])


def prepare_firehose(port: int) -> Prepared:
    return Prepared([python_module("benchlib.firehose_server", "--port", str(port))], "bench",
                    [])


def prepare_custom(template: str, tmp: Path, port: int, token: str) -> Prepared:
    argv = [part.format(port=port, tmp=tmp) for part in shlex.split(template)]
    return Prepared([argv], token, [])


def prepare(kind: str, tmp: Path, ports: list[int], *, label: str, room: str,
            with_pinger: bool, server_cmd: str | None, token: str, processes: int,
            backends: Backends | None) -> Prepared:
    """Prepare one run; several `ports` mean several instances (chatserver and the peers)."""
    redis_url = backends.redis_url if backends else ""
    kind, _, variant = kind.partition(":")
    if kind == "chatserver":
        dsn = backends.new_database(label) if backends else ""
        storage = Storage(tmp / "bench.db", dsn, redis_url)
        return prepare_chatserver(tmp, ports, room, with_pinger, storage, processes, variant)
    if kind == "socketio":
        if processes != 1:
            raise ValueError("the socketio peer runs as one process per instance")
        return prepare_socketio(ports, redis_url)
    if kind == "websockets":
        if processes != 1:
            raise ValueError("the websockets peer runs as one process per instance")
        return prepare_websockets(ports)
    if len(ports) != 1 or processes != 1:
        raise ValueError(f"target {kind!r} runs as one process")
    if kind == "naive":
        return prepare_naive(tmp, ports[0])
    if kind == "firehose":
        return prepare_firehose(ports[0])
    if kind == "custom" and server_cmd:
        return prepare_custom(server_cmd, tmp, ports[0], token)
    raise ValueError(f"unknown target {kind!r}")
