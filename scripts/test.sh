#!/usr/bin/env bash
# Install what is missing, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
# Two workers: most of a test's wall time is spent waiting on sockets and child processes.
echo "== tests (two workers)"
.venv/bin/python -m pytest -p no:cacheprovider -n 2 -m "not serial" "$@"
# Floods and file-limit tests measure how fast the service answers: they run alone.
echo "== tests that need the machine to themselves"
status=0
.venv/bin/python -m pytest -p no:cacheprovider -m serial "$@" || status=$?
# 5 is pytest's "no test selected", when the arguments name none of them.
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
  exit "$status"
fi
# The same suite on the other storage layer: a real PostgreSQL server per worker.
export VMS_TEST_DATABASE=postgresql
echo "== tests on PostgreSQL (two workers)"
.venv/bin/python -m pytest -p no:cacheprovider -n 2 -m "not serial" "$@"
echo "== tests on PostgreSQL that need the machine to themselves"
status=0
.venv/bin/python -m pytest -p no:cacheprovider -m serial "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
  exit "$status"
fi
