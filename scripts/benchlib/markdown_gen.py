"""Realistic, deterministic Markdown documents for the `ping` scenario's heavy senders.

The point is to make the server's renderer work the way real chat messages do: headings,
nested lists, fenced code, links, emphasis, inline code and quotes, not one long paragraph.
"""

from __future__ import annotations

import random

_WORDS = [
    "deploy", "cache", "latency", "replica", "shard", "queue", "worker", "token", "session",
    "socket", "payload", "cluster", "backoff", "retry", "timeout", "schema", "index",
    "migration", "rollback", "canary", "metric", "alert", "dashboard", "the", "a", "of", "to",
    "and", "in", "for", "with", "on", "is", "that", "this", "we", "should", "will", "can", "it",
    "not", "from",
]

_CODE = [
    (
        "```python\nasync def fetch(session, url):\n    async with session.get(url) as r:\n"
        "        r.raise_for_status()\n        return await r.json()\n```"
    ),
    (
        "```js\nconst ws = new WebSocket(`wss://${location.host}/ws`);\n"
        "ws.onmessage = (e) => render(JSON.parse(e.data));\n```"
    ),
    (
        "```sql\nSELECT room, count(*) AS n\n  FROM messages\n WHERE ts > now() - interval '1 day'"
        "\n GROUP BY room ORDER BY n DESC LIMIT 10;\n```"
    ),
    "```\n$ chatserver --config prod.toml check-config\nok: prod.toml\n```",
]


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
    i = rng.randrange(len(words))
    style = rng.random()
    if style < 0.25:
        words[i] = f"**{words[i]}**"
    elif style < 0.45:
        words[i] = f"*{words[i]}*"
    elif style < 0.6:
        words[i] = f"`{words[i]}()`"
    elif style < 0.75:
        words[i] = f"[{words[i]}](https://example.com/docs/{words[i]}?ref={rng.randint(1, 999)})"
    return " ".join(words).capitalize() + "."


def _block(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:
        return f"{'#' * rng.randint(1, 3)} {_sentence(rng).rstrip('.')}"
    if kind < 0.35:
        items = [f"- {_sentence(rng)}" for _ in range(rng.randint(2, 5))]
        items.insert(1, f"  - {_sentence(rng)}")  # one nested item, as real notes have
        return "\n".join(items)
    if kind < 0.45:
        return "\n".join(f"{n}. {_sentence(rng)}" for n in range(1, rng.randint(3, 6)))
    if kind < 0.6:
        return rng.choice(_CODE)
    if kind < 0.67:
        return "> " + _sentence(rng) + "\n> " + _sentence(rng)
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))


def document(rng: random.Random, size: int) -> str:
    """One Markdown document of at most `size` UTF-8 bytes, cut at a block boundary."""
    blocks: list[str] = []
    total = 0
    while True:
        block = _block(rng)
        if total + len(block) + 2 > size:
            return "\n\n".join(blocks) if blocks else block[:size]
        blocks.append(block)
        total += len(block) + 2


def documents(count: int, size: int, seed: int = 1) -> list[str]:
    """`count` different documents; generated up front so sending costs the generator nothing."""
    rng = random.Random(seed)
    return [document(rng, size) for _ in range(count)]
