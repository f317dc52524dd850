"""An admin command (`chatserver user list`, `room create`, …) is a short-lived process: it
must not pay for the web server. Importing aiohttp and prometheus-client took 0.8 s of every
admin command's 1.2 s on a slow machine."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("aiohttp", "prometheus_client", "uvloop", "redis", "asyncpg")


def test_the_admin_cli_imports_no_web_server_metrics_or_backend_client() -> None:
    code = ("import sys, chatserver.cli; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout
