"""The one object that holds a running instance's parts, created and closed in app.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chatserver.broker.base import Broker
from chatserver.config import Config
from chatserver.executors import Executors
from chatserver.hub import Hub
from chatserver.looplag import LoopLagMonitor
from chatserver.messages import MessageService
from chatserver.metrics import Metrics
from chatserver.outbox import Flusher
from chatserver.overload import OverloadGuard
from chatserver.ratelimit import KeyedLimiter
from chatserver.rooms import Rooms
from chatserver.session import Connections
from chatserver.store.base import Store
from chatserver.streams import Streams


@dataclass(eq=False)
class ChatContext:
    config: Config
    instance_id: str
    store: Store
    broker: Broker
    executors: Executors
    hub: Hub
    rooms: Rooms
    messages: MessageService
    streams: Streams
    metrics: Metrics
    lag: LoopLagMonitor
    overload: OverloadGuard
    # Sized from `config.limits` by app.build_context, resized by reload.apply.
    send_limiter: KeyedLimiter
    login_user_limiter: KeyedLimiter
    login_address_limiter: KeyedLimiter
    connections: Connections = field(default_factory=Connections)
    flusher: Flusher = field(default_factory=Flusher)  # writes every connection's outbox
    shutting_down: bool = False
    # Tasks that must outlive the request that started them (connection cleanup).
    background: set[asyncio.Task[None]] = field(default_factory=set)
