#!/usr/bin/env bash
# The README's test command: sets everything up from nothing, then runs lint,
# type checks and the whole test suite against the embedded broker (or the
# broker named by MODELOG_TEST_BROKER; Apache Kafka via testcontainers where a
# Docker engine answers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=${MODELOG_VENV:-$ROOT/.venv}

step() { printf '\n=== %s\n' "$*"; }

step "python environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Exact versions from constraints.txt (refresh: bash .ci/lock.sh); torch is the
# CPU build (2.13.0+cpu) that the project's range admits.
"$VENV/bin/python" -m pip install --quiet -c constraints.txt --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"

step "browser for the dashboard tests"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium/chromedriver missing and not root: browser tests will be skipped"
  fi
fi
if [ "${CI:-}" = "true" ]; then export MODELOG_REQUIRE_BROWSER=1; fi

step "ruff"
"$VENV/bin/ruff" check .

step "mypy (strict)"
SHADOW=$(mktemp -d)
trap 'rm -rf "$SHADOW"' EXIT
ln -s "$ROOT" "$SHADOW/modelog"
(cd "$SHADOW" && "$VENV/bin/mypy" --config-file "$ROOT/pyproject.toml" --exclude '/tests/' --exclude '/\.venv/' -p modelog)

step "pytest"
"$VENV/bin/python" -m pytest "$@"
