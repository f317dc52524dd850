"""A background job run again and again for the instance's lifetime (retention, the
credential sweep): a failed run is logged and the next one retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from chatserver.errors import StoreUnavailable


async def repeat(what: str, run: Callable[[], Awaitable[object]], log: logging.Logger, *,
                 first: Callable[[], float], then: Callable[[], float],
                 idle: Callable[[], bool] = lambda: False) -> None:
    """`run()` after `first()` seconds, then every `then()` seconds, until cancelled; a pass
    is skipped while `idle()`. The delays are asked for each time (jitter, a changed
    setting). An unavailable store is a warning, anything else is logged with its traceback:
    neither may end the job, the next pass retries."""
    await asyncio.sleep(first())
    while True:
        if not idle():
            try:
                await run()
            except StoreUnavailable as error:
                log.warning("%s skipped, the store is unavailable: %s", what, error.message)
            except Exception:
                log.exception("%s failed", what)
        await asyncio.sleep(then())
