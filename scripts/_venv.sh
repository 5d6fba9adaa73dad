# Sourced by scripts/demo and scripts/test: create .venv if missing, install what is needed.
# The install is skipped when pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "orch needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.orch-installed
want="$(cat pyproject.toml | cksum) ${1:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".${1:-}" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c 'import orch, typer, sqlite_utils' || { echo "install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
