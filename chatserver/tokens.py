"""API and session tokens: made at random, stored only as their SHA-256.

Apart from chatserver.auth (which checks them on requests) so that the admin commands make
and hash tokens without importing the web server.
"""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    """A random API/session token (256 bits). Never starting with "-": a command line
    would take it for an option (`chat --token -x…` fails in argparse). Redrawing those
    costs the token about 0.02 of a bit."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
