#!/usr/bin/env bash
# Shared set-up: Debian packages (as root), a virtual environment and pip packages.
# Usage: scripts/setup.sh [run|test]
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

need=()
python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
# The README's walk-through talks to the service with curl; a minimal Debian has none.
command -v curl >/dev/null || need+=(curl)
if [ "$mode" = test ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  # The push-across-processes tests start their own redis-server on a free port.
  [ -x /usr/bin/redis-server ] || need+=(redis-server)
  # The Playwright driver's own node needs libatomic, which a minimal Debian lacks.
  ldconfig -p 2>/dev/null | grep -q 'libatomic.so.1 ' || need+=(libatomic1)
  # The suite's second pass runs on a real PostgreSQL server (tests/support/postgres.py).
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  echo "setup: refreshing the Debian package lists (apt-get update)"
  apt-get update -qq
  echo "setup: installing Debian packages: ${need[*]} with their dependencies"
  case " ${need[*]} " in
    *" chromium "* | *" nodejs "*)
      echo "setup: (chromium and nodejs bring several hundred packages: a few minutes, quietly)" ;;
  esac
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "setup: Debian packages installed"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the virtual environment in .venv"
  python3 -m venv .venv
fi
echo "setup: upgrading pip in .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if [ "$mode" = test ]; then
  echo "setup: installing Python packages from requirements-dev.txt (the service's and the tests')"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  if [ -f tests/node/package-lock.json ]; then
    echo "setup: installing pusher-js and Laravel Echo for the browser-side tests"
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  echo "setup: installing Python packages from requirements.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
fi
echo "setup: done"
