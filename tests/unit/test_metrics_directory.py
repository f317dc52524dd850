"""Where the workers' metrics sockets live: a path that always fits a Unix socket address."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from chatserver.supervisor import UNIX_PATH_MAX, _metrics_directory


def test_under_a_short_runtime_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not tmp_path: under pytest-xdist it is deep enough to force the fallback.
    short = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    try:
        monkeypatch.setenv("RUNTIME_DIRECTORY", str(short))
        made = Path(_metrics_directory())
        assert made.parent == short and made.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(short)


def test_a_too_deep_runtime_directory_falls_back_to_the_temp_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(deep))
    made = _metrics_directory()
    try:
        assert len(os.path.join(made, "worker-999.sock")) < UNIX_PATH_MAX
        assert not any(deep.iterdir()), "the too-deep attempt is removed"
    finally:
        shutil.rmtree(made)
