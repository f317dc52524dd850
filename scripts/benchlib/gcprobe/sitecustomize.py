"""`--gc-stats`: how long the server's cyclic-GC collections take, without touching its code.

This directory is put first on the server's PYTHONPATH only, so Python imports this module at
start-up (site.py imports `sitecustomize`). With BENCH_GC_STATS_DIR set it registers a
`gc.callbacks` hook timing every collection per generation and writes `<pid>.json` there after
every full (generation 2) collection, every 200 collections and at exit: forked workers leave
with os._exit, which skips atexit, so the file is kept current as it goes. The cost is two
Python calls per collection.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from typing import Any

_DIR = os.environ.get("BENCH_GC_STATS_DIR")


def _install(directory: str) -> None:
    started = [0.0]
    stats = {g: {"count": 0, "total_ms": 0.0, "max_ms": 0.0} for g in range(3)}
    seen = [0]

    def dump() -> None:
        doc = {"pid": os.getpid(), "argv": sys.argv, "generations": stats}
        tmp = os.path.join(directory, f".{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, os.path.join(directory, f"{os.getpid()}.json"))

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000.0
        s = stats[info["generation"]]
        s["count"] += 1
        s["total_ms"] += ms
        s["max_ms"] = max(s["max_ms"], ms)
        seen[0] += 1
        if info["generation"] == 2 or seen[0] % 200 == 0:
            dump()

    gc.callbacks.append(callback)
    atexit.register(dump)


if _DIR:
    _install(_DIR)
