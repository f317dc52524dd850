"""The client's HTTP side: GET a JSON object from the server's REST API (history), with the
server's error bodies and Retry-After mapped onto the client's errors."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from .backoff import _retry_after
from .errors import RequestTimeout, ServerError, Unreachable, server_error


async def get_json(session: aiohttp.ClientSession, base: str, path: str,
                   params: dict[str, str], *, token: str, timeout: float) -> dict[str, Any]:
    """GET `base + path` with the bearer `token`; the JSON object answered, or the error an
    HTTP error body (or no answer within `timeout` seconds) stands for."""
    try:
        async with session.get(
                base + path, params=params,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
            status, raw, headers = reply.status, await reply.read(), reply.headers
    except TimeoutError:
        raise RequestTimeout(f"no answer from {base} within {timeout:g} s") from None
    except (OSError, aiohttp.ClientError) as exc:
        raise Unreachable(f"cannot reach {base}: {exc}") from exc
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ServerError({"code": "internal", "message": f"{base}{path} answered HTTP "
                           f"{status} without a JSON object; is the URL right?"})
    if status >= 400:
        hint = _retry_after(headers)
        if hint is not None:
            body.setdefault("retry_after", hint)
        raise server_error(body)
    return body
