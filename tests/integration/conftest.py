"""Fixtures: a real chatserver app (SQLite in tmp_path, memory broker, real pools) served by
pytest-aiohttp's test server, with users, tokens and a helper client that speaks the protocol;
`backend_chat` runs a test once per store backend (PostgreSQL: the session's throwaway one)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from chatserver.app import create_app
from chatserver.app_keys import CONTEXT
from chatserver.config import (
    BrokerConfig,
    Config,
    FilesConfig,
    LimitsConfig,
    MetricsConfig,
    PoolsConfig,
    RateConfig,
    ServerConfig,
    StoreConfig,
)
from chatserver.context import ChatContext
from chatserver.overload import Thresholds
from chatserver.tokens import hash_token, new_token

FRAME_TIMEOUT = 5.0
# The store backends `backend_chat` runs a test on, as tests/contract does for the Store.
BACKENDS = ["sqlite", "postgres"]


def make_config(tmp_path: Path, *, server: ServerConfig | None = None,
                metrics: MetricsConfig | None = None, store: StoreConfig | None = None,
                **limits: Any) -> Config:
    rate = limits.pop("rate", RateConfig(per_second=1000, burst=1000))
    limits.setdefault("connections_per_user", 1000)  # tests open many sockets as one user
    return Config(
        server=server or ServerConfig(),
        store=store or StoreConfig(path=str(tmp_path / "chat.db")),
        limits=dataclasses.replace(LimitsConfig(), rate=rate, **limits),
        pools=PoolsConfig(threads=2, processes=1),
        metrics=metrics or MetricsConfig(),
        # Uploads stay in the test's directory, never in the working directory.
        files=FilesConfig(dir=str(tmp_path / "files")),
    )


def store_config(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """SQLite in `tmp_path`, or a fresh database on the session's throwaway PostgreSQL."""
    if backend == "sqlite":
        return StoreConfig(path=str(tmp_path / "chat.db"))
    if backend == "postgres":
        # Asked for only here, so SQLite runs never start PostgreSQL.
        dsn: str = request.getfixturevalue("postgres_dsn")
        return StoreConfig(backend="postgres", dsn=dsn, pool_size=4)
    raise AssertionError(f"no store configuration for backend {backend!r}")


UNLOADED = Thresholds(lag=(60.0, 60.0, 60.0), pool_queue=(10**9, 10**9, 10**9))


class WsClient:
    """A protocol-speaking test client over a real WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: dict[str, Any]) -> None:
        self.ws = ws
        self.hello = hello
        self._refs = 0

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r}")
        frame: dict[str, Any] = orjson.loads(msg.data)
        return frame

    async def recv_op(self, op: str, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        """The next frame with this op, skipping presence/typing/others in between."""
        while True:
            frame = await self.recv(timeout)
            if frame["op"] == op:
                return frame

    async def request(self, frame: dict[str, Any], reply: str | None = None) -> dict[str, Any]:
        """Send with a fresh ref; return the frame answering that ref (reply or error)."""
        self._refs += 1
        ref = f"r{self._refs}"
        await self.send({**frame, "ref": ref})
        while True:
            got = await self.recv()
            if got.get("ref") == ref and (reply is None or got["op"] in (reply, "error")):
                return got

    async def join(self, room: str, after: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "join", "room": room}
        if after is not None:
            frame["after"] = after
        return await self.request(frame, "joined")

    async def say(self, room: str, text: str) -> dict[str, Any]:
        return await self.request({"op": "send", "room": room, "text": text}, "ack")

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await self.recv(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame}")

    async def close(self) -> None:
        await self.ws.close()


@dataclasses.dataclass
class Chat:
    """The running app under test: its client, context, and user/token helpers."""

    client: TestClient
    ctx: ChatContext

    async def user(self, name: str, *, admin: bool = False, password: str = "pw-" + "x" * 8
                   ) -> str:
        """Create a user; return an API token for it."""
        password_hash = await self.ctx.executors.hash_password(password)
        user = await self.ctx.store.create_user(name, password_hash, is_admin=admin)
        token = new_token()
        await self.ctx.store.add_token(user.id, hash_token(token), "api")
        return token

    async def room(self, name: str, *, private: bool = False, members: tuple[str, ...] = ()
                   ) -> None:
        room = await self.ctx.rooms.create(name, private, None)
        for member in members:
            await self.ctx.rooms.add_member(room.name, None, member)

    async def ws(self, token: str, **headers: str) -> WsClient:
        ws = await self.client.ws_connect("/ws", headers={"Authorization": f"Bearer {token}",
                                                          **headers})
        hello = orjson.loads((await ws.receive()).data)
        assert hello["op"] == "hello"
        return WsClient(ws, hello)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


ChatFactory = Callable[..., Awaitable[Chat]]


async def serve(aiohttp_client: Any, config: Config) -> Chat:
    """The app for `config` on a test server. The suite runs two test workers on two cores:
    loop lag caused by the neighbour must not make the app shed or refuse, so its overload
    guard is out of the way. Admission is tested by forcing levels (test_admission.py), the
    guard's logic by tests/unit/test_overload.py."""
    client = await aiohttp_client(create_app(config))
    ctx = client.app[CONTEXT]
    ctx.overload.thresholds = UNLOADED
    return Chat(client, ctx)


@pytest.fixture
async def make_chat(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[ChatFactory]:
    async def factory(*, server: ServerConfig | None = None,
                      metrics: MetricsConfig | None = None, store: StoreConfig | None = None,
                      **limits: Any) -> Chat:
        config = make_config(tmp_path, server=server, metrics=metrics, store=store, **limits)
        return await serve(aiohttp_client, config)

    yield factory


@pytest.fixture
async def chat(make_chat: ChatFactory) -> Chat:
    return await make_chat()


@pytest.fixture(params=BACKENDS)
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """The store configuration of each backend in `BACKENDS` in turn."""
    return store_config(request.param, request, tmp_path)


@pytest.fixture
async def backend_chat(backend_store: StoreConfig, make_chat: ChatFactory) -> Chat:
    """`chat`, once per store backend. `backend_store` comes first, so the app (and its
    connection pool) closes before the test's database is dropped."""
    return await make_chat(store=backend_store)


@pytest.fixture
async def redis_pair(tmp_path: Path, aiohttp_client: Any, redis_url: str) -> tuple[Chat, Chat]:
    """Two instances on one store sharing a real Redis broker, as two processes or hosts
    would: what is done on the first must reach connections on the second."""
    config = dataclasses.replace(make_config(tmp_path),
                                 broker=BrokerConfig(backend="redis", url=redis_url))
    return await serve(aiohttp_client, config), await serve(aiohttp_client, config)
