#!/usr/bin/env bash
# Installs Tessera with its test dependencies into .venv and runs the whole test suite on real
# PostgreSQL and Redis (started if they are not running). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The HTML drift report is checked in a real headless browser; install Debian's Chromium if we can.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"
fi

eval "$(.venv/bin/python scripts/ensure_services.py)"
exec .venv/bin/python -m pytest "$@"
