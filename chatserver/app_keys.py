"""Typed keys for the application's state (aiohttp `AppKey`), in a module of their own so
handlers can import them without importing the app factory."""

from __future__ import annotations

from aiohttp import web

from chatserver.config import Config
from chatserver.context import ChatContext

CONFIG = web.AppKey("config", Config)
CONTEXT = web.AppKey("context", ChatContext)
