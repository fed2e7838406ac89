#!/usr/bin/env bash
# The test command: installs the environment with the dev extra (first time only), lints, tests.
#   tests/run.sh                 all tests
#   tests/run.sh -m "not slow"   pytest arguments pass through
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/lib/install.sh" --dev
cd "$ROOT"
echo "[recbatch test] ruff check + format check" >&2
.venv/bin/ruff check --config lib/ruff.toml lib jobs tests bench
.venv/bin/ruff format --check --config lib/ruff.toml lib jobs tests bench
exec .venv/bin/python -m pytest -rs tests "$@"
