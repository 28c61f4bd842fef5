#!/usr/bin/env bash
# Install what is missing, then serve on the embedded defaults (API :8080, media :9996, ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
exec .venv/bin/python server.py "$@"
