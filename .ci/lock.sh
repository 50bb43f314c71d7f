#!/usr/bin/env bash
# Refreshes constraints.txt: resolves pyproject.toml's ranges in a throw-away
# virtual environment and records the exact versions it installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --quiet --upgrade pip
"$TMP/venv/bin/python" -m pip install --quiet -e ".[dev]"
{
  echo "# Exact versions the README's commands and CI install (pip's constraints file)."
  echo "# pyproject.toml keeps open ranges for library users; this file pins what a fresh"
  echo "# install resolves. Refresh it with: bash .ci/lock.sh  (then run bash .ci/test.sh)."
  echo "pip==$("$TMP/venv/bin/python" -m pip --version | cut -d' ' -f2)"
  "$TMP/venv/bin/python" -m pip freeze --exclude-editable
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pinned packages"
