"""Run the server: uvloop, listen, notify systemd, and shut down cleanly on SIGTERM/SIGINT.

Shutdown order (aiohttp's runner does the steps in this order): stop accepting; `on_shutdown`
lets sends in flight finish and closes every socket with 1001 after its queued frames; then
`cleanup_ctx` closes the store, which commits every write already submitted; exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable

import uvloop
from aiohttp import web

from chatserver.app import create_app
from chatserver.config import Config

log = logging.getLogger(__name__)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


def run(config: Config, on_ready: Callable[[], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT. `on_ready` replaces READY=1 (a supervised worker)."""
    return uvloop.run(serve(config, on_ready))


async def serve(config: Config, on_ready: Callable[[], None] | None = None) -> int:
    server = config.server
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=server.shutdown_timeout)
    try:
        await runner.setup()
    except Exception as exc:
        log.error("start-up failed: %s", getattr(exc, "message", None) or exc)
        return 1
    site = web.TCPSite(runner, server.host, server.port, reuse_port=server.processes > 1)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s; set [server] port or stop the other process",
                  server.host, server.port, exc.strerror or exc)
        await runner.cleanup()
        return 1
    log.info("listening on http://%s:%d", server.host, server.port)
    if on_ready is None:
        sd_notify("READY=1")
    else:
        on_ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP's default would kill the daemon; configuration reload is not implemented yet,
    # so a stray `systemctl reload` must be harmless.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: reload is "
                                                              "not supported; restart instead"))
    await stop.wait()
    log.info("shutting down")
    sd_notify("STOPPING=1")
    await runner.cleanup()
    log.info("stopped")
    return 0
