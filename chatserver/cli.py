"""`chatserver [--config FILE] [COMMAND]`: serve (the default) and the admin commands.

Exit status: 0 success, 1 a failed command (the message says what to do), 2 bad usage,
78 (EX_CONFIG) a bad configuration, reported in one line naming the file and the key.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence

from chatserver import credentials, export, hooks
from chatserver.config import Config, ConfigError, ServerConfig, load_config
from chatserver.errors import ChatError, NotFound
from chatserver.protocol import USER_NAME
from chatserver.rooms import Rooms
from chatserver.store import make_store
from chatserver.store.base import MAX_RETENTION_DAYS, Store, User, format_ts
from chatserver.tokens import hash_token, new_token
from workers.passwords import hash_password

EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatserver", description="Self-hosted real-time chat server.")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML configuration (default: built-in embedded defaults)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run the server (the default)")
    commands.add_parser("check-config", help="validate the configuration and exit")
    commands.add_parser("migrate", help="apply pending store migrations")

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    add = user.add_parser("add", help="create a user (password from stdin, else generated)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--bot", action="store_true", help="a bot account (for tokens only)")
    user.add_parser("token", help="print a new API token for the user").add_argument("name")
    user.add_parser("disable", help="disable a user").add_argument("name")
    user.add_parser("enable", help="enable a disabled user again").add_argument("name")
    user.add_parser("password", help="set a new password (from stdin, else generated) and "
                    "sign the user out of every browser").add_argument("name")
    revoke = user.add_parser("revoke", help="sign the user out everywhere: revoke every "
                             "token, API tokens too unless --sessions")
    revoke.add_argument("name")
    revoke.add_argument("--sessions", action="store_true",
                        help="only browser sessions (logins); bots' API tokens keep working")
    user.add_parser("list", help="list every user, a tab-separated line each: name, roles, "
                    "state, live sessions, live API tokens, created")

    room = commands.add_parser("room", help="manage rooms").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    create = room.add_parser("create", help="create a room")
    create.add_argument("name")
    create.add_argument("--private", action="store_true")
    member = room.add_parser("add-member", help="add a user to a room")
    member.add_argument("room")
    member.add_argument("user")
    retention = room.add_parser(
        "retention", help="keep a room's messages for DAYS days (0: forever, the default)",
        description="Keep a room's messages for DAYS days: every running server removes older "
        "ones within the hour, and hourly after that. 0 keeps them forever.")
    retention.add_argument("room")
    retention.add_argument("days", metavar="DAYS", type=_retention_days)

    exporter = commands.add_parser(
        "export", help="write a room's messages as JSON lines, in seq order",
        description="Write a room's messages as JSON lines in seq order, one message per line "
        "as history gives it, up to the room's latest message when the export starts.")
    exporter.add_argument("room")
    exporter.add_argument(
        "--output", "-o", metavar="FILE", default="-",
        help="write to FILE (atomically: FILE.partial, renamed when complete); - is stdout, "
        "the default")

    hook = commands.add_parser("hook", help="manage incoming webhooks").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    hook_create = hook.add_parser(
        "create", help="make an incoming webhook for a room and print its URL (shown once)",
        description="Make an incoming webhook: POST {\"text\": \"...\"} to the printed URL "
        "posts to ROOM as a bot user. The URL is printed once on stdout; only a hash of its "
        "token is kept.")
    hook_create.add_argument("room")
    hook_create.add_argument(
        "--name", metavar="NAME",
        help="the bot user the hook posts as, made if missing (default: hook-<room>, cut to "
        "32 characters); an existing user must be a bot")
    hook_create.add_argument(
        "--base-url", metavar="URL", type=_base_url,
        help="the server's public URL, e.g. https://chat.example.com (default: "
        "http://<[server] host>:<[server] port> from the configuration, 127.0.0.1 for a "
        "wildcard host)")
    hook.add_parser("list", help="list every webhook: id, room, bot, created, state")
    hook.add_parser("revoke", help="revoke a webhook; its URL answers 404 from the next "
                    "request on").add_argument("id", type=_hook_id)
    return parser


def _base_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an http:// or https:// URL like https://chat.example.com")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{value!r} must have no query or fragment")
    return value.rstrip("/")


def _hook_id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"{value!r} is not a hook id (see 'hook list')")
    return number


def _retention_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        days = -1
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of days from 0 (keep forever) to {MAX_RETENTION_DAYS}")
    return days


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def derived_base_url(server: ServerConfig) -> str:
    """The URL the server listens on per its configuration; a wildcard host becomes loopback,
    which only works on this machine (hence `--base-url`)."""
    host = server.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{server.port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{server.port}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config) if args.config else Config()
    except ConfigError as error:
        print(f"chatserver: config error: {error}", file=sys.stderr)
        return EX_CONFIG
    command = args.command or "serve"
    if command == "check-config":
        print(f"{config.source}: OK")
        return 0
    if command == "serve":
        from chatserver import daemon, log, supervisor

        log.configure(config.log)
        if config.server.processes > 1:
            return supervisor.run(config)
        return daemon.run(config)
    action = _ADMIN[(command, getattr(args, "action", None))]
    if command == "hook" and args.action == "create" and args.base_url is None:
        args.base_url = derived_base_url(config.server)
        if _is_wildcard(config.server.host):
            print(f"chatserver: [server] host {config.server.host} listens on every address; "
                  "the URL uses loopback, pass --base-url for one others can reach",
                  file=sys.stderr)
    try:
        return asyncio.run(_with_store(config, lambda store: action(store, args),
                                       open_store=command != "migrate"))
    except ChatError as error:
        print(f"chatserver: {error.message}", file=sys.stderr)
        return 1


async def _with_store(config: Config, action: Callable[[Store], Awaitable[int]],
                      *, open_store: bool = True) -> int:
    store = make_store(config.store)
    if not open_store:  # `migrate` reports what it applies; opening would apply it silently
        try:
            return await action(store)
        finally:
            await store.close()
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


def _read_password() -> tuple[str, bool]:
    """The first line of stdin when it is piped, else (or when empty) a generated one; and
    whether it was generated (and so must be shown once the user exists)."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if line:
            return line, False
    return secrets.token_urlsafe(12), True


async def _migrate(store: Store, args: argparse.Namespace) -> int:
    applied = await store.migrate()
    print(f"applied migrations: {applied}" if applied else "store schema is up to date")
    return 0


async def _user_add(store: Store, args: argparse.Namespace) -> int:
    if not USER_NAME.fullmatch(args.name):
        print(f"chatserver: user name {args.name!r} must match ^[a-z0-9][a-z0-9_.-]{{0,31}}$ "
              "(lower case)", file=sys.stderr)
        return 1
    password, generated = _read_password()
    await store.create_user(args.name, hash_password(password), is_admin=args.admin,
                            is_bot=args.bot)
    if generated:
        print(f"password: {password}")
    print(f"created user {args.name}" + (" (admin)" if args.admin else ""), file=sys.stderr)
    return 0


async def _existing_user(store: Store, name: str) -> User:
    user = await store.get_user(name)
    if user is None:
        raise NotFound(f"no user named {name!r}; create it with 'user add'")
    return user


async def _user_token(store: Store, args: argparse.Namespace) -> int:
    user = await _existing_user(store, args.name)
    token = new_token()
    await store.add_token(user.id, hash_token(token), "api")
    print(token)
    return 0


async def _user_disable(store: Store, args: argparse.Namespace) -> int:
    await store.set_disabled(args.name, True)
    # Its open sockets: each running instance's credential sweep closes them.
    print(f"disabled user {args.name}; a running server refuses its tokens from the next "
          f"request on and closes its open sockets within {credentials.SWEEP_SECONDS:.0f} s",
          file=sys.stderr)
    return 0


async def _user_enable(store: Store, args: argparse.Namespace) -> int:
    await store.set_disabled(args.name, False)
    print(f"enabled user {args.name}; its tokens that were not revoked work again",
          file=sys.stderr)
    return 0


async def _user_password(store: Store, args: argparse.Namespace) -> int:
    # A reset is for a forgotten or a leaked password: either way the browsers signed in
    # with the old one must not stay signed in. Bots' API tokens are not passwords; they
    # stay (`user revoke` ends them).
    user = await _existing_user(store, args.name)
    password, generated = _read_password()
    await store.set_password_hash(user.id, hash_password(password))
    signed_out = await store.revoke_user_tokens(user.id, "session")
    if generated:
        print(f"password: {password}")
    print(f"set the password of {user.name}; signed out {signed_out} browser session(s)"
          f"{_SWEEP_NOTE}", file=sys.stderr)
    return 0


async def _user_revoke(store: Store, args: argparse.Namespace) -> int:
    user = await _existing_user(store, args.name)
    revoked = await store.revoke_user_tokens(user.id, "session" if args.sessions else None)
    what = "browser session(s)" if args.sessions else "token(s), sessions and API tokens"
    print(f"revoked {revoked} {what} of {user.name}{_SWEEP_NOTE}", file=sys.stderr)
    return 0


_SWEEP_NOTE = (f"; a running server refuses them from the next request on and closes their "
               f"open sockets within {credentials.SWEEP_SECONDS:.0f} s")


async def _user_list(store: Store, args: argparse.Namespace) -> int:
    for listing in await store.list_users():
        user = listing.user
        roles = ",".join(r for r, on in (("admin", user.is_admin), ("bot", user.is_bot)) if on)
        print(f"{user.name}\t{roles or '-'}\t{'disabled' if user.disabled else 'active'}\t"
              f"{listing.sessions}\t{listing.api_tokens}\t{format_ts(listing.created_at)}")
    return 0


# Rooms and members the CLI makes are not announced (`room_added`, docs/protocol.md §11):
# this process has no broker to reach the server's connections.
async def _room_create(store: Store, args: argparse.Namespace) -> int:
    room = await Rooms(store).create(args.name, args.private, None)
    print(f"created {room.kind} room {room.name}", file=sys.stderr)
    return 0


async def _room_add_member(store: Store, args: argparse.Namespace) -> int:
    room, user, _added = await Rooms(store).add_member(args.room, None, args.user)
    print(f"added {user.name} to {room.name}", file=sys.stderr)
    return 0


async def _room_retention(store: Store, args: argparse.Namespace) -> int:
    room = await Rooms(store).get(args.room)
    await store.set_retention(room.id, args.days)
    if args.days == 0:
        print(f"room {room.name} keeps its messages forever", file=sys.stderr)
    else:
        print(f"room {room.name} keeps messages for {args.days} days; running servers remove "
              "older ones within the hour", file=sys.stderr)
    return 0


async def _export(store: Store, args: argparse.Namespace) -> int:
    room = await Rooms(store).get(args.room)  # before any file is made
    try:
        if args.output == "-":
            count = await export.export_to_stdout(store, room)
        else:
            count = await export.export_to_file(store, room, args.output)
    except BrokenPipeError:  # `chatserver export ROOM | head`: the reader has all it wants
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        print(f"chatserver: cannot write {args.output}: {error.strerror or error}",
              file=sys.stderr)
        return 1
    where = "" if args.output == "-" else f" to {args.output}"
    print(f"exported {count} messages of room {room.name}{where}", file=sys.stderr)
    return 0


async def _hook_create(store: Store, args: argparse.Namespace) -> int:
    hook, token = await hooks.create(store, args.room, args.name, None)
    # Only the URL on stdout, so `URL=$(chatserver hook create ops)` works.
    print(hooks.hook_url(args.base_url, token))
    print(f"created hook {hook.id}: posts to {hook.room.kind} room {hook.room.name} as bot "
          f"{hook.bot.name}; the URL is the secret and is not shown again", file=sys.stderr)
    return 0


async def _hook_list(store: Store, args: argparse.Namespace) -> int:
    found = await store.list_hooks()
    if not found:
        print("no hooks; make one with 'hook create ROOM'", file=sys.stderr)
    for hook in found:
        state = f"revoked {hook.revoked_at}" if hook.revoked_at else "active"
        if not hook.revoked and hook.bot.disabled:
            state = "bot disabled"
        print(f"{hook.id}\t{hook.room.name}\t{hook.bot.name}\t{hook.created_at}\t{state}")
    return 0


async def _hook_revoke(store: Store, args: argparse.Namespace) -> int:
    hook = await store.revoke_hook(args.id)
    print(f"revoked hook {hook.id} (room {hook.room.name}, bot {hook.bot.name}); its URL now "
          "answers 404", file=sys.stderr)
    return 0


_ADMIN: dict[tuple[str, str | None], Callable[[Store, argparse.Namespace], Awaitable[int]]] = {
    ("migrate", None): _migrate,
    ("user", "add"): _user_add,
    ("user", "token"): _user_token,
    ("user", "disable"): _user_disable,
    ("user", "enable"): _user_enable,
    ("user", "password"): _user_password,
    ("user", "revoke"): _user_revoke,
    ("user", "list"): _user_list,
    ("room", "create"): _room_create,
    ("room", "add-member"): _room_add_member,
    ("room", "retention"): _room_retention,
    ("export", None): _export,
    ("hook", "create"): _hook_create,
    ("hook", "list"): _hook_list,
    ("hook", "revoke"): _hook_revoke,
}
