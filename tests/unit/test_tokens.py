"""API and session tokens: random, URL-safe, and usable as a command-line argument."""

from __future__ import annotations

import re

from chatserver.tokens import new_token


def test_tokens_are_url_safe_distinct_and_never_look_like_an_option() -> None:
    """One token in 64 of `token_urlsafe` starts with "-", which argparse takes for an
    option (`chat --token -x…`): 3,000 tokens would show it with near certainty."""
    tokens = [new_token() for _ in range(3_000)]
    assert len(set(tokens)) == len(tokens)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", token) for token in tokens)
    assert not [token for token in tokens if token.startswith("-")]
