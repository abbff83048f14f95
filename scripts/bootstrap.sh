#!/usr/bin/env bash
# Creates .venv and installs the project with its test extras. Idempotent and quick when
# nothing changed: the install is redone only when pyproject.toml is newer than the stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages: redis-server backs the shared rate limit (rateLimit.global) and its
# tests; chromium + chromium-driver run the experiment page's browser test (selenium).
# Each is installed only when missing and only as root (CI starts from a bare machine).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  # shellcheck disable=SC2086  # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.modelroute-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # pip's output (and its warnings about this machine's package mirrors) goes to a log,
  # shown only when the install fails.
  log="$VENV/install.log"
  echo "installing modelroute and its dependencies into $VENV (log: $log)"
  if ! { "$VENV/bin/pip" install --upgrade pip && "$VENV/bin/pip" install -e ".[test]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "install failed; full log: $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
