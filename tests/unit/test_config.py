"""Configuration: PROTOCOL section 8 — defaults, the example file, and one-line errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from chatserver.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    LimitsConfig,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "chatserver.example.toml"
DEV = ROOT / "config" / "dev.toml"


def _field_names(obj: object) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


def test_example_file_equals_the_defaults() -> None:
    """The example file loads and holds exactly the built-in defaults, so it cannot drift."""
    config = load_config(str(EXAMPLE))
    assert config.source == str(EXAMPLE)
    assert dataclasses.replace(config, source=DEFAULT_CONFIG.source) == DEFAULT_CONFIG


def test_example_file_names_every_key() -> None:
    """Every key of every section is written out in the example file, none left implicit."""
    with EXAMPLE.open("rb") as f:
        data = tomllib.load(f)
    sections = _field_names(DEFAULT_CONFIG) - {"source"}
    assert set(data) == sections
    for section in sections:
        assert set(data[section]) == _field_names(getattr(DEFAULT_CONFIG, section)), section
    assert set(data["limits"]["rate"]) == _field_names(DEFAULT_CONFIG.limits.rate)


def test_example_file_says_how_to_check_a_file() -> None:
    """The example file points to the check-config command."""
    assert "chatserver --config FILE check-config" in EXAMPLE.read_text()


def test_dev_file_is_a_small_debug_config() -> None:
    """The dev file serves on 8080 with a dev.db SQLite store and debug logging."""
    config = load_config(str(DEV))
    assert config.server.port == 8080
    assert config.store.backend == "sqlite"
    assert config.store.path == "dev.db"
    assert config.log.level == "debug"


def test_empty_data_gives_the_defaults_with_the_source() -> None:
    """An empty file means every default, and the Config remembers where it came from."""
    assert parse_config({}, "empty.toml") == dataclasses.replace(
        DEFAULT_CONFIG, source="empty.toml"
    )


def test_default_config_is_config() -> None:
    """DEFAULT_CONFIG is a plain Config() from the embedded defaults."""
    assert Config() == DEFAULT_CONFIG
    assert DEFAULT_CONFIG.source == "<defaults>"


def test_valid_custom_file(tmp_path: Path) -> None:
    """A production-style file is read into typed, frozen values (ints widen to floats)."""
    path = tmp_path / "prod.toml"
    path.write_text(
        """
[server]
host = "0.0.0.0"
port = 443
processes = 4
heartbeat = 15
allowed_origins = ["https://chat.example.com", "http://localhost:3000"]
shutdown_timeout = 2.5
[store]
backend = "postgres"
dsn = "postgresql://chat@db:5432/chat"
[broker]
backend = "redis"
url = "rediss://redis.internal:6380/1"
[limits]
max_message_bytes = 4000
max_frame_bytes = 4096
stream_idle = 5
[limits.rate]
per_second = 0.5
burst = 3
[pools]
threads = 8
processes = 0
[log]
level = "warning"
format = "json"
"""
    )
    config = load_config(str(path))
    assert config.source == str(path)
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 443
    assert config.server.processes == 4
    assert config.server.heartbeat == 15.0
    assert isinstance(config.server.heartbeat, float)
    assert config.server.allowed_origins == ("https://chat.example.com", "http://localhost:3000")
    assert config.server.shutdown_timeout == 2.5
    assert config.store.dsn == "postgresql://chat@db:5432/chat"
    assert config.broker.url == "rediss://redis.internal:6380/1"
    assert config.limits == LimitsConfig(
        max_message_bytes=4000,
        max_frame_bytes=4096,
        stream_idle=5.0,
        rate=dataclasses.replace(DEFAULT_CONFIG.limits.rate, per_second=0.5, burst=3),
    )
    assert (config.pools.threads, config.pools.processes) == (8, 0)
    assert (config.log.level, config.log.format) == ("warning", "json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "origin",
    ["https://chat.example.com", "http://localhost:8080", "http://[::1]:8080", "https://a.b:8443"],
)
def test_origins_browsers_send_are_accepted(origin: str) -> None:
    """An origin written as a browser sends it (scheme, host, optional port) is accepted."""
    config = parse_config({"server": {"allowed_origins": [origin]}}, "c.toml")
    assert config.server.allowed_origins == (origin,)


# (data, the key the message must name, a fragment of what it must say)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown key", {"server": {"prot": 1}}, "[server] prot", "valid keys: host, port"),
    ("unknown nested key", {"limits": {"rate": {"brust": 1}}}, "[limits.rate] brust", "burst"),
    ("unknown section", {"database": {}}, "[database]", "valid sections: [server]"),
    ("key outside a section", {"port": 80}, "port", "keys belong in sections"),
    ("section not a table", {"server": 1}, "[server]", "expected a table, got integer 1"),
    ("rate not a table", {"limits": {"rate": 5}}, "[limits] rate", "expected a table"),
    ("string for int", {"server": {"port": "80"}}, "[server] port", 'got string "80"'),
    ("bool for int", {"server": {"port": True}}, "[server] port", "integer, got boolean true"),
    ("bool for float", {"server": {"heartbeat": False}}, "[server] heartbeat", "boolean false"),
    ("float for int", {"limits": {"replay_max": 10.0}}, "[limits] replay_max", "got float 10.0"),
    ("nan for float", {"server": {"heartbeat": float("nan")}}, "[server] heartbeat", "finite"),
    ("string for list", {"server": {"allowed_origins": "x"}}, "[server] allowed_origins", "array"),
    ("int in list", {"server": {"allowed_origins": [1]}}, "[server] allowed_origins", "strings"),
    ("port 0", {"server": {"port": 0}}, "[server] port", "1..65535, got 0"),
    ("port too big", {"server": {"port": 65536}}, "[server] port", "1..65535"),
    ("empty host", {"server": {"host": ""}}, "[server] host", "address"),
    ("no processes", {"server": {"processes": 0}}, "[server] processes", "at least 1"),
    ("zero heartbeat", {"server": {"heartbeat": 0}}, "[server] heartbeat", "more than 0"),
    ("zero shutdown", {"server": {"shutdown_timeout": 0}}, "[server] shutdown_timeout", "0"),
    (
        "processes with memory broker",
        {"server": {"processes": 2}},
        "[server] processes",
        'share messages only through Redis: set [broker] backend = "redis"',
    ),
    ("bad store backend", {"store": {"backend": "mysql"}}, "[store] backend", '"postgres"'),
    ("empty sqlite path", {"store": {"path": ""}}, "[store] path", "must not be empty"),
    ("postgres without dsn", {"store": {"backend": "postgres"}}, "[store] dsn", "postgresql://"),
    (
        "postgres with a non-URL dsn",
        {"store": {"backend": "postgres", "dsn": "host=db"}},
        "[store] dsn",
        "postgres://",
    ),
    ("bad broker backend", {"broker": {"backend": "kafka"}}, "[broker] backend", '"redis"'),
    ("redis without url", {"broker": {"backend": "redis"}}, "[broker] url", "redis://"),
    (
        "redis with http url",
        {"broker": {"backend": "redis", "url": "http://r"}},
        "[broker] url",
        "rediss://",
    ),
    ("zero limit", {"limits": {"send_queue_bytes": 0}}, "[limits] send_queue_bytes", "positive"),
    ("negative limit", {"limits": {"replay_max": -1}}, "[limits] replay_max", "positive"),
    ("zero stream_idle", {"limits": {"stream_idle": 0}}, "[limits] stream_idle", "more than 0"),
    (
        "message larger than frame",
        {"limits": {"max_message_bytes": 70000}},
        "[limits] max_message_bytes",
        "at most [limits] max_frame_bytes (65536): a message is sent in one WebSocket frame",
    ),
    ("zero rate", {"limits": {"rate": {"per_second": 0}}}, "[limits.rate] per_second", "than 0"),
    ("zero burst", {"limits": {"rate": {"burst": 0}}}, "[limits.rate] burst", "at least 1"),
    ("no threads", {"pools": {"threads": 0}}, "[pools] threads", "at least 1"),
    ("negative processes", {"pools": {"processes": -1}}, "[pools] processes", "0 or more"),
    ("bad log level", {"log": {"level": "trace"}}, "[log] level", '"debug", "info"'),
    ("bad log format", {"log": {"format": "xml"}}, "[log] format", '"json"'),
    ("string for bool", {"metrics": {"enabled": "no"}}, "[metrics] enabled",
     'expected true or false, got string "no"'),
    ("int for bool", {"metrics": {"enabled": 0}}, "[metrics] enabled", "got integer 0"),
]
BAD_ORIGINS = [
    ("ftp://chat.example.com", "not an origin"),
    ("chat.example.com", "not an origin"),
    ("https://", "not an origin"),
    ("https://chat.example.com/", "no path"),
    ("https://chat.example.com/app", "no path"),
    ("https://chat.example.com?x=1", "no path"),
    ("https://user@chat.example.com", "not an origin"),
    ("https://Chat.Example.com", "lowercase"),
    ("https://chat.example.com:443", "default port"),
    ("https://chat.example.com:99999", "not an origin"),
    ("*", "not an origin"),
]
BAD += [
    (f"bad origin {o}", {"server": {"allowed_origins": [o]}}, "[server] allowed_origins", why)
    for o, why in BAD_ORIGINS
]


@pytest.mark.parametrize(("data", "key", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_naming_file_and_key(
    data: dict[str, Any], key: str, says: str
) -> None:
    """A bad key or value raises ConfigError: one line with the file, the key and the fix."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "bad.toml")
    error = caught.value
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"bad.toml: {key}: ")
    assert says in message
    assert (error.source, error.key) == ("bad.toml", key)


def test_bad_file_reports_the_file_and_key(tmp_path: Path) -> None:
    """load_config reports a bad key with the path of the file it came from."""
    path = tmp_path / "c.toml"
    path.write_text("[limits.rate]\nburst = true\n")
    with pytest.raises(ConfigError, match=r"c\.toml: \[limits\.rate\] burst: expected an integer"):
        load_config(str(path))


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line, on one line."""
    path = tmp_path / "broken.toml"
    path.write_text('[server]\nhost = "0.0.0.0"\nport = \n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: line 3, column 8: invalid TOML: ")
    assert "\n" not in message


def test_toml_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    """A key set twice is invalid TOML, reported as such rather than last-one-wins."""
    path = tmp_path / "twice.toml"
    path.write_text("[server]\nport = 1\nport = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(path))


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a one-line ConfigError naming the file."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value) == f"{path}: cannot read the file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A path that is not a readable file is a one-line ConfigError naming it."""
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(str(tmp_path))


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


def test_error_text_stays_on_one_line_whatever_the_value() -> None:
    """Values with newlines are shown escaped so the message is still one line."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"log": {"level": "info\nerror"}}, "multi\nline.toml")
    assert "\n" not in str(caught.value)
    assert '"info\\nerror"' in str(caught.value)
