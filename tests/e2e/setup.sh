#!/usr/bin/env bash
# Installs the npm side of the end-to-end tests (the real @segment/analytics-next and
# playwright-core, exact versions from package-lock.json) into tests/e2e/node_modules, and the
# demo's (analytics-next, the integration packages, esbuild: demo/package-lock.json) into
# demo/node_modules.
# Never downloads a browser: the tests drive Debian's /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if ! command -v npm >/dev/null 2>&1; then
  echo "tests/e2e/setup.sh: npm not found: apt-get install nodejs npm" >&2
  exit 1
fi
# npm ci leaves node_modules/.package-lock.json behind; when it equals the committed lock,
# the install is current and nothing needs to run.
if ! { [ -f node_modules/.package-lock.json ] &&
        [ node_modules/.package-lock.json -nt package-lock.json ] &&
        [ -d node_modules/playwright-core ] && [ -d node_modules/@segment/analytics-next ]; }; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
. ../../scripts/lib.sh
ensure_demo_node_modules
