"""With `[server] processes = 2` one scrape of /metrics covers both workers (issue 5): the
real daemon under its supervisor, on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import WsClient
from tests.system.daemon import Daemon, connect, to_thread

pytestmark = pytest.mark.system

SCRAPES = 8  # each on a new TCP connection: the kernel picks the worker that answers


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short RUNTIME_DIRECTORY, as systemd's /run/chatserver is: pytest's tmp_path can be
    too deep for a Unix socket path (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="csrun-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def two_workers(tmp_path: Path, runtime_dir: Path, postgres_dsn: str, redis_url: str
                ) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path)
    daemon.env["RUNTIME_DIRECTORY"] = str(runtime_dir)
    daemon.config_path.write_text(
        "[server]\n"
        f'host = "127.0.0.1"\nport = {daemon.port}\nprocesses = 2\nshutdown_timeout = 5\n'
        f'[store]\nbackend = "postgres"\ndsn = "{postgres_dsn}"\npool_size = 4\n'
        f'[broker]\nbackend = "redis"\nurl = "{redis_url}"\n'
        "[limits.rate]\nper_second = 1000\nburst = 1000\n"
        '[pools]\nprocesses = 1\n[log]\nlevel = "info"\n')
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


def by_worker(text: str, sample: str, **labels: str) -> dict[str, float]:
    """worker -> value of `sample` with `labels` (besides `worker`); asserts that every
    sample of the scrape carries a worker label."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert "worker" in s.labels, f"{s.name}{s.labels} has no worker label"
            rest = {k: v for k, v in s.labels.items() if k != "worker"}
            if s.name == sample and rest == labels:
                out[s.labels["worker"]] = s.value
    return out


async def test_one_scrape_covers_both_workers(two_workers: Daemon) -> None:
    """Whichever worker answers, its scrape holds both workers' samples, each labelled with
    its worker: their connection counts are those the clients saw (by `hello.instance`),
    both report PostgreSQL and Redis up, and a message sent on one worker is timed as a
    local delivery there and as a remote one on the other."""
    daemon = two_workers
    await to_thread(daemon.cli_ok, "room", "create", "general")
    token = await to_thread(daemon.add_user, "alice")
    async with aiohttp.ClientSession() as http:
        clients: list[WsClient] = []
        per_instance: Counter[str] = Counter()
        while len(per_instance) < 2 or min(per_instance.values()) < 2:
            assert len(clients) < 40, f"connections never reached both workers: {per_instance}"
            client = await connect(http, daemon, token)
            clients.append(client)
            per_instance[client.hello["instance"]] += 1
        for client in clients:
            await client.join("general")

        for _ in range(SCRAPES):
            text = await to_thread(_get, daemon.base_url + "/metrics")
            connections = by_worker(text, "chat_connections")
            assert sorted(connections) == ["0", "1"]
            assert sorted(connections.values()) == sorted(per_instance.values())
            assert by_worker(text, "chat_metrics_worker_up") == {"0": 1.0, "1": 1.0}
            for role, backend in (("store", "postgres"), ("broker", "redis")):
                up = by_worker(text, "chat_backend_up", role=role, backend=backend)
                assert up == {"0": 1.0, "1": 1.0}, (role, up)

        assert (await clients[0].say("general", "hi all"))["op"] == "ack"
        for client in clients:
            assert (await client.recv_op("message"))["text"] == "hi all"
        await asyncio.sleep(0.1)  # the last copies' flusher pass has reported by now
        text = await to_thread(_get, daemon.base_url + "/metrics")
        latency = "chat_delivery_latency_seconds_count"
        for copy in ("first", "last"):
            local = by_worker(text, latency, copy=copy, origin="local")
            remote = by_worker(text, latency, copy=copy, origin="remote")
            assert sorted(local.values()) == [0.0, 1.0], local
            assert sorted(remote.values()) == [0.0, 1.0], remote
            (sender,) = [w for w, n in local.items() if n == 1.0]
            assert remote[sender] == 0.0
        stored = by_worker(text, "chat_messages_stored_total")
        assert sum(stored.values()) == 1
        deliveries = by_worker(text, "chat_deliveries_total")
        assert sum(deliveries.values()) >= len(clients)
        for client in clients:
            await client.close()


async def test_the_workers_sockets_live_in_a_private_directory_removed_at_exit(
        two_workers: Daemon, runtime_dir: Path) -> None:
    """The supervisor makes one 0700 directory (under $RUNTIME_DIRECTORY, as systemd's
    RuntimeDirectory= sets it) holding a socket per worker, and removes it when it stops."""
    daemon = two_workers
    (made,) = runtime_dir.iterdir()
    assert made.name.startswith("chatserver-metrics-")
    assert made.stat().st_mode & 0o777 == 0o700
    # /healthz answers once one worker is up; the other may still be binding its socket
    deadline = time.monotonic() + 15
    while sorted(os.listdir(made)) != ["worker-0.sock", "worker-1.sock"]:
        assert time.monotonic() < deadline, f"worker sockets: {sorted(os.listdir(made))}"
        await asyncio.sleep(0.05)
    await to_thread(daemon.kill, signal.SIGTERM)
    assert await to_thread(daemon.wait, 30) == 0, daemon.stderr()[-3000:]
    assert not made.exists()
