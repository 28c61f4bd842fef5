#!/usr/bin/env bash
# Install what is missing, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
# Two workers: most of a test's wall time is spent waiting on sockets and child processes.
exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 "$@"
