"""Import the benchmark harness (scripts/benchlib) from tests: it is a package of scripts/,
not of the installed project, and uses relative imports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def benchlib(name: str) -> Any:
    """A benchlib module imported as part of its package."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module(f"benchlib.{name}")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
