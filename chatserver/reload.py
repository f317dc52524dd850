"""SIGHUP: re-read the configuration file and apply what can change while running.

`[limits]` and `[log]` apply at once (rate limits, caps, queue bounds for connections opened
from now on, replay and stream limits, log level and format, the slow-callback threshold); any
other section that changed is reported as needing a restart and left as it was. A file that
does not validate changes nothing: the error is logged and the running configuration stays.
"""

from __future__ import annotations

import dataclasses
import logging

from chatserver import log as logsetup
from chatserver.config import Config, ConfigError, load_config
from chatserver.context import ChatContext

log = logging.getLogger(__name__)

RELOADABLE = ("limits", "log")


def reload(ctx: ChatContext) -> Config | None:
    """Apply the file at `ctx.config.source`; the new configuration, or None if unchanged."""
    current = ctx.config
    if current.source == "<defaults>":
        log.warning("SIGHUP: running on built-in defaults, no file to reload")
        return None
    try:
        fresh = load_config(current.source)
    except ConfigError as error:
        log.error("SIGHUP: configuration not reloaded: %s", error)
        return None
    frozen = [f.name for f in dataclasses.fields(Config)
              if f.name not in RELOADABLE and f.name != "source"
              and getattr(fresh, f.name) != getattr(current, f.name)]
    if frozen:
        log.warning("SIGHUP: [%s] changed but takes a restart; kept as running",
                    "], [".join(frozen))
    applied = dataclasses.replace(current, limits=fresh.limits, log=fresh.log)
    apply(ctx, applied)
    log.info("SIGHUP: configuration reloaded from %s", current.source)
    return applied


def apply(ctx: ChatContext, config: Config) -> None:
    limits = config.limits
    ctx.config = config
    ctx.send_limiter.reconfigure(limits.rate.per_second, limits.rate.burst)
    ctx.login_user_limiter.reconfigure(limits.login.user_per_minute / 60,
                                       limits.login.user_burst)
    ctx.login_address_limiter.reconfigure(limits.login.address_per_minute / 60,
                                          limits.login.address_burst)
    ctx.hub.replay_max = limits.replay_max
    ctx.streams.idle_seconds = limits.stream_idle
    ctx.streams.max_bytes = limits.max_message_bytes
    logsetup.configure(config.log)
    ctx.lag.stall_watch.set_threshold(config.log.slow_callback_ms / 1000)
