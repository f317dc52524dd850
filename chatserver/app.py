"""The application factory: every resource is opened and closed in `cleanup_ctx`, held in a
`ChatContext` under a typed AppKey, never in module state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from chatserver import credentials, http_api, retention
from chatserver.app_keys import CONFIG, CONTEXT
from chatserver.broker.base import Broker
from chatserver.config import BrokerConfig, Config
from chatserver.connection import websocket_handler
from chatserver.context import ChatContext
from chatserver.errors import CloseCode
from chatserver.executors import Executors
from chatserver.hub import Hub
from chatserver.looplag import LoopLagMonitor
from chatserver.messages import MessageService
from chatserver.metrics import Metrics, metrics_handler
from chatserver.overload import OverloadGuard
from chatserver.ratelimit import KeyedLimiter
from chatserver.rooms import Rooms
from chatserver.session import Connections
from chatserver.stallwatch import StallWatch
from chatserver.store import make_store
from chatserver.store.base import Store
from chatserver.streams import Streams

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SHUTDOWN_FLUSH_TIMEOUT = 5.0


def make_broker(config: BrokerConfig, *, instance_id: str,
                rooms_of_user: Callable[[str], Awaitable[Sequence[str]]] | None = None
                ) -> Broker:
    """`rooms_of_user(name)`: the user's room names, for presence the broker finds itself
    (a crashed instance's users going offline)."""
    if config.backend == "memory":
        from chatserver.broker.memory import MemoryBroker

        return MemoryBroker()
    if config.backend == "redis":
        from chatserver.broker.redis import RedisBroker

        return RedisBroker(config.url, instance_id=instance_id, rooms_of_user=rooms_of_user)
    raise ValueError(f"broker backend {config.backend!r} is not available in this build")


def create_app(config: Config, *, instance_id: str | None = None) -> web.Application:
    app = web.Application(
        client_max_size=max(1024 * 1024, 4 * config.limits.max_frame_bytes),
        middlewares=[http_api.error_middleware],
    )
    app[CONFIG] = config
    app.cleanup_ctx.append(_running_instance(instance_id or secrets.token_hex(4)))
    app.on_shutdown.append(_close_connections)
    app.router.add_get("/ws", websocket_handler)
    http_api.add_routes(app)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/", _index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def _running_instance(
    instance_id: str,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        async with contextlib.AsyncExitStack() as stack:
            executors = Executors(config.pools)
            await executors.start()
            stack.push_async_callback(executors.close)
            store = make_store(config.store)
            await store.open()
            stack.push_async_callback(store.close)

            async def rooms_of_user(name: str) -> list[str]:
                user = await store.get_user(name)
                return [] if user is None else await store.rooms_of_user(user.id)

            broker = make_broker(config.broker, instance_id=instance_id,
                                 rooms_of_user=rooms_of_user)
            await broker.open()
            stack.push_async_callback(broker.close)
            ctx = build_context(config, instance_id, store, broker, executors)
            app[CONTEXT] = ctx
            await ensure_admin(ctx)
            tasks = [asyncio.create_task(ctx.lag.run(), name="loop-lag"),
                     asyncio.create_task(ctx.streams.sweep_idle(), name="stream-idle")]
            tasks.append(asyncio.create_task(retention.run_for(ctx), name="retention"))
            tasks.append(asyncio.create_task(credentials.run(ctx.connections, store),
                                             name="credential-sweep"))
            log.info("instance %s ready (store=%s broker=%s)", instance_id,
                     config.store.backend, config.broker.backend)
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await ctx.streams.abort_all()
                if ctx.background:
                    await asyncio.wait(set(ctx.background), timeout=SHUTDOWN_FLUSH_TIMEOUT)
    return context


def build_context(config: Config, instance_id: str, store: Store, broker: Broker,
                  executors: Executors) -> ChatContext:
    limits = config.limits
    connections = Connections()
    hub = Hub(store, broker, replay_max=limits.replay_max, connections=connections)
    messages = MessageService(store, broker, executors)
    streams = Streams(broker, messages, idle_seconds=limits.stream_idle,
                      max_bytes=limits.max_message_bytes)
    hub.set_streams(streams.active_frames, streams.observe)
    metrics = Metrics()
    overload = OverloadGuard()

    measured = config.metrics.enabled

    def on_lag_sample(lag: float) -> None:
        if measured:
            metrics.loop_lag.observe(lag)
        pool_queue = sum(stats.queued for stats in executors.stats.values())
        overload.update(lag, pool_queue, asyncio.get_running_loop().time())

    ctx = ChatContext(
        config=config, instance_id=instance_id, store=store, broker=broker,
        executors=executors, hub=hub, rooms=Rooms(store), messages=messages, streams=streams,
        metrics=metrics, overload=overload, connections=connections,
        lag=LoopLagMonitor(observe=on_lag_sample,
                           stall_watch=StallWatch(config.log.slow_callback_ms / 1000)),
        send_limiter=KeyedLimiter(limits.rate.per_second, limits.rate.burst),
        login_user_limiter=KeyedLimiter(limits.login.user_per_minute / 60,
                                        limits.login.user_burst),
        login_address_limiter=KeyedLimiter(limits.login.address_per_minute / 60,
                                           limits.login.address_burst),
    )
    if measured:
        metrics.bind(ctx)
    return ctx


async def ensure_admin(ctx: ChatContext) -> None:
    """First start on an empty store: create `admin` with a random password, printed once."""
    if await ctx.store.count_users() > 0:
        return
    password = secrets.token_urlsafe(12)
    try:
        await ctx.store.create_user("admin", await ctx.executors.hash_password(password),
                                    is_admin=True)
    except Exception as exc:  # another process of the same cluster won the race
        log.debug("admin not created: %r", exc)
        return
    log.warning("created user 'admin' with password %s (shown once; change it)", password)


async def _close_connections(app: web.Application) -> None:
    """SIGTERM: stop taking work, then close every socket with 1001 after its queued frames."""
    ctx = app.get(CONTEXT)
    if ctx is None:
        return
    ctx.shutting_down = True
    sessions = list(ctx.connections)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_FLUSH_TIMEOUT
    # Sends already admitted (rendering, or appending) finish first, so their acks go out
    # before the 1001 close; new ones are refused with `overloaded` meanwhile.
    while loop.time() < deadline:
        pending = {task for session in sessions for task in session.pending_sends}
        if pending:
            await asyncio.wait(pending, timeout=deadline - loop.time())
        elif any(session.storing for session in sessions):
            await asyncio.sleep(0.01)
        else:
            break
    for session in sessions:
        session.outbox.close(CloseCode.GOING_AWAY, "server shutting down; reconnect")
    deadline = loop.time() + SHUTDOWN_FLUSH_TIMEOUT
    while len(ctx.connections) and loop.time() < deadline:
        await asyncio.sleep(0.05)

