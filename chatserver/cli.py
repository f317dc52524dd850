"""`chatserver [--config FILE] [COMMAND]`: serve (the default) and the admin commands.

Exit status: 0 success, 1 a failed command (the message says what to do), 2 bad usage,
78 (EX_CONFIG) a bad configuration, reported in one line naming the file and the key.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence

from chatserver.app import make_store
from chatserver.auth import hash_token, new_token
from chatserver.config import Config, ConfigError, load_config
from chatserver.errors import ChatError
from chatserver.protocol import USER_NAME
from chatserver.rooms import Rooms
from chatserver.store.base import Store
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

    room = commands.add_parser("room", help="manage rooms").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    create = room.add_parser("create", help="create a room")
    create.add_argument("name")
    create.add_argument("--private", action="store_true")
    member = room.add_parser("add-member", help="add a user to a room")
    member.add_argument("room")
    member.add_argument("user")
    return parser


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


async def _user_token(store: Store, args: argparse.Namespace) -> int:
    user = await store.get_user(args.name)
    if user is None:
        print(f"chatserver: no user named {args.name!r}; create it with 'user add'",
              file=sys.stderr)
        return 1
    token = new_token()
    await store.add_token(user.id, hash_token(token), "api")
    print(token)
    return 0


async def _user_disable(store: Store, args: argparse.Namespace) -> int:
    await store.set_disabled(args.name, True)
    print(f"disabled user {args.name}; a running server refuses its tokens from the next "
          "request on", file=sys.stderr)
    return 0


async def _room_create(store: Store, args: argparse.Namespace) -> int:
    room = await Rooms(store).create(args.name, args.private, None)
    print(f"created {room.kind} room {room.name}", file=sys.stderr)
    return 0


async def _room_add_member(store: Store, args: argparse.Namespace) -> int:
    room, user = await Rooms(store).add_member(args.room, None, args.user)
    print(f"added {user.name} to {room.name}", file=sys.stderr)
    return 0


_ADMIN: dict[tuple[str, str | None], Callable[[Store, argparse.Namespace], Awaitable[int]]] = {
    ("migrate", None): _migrate,
    ("user", "add"): _user_add,
    ("user", "token"): _user_token,
    ("user", "disable"): _user_disable,
    ("room", "create"): _room_create,
    ("room", "add-member"): _room_add_member,
}
