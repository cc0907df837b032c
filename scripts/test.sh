#!/usr/bin/env bash
# Installs Tessera with its test dependencies into .venv and runs the whole test suite on real
# PostgreSQL and Redis (started if they are not running). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The HTML drift report is checked in a real headless browser (Debian's Chromium), and the notifier's
# Alertmanager API with Alertmanager's own client, amtool (Debian's prometheus-alertmanager): install
# them if we can.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "warning: could not install ${missing[*]}"
fi

eval "$(.venv/bin/python scripts/ensure_services.py)"
exec .venv/bin/python -m pytest "$@"
