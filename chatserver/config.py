"""Configuration: read once, validated fully, then frozen.

Every key of PROTOCOL section 8 is here with its default. `load_config(path)` is the only way a
file becomes a `Config`; any problem raises `ConfigError`, whose text is one line naming the file,
the key and what was expected (the CLI prints it and exits 78, EX_CONFIG).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, NoReturn


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 1
    heartbeat: float = 20.0
    allowed_origins: tuple[str, ...] = ()
    shutdown_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: str = "sqlite"
    path: str = "chatserver.db"
    dsn: str = ""
    pool_size: int = 10  # postgres: connections per server process


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    backend: str = "memory"
    url: str = ""


@dataclass(frozen=True, slots=True)
class RateConfig:
    per_second: float = 10.0
    burst: int = 30


@dataclass(frozen=True, slots=True)
class LoginLimitsConfig:
    """Login throttling: one token bucket per username and one per client address."""

    user_per_minute: float = 10.0
    user_burst: int = 10
    address_per_minute: float = 120.0
    address_burst: int = 60


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_bytes: int = 16384
    max_frame_bytes: int = 65536
    replay_max: int = 1000
    send_queue_bytes: int = 1048576
    stream_idle: float = 30.0
    connections_per_user: int = 20  # open WebSockets per user on one instance
    connections_per_instance: int = 10000
    rooms_per_connection: int = 500
    max_file_bytes: int = 10 * 1024 * 1024  # largest upload (POST /api/rooms/{room}/files)
    rate: RateConfig = field(default_factory=RateConfig)
    login: LoginLimitsConfig = field(default_factory=LoginLimitsConfig)


@dataclass(frozen=True, slots=True)
class PoolsConfig:
    threads: int = 4  # argon2 and other blocking work
    processes: int = 1  # Markdown and other GIL-bound work; 0 renders Markdown on the threads


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"
    slow_callback_ms: int = 100  # log what held the event loop this long; 0: off


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    # false: no /metrics (404), no delivery-latency or loop-lag observations, no pool job
    # timing. For measuring what they cost; the loop-lag monitor itself keeps running (its
    # samples drive admission control), and `[log] slow_callback_ms = 0` stops the watchdog.
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class FilesConfig:
    # Uploads live here (the bytes, under random names; the database keeps the metadata).
    # Relative to the working directory like [store] path; systemd: under StateDirectory.
    dir: str = "files"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    pools: PoolsConfig = field(default_factory=PoolsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    source: str = "<defaults>"  # the file it came from, for messages


class ConfigError(Exception):
    """A bad configuration, described in one line: file, key, what is expected."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        self.source = source
        self.key = key
        self.expected = expected
        text = f"{source}: {key}: {expected}" if key else f"{source}: {expected}"
        # One line whatever a file name or an OS message contains: the CLI prints it as is.
        super().__init__(" ".join(text.splitlines()))


DEFAULT_CONFIG = Config()

# Table name -> dataclass. Keys are the dataclass fields, so adding a field adds a key.
_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "store": StoreConfig,
    "broker": BrokerConfig,
    "limits": LimitsConfig,
    "pools": PoolsConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "files": FilesConfig,
}
_SUBTABLES: dict[tuple[type[Any], str], type[Any]] = {
    (LimitsConfig, "rate"): RateConfig,
    (LimitsConfig, "login"): LoginLimitsConfig,
}

_STORE_BACKENDS = ("sqlite", "postgres")
_BROKER_BACKENDS = ("memory", "redis")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("text", "json")
# A watchdog thread that polls cannot time a stall much finer than 10 ms; past a minute the
# supervisor has long since killed the worker.
SLOW_CALLBACK_MIN_MS = 10
SLOW_CALLBACK_MAX_MS = 60_000
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_TOML_POSITION = re.compile(r"\s*\((at line \d+, column \d+|at end of document)\)\s*$")


def load_config(path: str) -> Config:
    """Read, parse and validate a TOML file; any problem is a one-line `ConfigError`."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(path, "", f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            path, "", f"not UTF-8 text (bad byte at offset {e.start}); TOML files are UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as e:
        # Python 3.11's TOMLDecodeError has no line attribute; the position ends its text.
        message = str(e)
        where = _TOML_POSITION.search(message)
        position = where.group(1).removeprefix("at ") if where else ""
        reason = message[: where.start()] if where else message
        raise ConfigError(path, position, f"invalid TOML: {reason}") from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], source: str) -> Config:
    """Validate parsed TOML (`tomllib` output) fully and return the frozen `Config`.

    Checks types first (every key known, every value of its field's type), then values, then
    the rules that tie keys together. The first problem found is raised as `ConfigError`.
    """
    sections: dict[str, Any] = {}
    for name, table in data.items():
        cls = _SECTIONS.get(name)
        if cls is None:
            if isinstance(table, dict):
                raise ConfigError(
                    source, f"[{name}]", f"unknown section; valid sections: {_section_names()}"
                )
            raise ConfigError(
                source, name, f"unknown top-level key; keys belong in sections: {_section_names()}"
            )
        sections[name] = _build(cls, table, name, source)
    config = Config(**sections, source=source)
    _check_values(config, source)
    return config


def _section_names() -> str:
    names = []
    for name, cls in _SECTIONS.items():
        names.append(f"[{name}]")
        names.extend(f"[{name}.{sub}]" for (parent, sub) in _SUBTABLES if parent is cls)
    return ", ".join(names)


def _build(cls: type[Any], table: object, where: str, source: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(source, f"[{where}]", f"expected a table, got {_describe(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = f"[{where}] {key}"
        f = fields.get(key)
        if f is None:
            raise ConfigError(source, name, f"unknown key; valid keys: {', '.join(fields)}")
        sub = _SUBTABLES.get((cls, key))
        if sub is not None:
            if not isinstance(value, dict):
                raise ConfigError(
                    source, name, f"expected a table [{where}.{key}], got {_describe(value)}"
                )
            values[key] = _build(sub, value, f"{where}.{key}", source)
        else:
            # `from __future__ import annotations` makes every field type its source text.
            values[key] = _convert(value, str(f.type), name, source)
    return cls(**values)


def _convert(value: object, kind: str, name: str, source: str) -> Any:
    # bool is a subclass of int in Python, but `port = true` is a mistake, not 1.
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, name, f"expected an integer, got {_describe(value)}")
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(source, name, f"expected a finite number, got {value}")
            return float(value)
        raise ConfigError(source, name, f"expected a number, got {_describe(value)}")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(source, name, f"expected a string, got {_describe(value)}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(source, name, f"expected true or false, got {_describe(value)}")
    if kind == "tuple[str, ...]":
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, str):
                    raise ConfigError(
                        source, name, f"expected an array of strings, it holds {_describe(item)}"
                    )
            return tuple(value)
        raise ConfigError(source, name, f"expected an array of strings, got {_describe(value)}")
    raise AssertionError(f"config field {name} has a type the loader does not know: {kind}")


def _describe(value: object) -> str:
    """Name a TOML value's type and show it briefly, on one line."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > 60:
            shown = shown[:56] + '..."'
        return f"string {shown}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.datetime):
        return f"datetime {value.isoformat()}"
    if isinstance(value, datetime.date):
        return f"date {value.isoformat()}"
    if isinstance(value, datetime.time):
        return f"time {value.isoformat()}"
    return type(value).__name__


def _check_values(config: Config, source: str) -> None:
    def fail(key: str, expected: str) -> NoReturn:
        raise ConfigError(source, key, expected)

    server, store, broker = config.server, config.store, config.broker
    limits, pools, log = config.limits, config.pools, config.log

    if not server.host or server.host != server.host.strip():
        fail(
            "[server] host",
            f"must be an address such as 127.0.0.1 or 0.0.0.0, got {json.dumps(server.host)}",
        )
    if not 1 <= server.port <= 65535:
        fail("[server] port", f"must be 1..65535, got {server.port}")
    if server.processes < 1:
        fail("[server] processes", f"must be at least 1, got {server.processes}")
    if server.heartbeat <= 0:
        fail("[server] heartbeat", f"must be more than 0 seconds, got {server.heartbeat:g}")
    if server.shutdown_timeout <= 0:
        fail(
            "[server] shutdown_timeout",
            f"must be more than 0 seconds, got {server.shutdown_timeout:g}",
        )
    for origin in server.allowed_origins:
        problem = _origin_problem(origin)
        if problem:
            fail("[server] allowed_origins", f"{json.dumps(origin)} {problem}")

    if store.backend not in _STORE_BACKENDS:
        fail(
            "[store] backend",
            f"must be {_one_of(_STORE_BACKENDS)}, got {json.dumps(store.backend)}",
        )
    if store.backend == "sqlite" and not store.path:
        fail("[store] path", 'must not be empty with [store] backend = "sqlite" (a file name)')
    if not 1 <= store.pool_size <= 1000:
        fail("[store] pool_size", f"must be 1..1000, got {store.pool_size}")
    if store.backend == "postgres" and not store.dsn.startswith(_POSTGRES_SCHEMES):
        fail(
            "[store] dsn",
            'with [store] backend = "postgres" must be a URL starting with postgresql:// or '
            f"postgres://, got {json.dumps(store.dsn)}",
        )

    if broker.backend not in _BROKER_BACKENDS:
        fail(
            "[broker] backend",
            f"must be {_one_of(_BROKER_BACKENDS)}, got {json.dumps(broker.backend)}",
        )
    if broker.backend == "redis" and not broker.url.startswith(_REDIS_SCHEMES):
        fail(
            "[broker] url",
            'with [broker] backend = "redis" must be a URL starting with redis://, rediss:// or '
            f"unix://, got {json.dumps(broker.url)}",
        )
    if server.processes > 1 and broker.backend == "memory":
        fail(
            "[server] processes",
            f"is {server.processes} but several processes share messages only through Redis: "
            'set [broker] backend = "redis"',
        )

    for key in ("max_message_bytes", "max_frame_bytes", "replay_max", "send_queue_bytes",
                "connections_per_user", "connections_per_instance", "rooms_per_connection"):
        value = getattr(limits, key)
        if value < 1:
            fail(f"[limits] {key}", f"must be a positive integer, got {value}")
    if limits.stream_idle <= 0:
        fail("[limits] stream_idle", f"must be more than 0 seconds, got {limits.stream_idle:g}")
    if limits.max_message_bytes > limits.max_frame_bytes:
        fail(
            "[limits] max_message_bytes",
            f"is {limits.max_message_bytes} but must be at most [limits] max_frame_bytes "
            f"({limits.max_frame_bytes}): a message is sent in one WebSocket frame",
        )
    if limits.rate.per_second <= 0:
        fail("[limits.rate] per_second", f"must be more than 0, got {limits.rate.per_second:g}")
    if limits.rate.burst < 1:
        fail("[limits.rate] burst", f"must be at least 1, got {limits.rate.burst}")

    login = limits.login
    for key in ("user_per_minute", "address_per_minute"):
        if getattr(login, key) <= 0:
            fail(f"[limits.login] {key}", f"must be more than 0, got {getattr(login, key):g}")
    for key in ("user_burst", "address_burst"):
        if getattr(login, key) < 1:
            fail(f"[limits.login] {key}", f"must be at least 1, got {getattr(login, key)}")

    if pools.threads < 1:
        fail("[pools] threads", f"must be at least 1, got {pools.threads}")
    if pools.processes < 0:
        fail(
            "[pools] processes",
            f"must be 0 or more (0 renders Markdown on the threads), got {pools.processes}",
        )

    if log.level not in _LOG_LEVELS:
        fail("[log] level", f"must be {_one_of(_LOG_LEVELS)}, got {json.dumps(log.level)}")
    if log.format not in _LOG_FORMATS:
        fail("[log] format", f"must be {_one_of(_LOG_FORMATS)}, got {json.dumps(log.format)}")
    if log.slow_callback_ms != 0 and not (
            SLOW_CALLBACK_MIN_MS <= log.slow_callback_ms <= SLOW_CALLBACK_MAX_MS):
        fail(
            "[log] slow_callback_ms",
            f"must be 0 (off) or {SLOW_CALLBACK_MIN_MS}..{SLOW_CALLBACK_MAX_MS} milliseconds, "
            f"got {log.slow_callback_ms}",
        )

    _check_files(config, source)


# An upload limit past this is a typo (a 1 TiB chat attachment is not a policy).
MAX_FILE_BYTES_LIMIT = 1 << 40


def _check_files(config: Config, source: str) -> None:
    """Uploads: `[limits] max_file_bytes` and `[files] dir`."""
    limit = config.limits.max_file_bytes
    if not 1 <= limit <= MAX_FILE_BYTES_LIMIT:
        raise ConfigError(source, "[limits] max_file_bytes",
                          f"must be 1..{MAX_FILE_BYTES_LIMIT} bytes, got {limit}")
    directory = config.files.dir
    if not directory.strip() or "\x00" in directory:
        raise ConfigError(source, "[files] dir",
                          "must be a directory path (relative to the working directory, or "
                          f"absolute), got {json.dumps(directory)}")


def _one_of(choices: tuple[str, ...]) -> str:
    quoted = [json.dumps(choice) for choice in choices]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _origin_problem(origin: str) -> str:
    """What is wrong with an allowed origin, or "" if it is one a browser can send."""
    expected = "is not an origin like https://chat.example.com or http://localhost:8080"
    try:
        parts = urllib.parse.urlsplit(origin)
        port = parts.port
    except ValueError:
        return expected
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return expected
    if parts.path or parts.query or parts.fragment or "?" in origin or "#" in origin:
        return "must have no path, not even a trailing /: browsers send scheme://host[:port]"
    if parts.username is not None or parts.password is not None:
        return expected
    # The Origin header is compared as a string, so write it exactly as browsers send it.
    if origin != origin.lower():
        return "must be lowercase, as browsers send it"
    if port is not None and (port == 0 or (parts.scheme, port) in (("http", 80), ("https", 443))):
        return "must not name its scheme's default port (browsers leave it out) or port 0"
    return ""
