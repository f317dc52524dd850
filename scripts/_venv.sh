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

ensure_apt_packages() {  # ensure_apt_packages COMMAND=PACKAGE ...  (installs what is missing)
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%=*}"; pkg="${pair#*=}"
    command -v "$cmd" >/dev/null 2>&1 || compgen -G "$cmd" >/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages start their own services; tests never use them (they start throwaway
    # servers on free ports), so leave them as the package set them up.
  else
    echo "missing Debian packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]})" >&2
    return 1
  fi
}
