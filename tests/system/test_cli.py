"""The command line: configuration errors (exit 78, one line) and the admin commands."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from tests.system.daemon import EX_CONFIG, Daemon, bearer, run_cli, to_thread

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "config" / "chatserver.example.toml"
PASSWORD_LINE = re.compile(r"^password: (\S+)$", re.MULTILINE)


@pytest.mark.parametrize(("toml", "key"), [
    pytest.param("[server]\nbogus = 1\n", "[server] bogus", id="unknown-key"),
    pytest.param("[limits]\nmax_frame_byte = 1\n", "[limits] max_frame_byte",
                 id="unknown-key-typo"),
    pytest.param("[nosuch]\nx = 1\n", "[nosuch]", id="unknown-section"),
    pytest.param('[server]\nport = "8080"\n', "[server] port", id="wrong-type"),
    pytest.param("[server]\nheartbeat = true\n", "[server] heartbeat", id="wrong-type-bool"),
    pytest.param("[server]\nport = 0\n", "[server] port", id="bad-value"),
    pytest.param('[log]\nlevel = "loud"\n', "[log] level", id="bad-value-choice"),
    pytest.param("[server]\nprocesses = 2\n", "[server] processes",
                 id="processes-2-with-memory-broker"),
    pytest.param("[server\nport = 1\n", "line 1", id="toml-syntax-error"),
])
def test_bad_config_stops_start_up_with_one_line_and_exit_78(tmp_path: Path, toml: str,
                                                             key: str) -> None:
    """A bad configuration file stops start-up with exit status 78 and one line on stderr
    naming the file and the key."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    done = run_cli(["--config", str(path)], timeout=30)
    assert done.returncode == EX_CONFIG, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    assert str(path) in lines[0] and key in lines[0], lines[0]
    assert done.stdout == ""
    assert not (tmp_path / "chatserver.db").exists()


def test_missing_config_file_exits_78_naming_the_file(tmp_path: Path) -> None:
    """A config file that does not exist is reported in one line naming it, with exit 78."""
    path = tmp_path / "missing.toml"
    done = run_cli(["--config", str(path)], timeout=30)
    assert done.returncode == EX_CONFIG
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], done.stderr


def test_check_config_accepts_the_example_and_rejects_a_bad_file(tmp_path: Path) -> None:
    """`check-config` exits 0 on the shipped example and 78 on a bad file, without serving."""
    done = run_cli(["--config", str(EXAMPLE_CONFIG), "check-config"], timeout=30)
    assert done.returncode == 0, done.stderr
    assert str(EXAMPLE_CONFIG) in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[pools]\nthreads = 0\n")
    done = run_cli(["--config", str(bad), "check-config"], timeout=30)
    assert done.returncode == EX_CONFIG
    assert len(done.stderr.strip().splitlines()) == 1 and "[pools] threads" in done.stderr


async def login(http: aiohttp.ClientSession, username: str, password: str) -> int:
    async with http.post("/api/login",
                         json={"username": username, "password": password}) as reply:
        return reply.status


async def test_user_add_takes_the_password_from_stdin_or_generates_one(server: Daemon) -> None:
    """`user add` uses the first line of stdin as the password, or prints a generated one when
    stdin is /dev/null; either password logs in, and `--admin` makes an admin."""
    given = await to_thread(lambda: server.cli("user", "add", "alice",
                                               stdin="alice-long-password\n"))
    assert given.returncode == 0, given.stderr
    assert not PASSWORD_LINE.search(given.stdout)
    generated = await to_thread(lambda: server.cli("user", "add", "bob", "--admin", stdin=None))
    assert generated.returncode == 0, generated.stderr
    found = PASSWORD_LINE.findall(generated.stdout)
    assert len(found) == 1, generated.stdout
    async with server.http_session() as http:
        assert await login(http, "alice", "alice-long-password") == 200
        assert await login(http, "alice", "wrong-password") == 401
        async with http.post("/api/login", json={"username": "bob", "password": found[0]}
                             ) as reply:
            assert reply.status == 200
            assert (await reply.json())["user"]["admin"] is True


def test_duplicate_user_fails_with_a_clear_message(daemon: Daemon) -> None:
    """Adding a user whose name is taken exits 1 with a one-line message naming the user."""
    daemon.cli_ok("user", "add", "alice", stdin="first-password\n")
    done = daemon.cli("user", "add", "alice", stdin="second-password\n")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "alice" in lines[0] and "taken" in lines[0], done.stderr


def test_failed_user_add_prints_no_password(daemon: Daemon) -> None:
    """A `user add` that fails prints no generated password (it would belong to no account)."""
    daemon.cli_ok("user", "add", "alice", stdin="first-password\n")
    done = daemon.cli("user", "add", "alice", stdin="")
    assert done.returncode == 1
    assert not PASSWORD_LINE.search(done.stdout), (
        f"a password was printed for a user that was not created: {done.stdout!r}")


def test_user_token_for_an_unknown_user_fails(daemon: Daemon) -> None:
    """`user token` (and disable, enable, password, revoke) for a user that does not exist
    exits 1, prints no token or password, and says why in one line."""
    for action in ("token", "disable", "enable", "password", "revoke"):
        done = daemon.cli("user", action, "nobody")
        assert done.returncode == 1, done
        assert done.stdout == ""
        assert "nobody" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done


async def test_disabled_user_is_refused_by_the_running_server(server: Daemon) -> None:
    """After `user disable`, the running server refuses the user's token with 401 over HTTP
    and at the WebSocket upgrade, and refuses the password at login."""
    token = await to_thread(server.add_user, "carol", "carol-long-password")
    async with server.http_session() as http:
        async with http.get("/api/me", headers=bearer(token)) as reply:
            assert reply.status == 200
            assert (await reply.json())["name"] == "carol"
        ws = await http.ws_connect(server.ws_url, headers=bearer(token))
        await ws.close()

        await to_thread(server.cli_ok, "user", "disable", "carol")

        async with http.get("/api/me", headers=bearer(token)) as reply:
            assert reply.status == 401
            assert (await reply.json())["error"] == "unauthorized"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(server.ws_url, headers=bearer(token))
        assert refused.value.status == 401
        assert await login(http, "carol", "carol-long-password") == 401


async def test_user_password_revoke_enable_and_list(server: Daemon) -> None:
    """The admin's answers to a leaked password or token: `user password` sets a new one and
    signs the browsers out (API tokens stay); `user revoke --sessions` signs out only
    browsers, `user revoke` every token; `user enable` undoes `user disable`; `user list`
    shows each user's roles, state and live tokens."""
    api = await to_thread(server.add_user, "erin", "erin-old-password")

    async def session(password: str) -> str:
        async with http.post("/api/login",
                             json={"username": "erin", "password": password}) as reply:
            assert reply.status == 200, await reply.text()
            return str((await reply.json())["token"])

    async def me(token: str) -> int:
        async with http.get("/api/me", headers=bearer(token)) as reply:
            return reply.status

    async with server.http_session() as http:
        browser = await session("erin-old-password")
        done = await to_thread(lambda: server.cli("user", "password", "erin",
                                                  stdin="erin-new-password\n"))
        assert done.returncode == 0 and done.stdout == "", done
        assert "signed out 1 browser session" in done.stderr
        assert await me(browser) == 401 and await me(api) == 200
        assert await login(http, "erin", "erin-old-password") == 401
        browser = await session("erin-new-password")

        generated = await to_thread(lambda: server.cli("user", "password", "erin", stdin=None))
        (password,) = PASSWORD_LINE.findall(generated.stdout)
        assert await me(browser) == 401
        browser = await session(password)

        await to_thread(server.cli_ok, "user", "revoke", "erin", "--sessions")
        assert await me(browser) == 401 and await me(api) == 200

        await to_thread(server.cli_ok, "user", "disable", "erin")
        assert await me(api) == 401
        await to_thread(server.cli_ok, "user", "enable", "erin")
        assert await me(api) == 200
        browser = await session(password)

        listed = await to_thread(server.cli_ok, "user", "list")
        erin = [line.split("\t") for line in listed.splitlines() if line.startswith("erin\t")]
        assert erin and erin[0][:5] == ["erin", "-", "active", "1", "1"], listed
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", erin[0][5]), listed

        done = await to_thread(server.cli, "user", "revoke", "erin")
        assert done.returncode == 0 and "revoked 2 token(s)" in done.stderr, done
        assert await me(browser) == 401 and await me(api) == 401


async def test_user_token_prints_a_token_that_authenticates(server: Daemon) -> None:
    """`user token` prints only a new API token on stdout, and each one authenticates."""
    first = await to_thread(server.add_user, "dave")
    second = await to_thread(server.token, "dave")
    assert first != second
    async with server.http_session() as http:
        for token in (first, second):
            async with http.get("/api/me", headers=bearer(token)) as reply:
                assert reply.status == 200
                assert (await reply.json())["name"] == "dave"


async def test_room_create_private_and_add_member(server: Daemon) -> None:
    """`room create --private` makes a room only members may read; `room add-member` makes a
    user a member; `room create` makes a public room everyone sees."""
    tokens, _, _ = await asyncio.gather(
        to_thread(server.add_users, "erin", "frank"),
        to_thread(server.cli_ok, "room", "create", "secret", "--private"),
        to_thread(server.cli_ok, "room", "create", "lobby"))
    async with server.http_session() as http:

        async def listing(user: str) -> dict[str, dict[str, object]]:
            async with http.get("/api/rooms", headers=bearer(tokens[user])) as reply:
                assert reply.status == 200
                return {room["name"]: room for room in (await reply.json())["rooms"]}

        async def read_status(user: str) -> int:
            async with http.get("/api/rooms/secret/messages",
                                headers=bearer(tokens[user])) as reply:
                return reply.status

        assert "secret" not in await listing("erin") and "lobby" in await listing("erin")
        assert await read_status("erin") == 403

        await to_thread(server.cli_ok, "room", "add-member", "secret", "erin")

        rooms = await listing("erin")
        assert rooms["secret"]["private"] is True and rooms["secret"]["member"] is True
        assert await read_status("erin") == 200
        assert await read_status("frank") == 403
        assert "secret" not in await listing("frank")

    duplicate, unknown_room, unknown_user = await asyncio.gather(
        to_thread(server.cli, "room", "create", "secret"),
        to_thread(server.cli, "room", "add-member", "nosuch", "erin"),
        to_thread(server.cli, "room", "add-member", "secret", "nobody"))
    assert duplicate.returncode == 1 and "secret" in duplicate.stderr, duplicate
    assert unknown_room.returncode == 1 and "nosuch" in unknown_room.stderr, unknown_room
    assert unknown_user.returncode == 1 and "nobody" in unknown_user.stderr, unknown_user


def test_migrate_is_idempotent(daemon: Daemon) -> None:
    """`migrate` creates the schema of a new store, succeeds again with nothing to do (also
    while a server runs on the store), and a server starts on the migrated store."""
    daemon.cli_ok("migrate")
    assert daemon.db_path.exists()
    assert "up to date" in daemon.cli_ok("migrate")
    daemon.cli_ok("user", "add", "gina", stdin="gina-long-password\n")
    daemon.start()
    assert "up to date" in daemon.cli_ok("migrate")
    assert daemon.token("gina")



async def test_hook_create_prints_a_working_url_and_hook_revoke_stops_it(server: Daemon) -> None:
    """`hook create ROOM` prints only a URL on stdout, built from [server] host and port; a
    JSON post to it is stored (seq 1 of the room); `hook list` shows the hook active as the bot
    `hook-<room>`, and after `hook revoke ID` the URL answers 404."""
    # Each CLI call is a Python start-up (about a second): the test makes only four.
    await to_thread(server.cli_ok, "room", "create", "deploys")
    url = (await to_thread(server.cli_ok, "hook", "create", "deploys")).strip()
    assert url.startswith(server.base_url + "/hooks/") and "\n" not in url, url
    path = url[len(server.base_url):]
    async with server.http_session() as http:
        async with http.post(path, json={"text": "v1.2 **shipped**"}) as reply:
            assert reply.status == 200, await reply.text()
            assert {k: v for k, v in (await reply.json()).items() if k in ("room", "seq")} == {
                "room": "deploys", "seq": 1}

        listed = (await to_thread(server.cli_ok, "hook", "list")).splitlines()
        assert len(listed) == 1 and listed[0].split("\t")[1:3] == ["deploys", "hook-deploys"]
        assert listed[0].endswith("\tactive"), listed
        await to_thread(server.cli_ok, "hook", "revoke", listed[0].split("\t")[0])

        async with http.post(path, json={"text": "after revoke"}) as reply:
            assert reply.status == 404
            assert (await reply.json())["error"] == "not_found"
