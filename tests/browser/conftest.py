"""Fixtures for the browser tests: Debian's headless chromium driven by Playwright against the
real chatserver daemon (one for the whole session, on a free port with a temp SQLite file).

Playwright never downloads a browser here: it launches /usr/bin/chromium (Debian's package)
through `executable_path`, and the pinned Playwright release speaks that chromium's protocol.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.browser.ui import CHROMIUM, ChatServer, chromium_missing
from tests.system.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]
USERS = ("alice", "bob", "carol")
EXPECT_TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and measurements go: $CHATSERVER_TEST_ARTIFACTS or test-artifacts/."""
    base = Path(os.environ.get("CHATSERVER_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path = base / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """The real daemon with users alice, bob and carol (passwords and API tokens known)."""
    daemon = Daemon(tmp_path_factory.mktemp("browser-daemon"))
    try:
        daemon.start()
        passwords = {name: f"{name}-password-1" for name in USERS}
        with ThreadPoolExecutor(max_workers=len(USERS)) as pool:
            tokens = dict(zip(USERS, pool.map(lambda n: daemon.add_user(n, passwords[n]), USERS),
                              strict=True))
        yield ChatServer(daemon, passwords, tokens)
    finally:
        daemon.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless chromium for the session; each test opens its own contexts."""
    problem = chromium_missing()
    if problem:
        pytest.fail(problem)
    from playwright.async_api import async_playwright, expect

    # Generous: the machine is small and shared; a passing wait returns as soon as it holds.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()
