# Shared by scripts/serve, scripts/test and scripts/check: find Python >= 3.11 and make sure
# the project's virtualenv (.venv, or $CHATSERVER_VENV) exists with the given extras installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CHATSERVER_VENV:-$ROOT/.venv}"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "chatserver needs Python 3.11 or newer; install it (Debian: apt-get install python3) or set PYTHON=/path/to/python3.11" >&2
  return 1
}

ensure_venv() {  # ensure_venv EXTRAS  (e.g. "test" or "")
  local extras="$1" python
  if [ ! -x "$VENV/bin/python" ]; then
    python="$(find_python)"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv "$VENV"
      else
        echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)" >&2
        return 1
      fi
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  "$VENV/bin/python" -m pip install -q -e "$spec"
}
