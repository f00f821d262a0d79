#!/usr/bin/env bash
# Quick start: `./quickstart.sh demo` sets everything up and runs the demo on built-in defaults;
# `./quickstart.sh test` sets everything up and runs the test suite (what CI runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-demo}"
shift || true
bash "$root/scripts/setup_env.sh"
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
case "$cmd" in
  demo) exec rainmamba demo "$@" ;;
  test) cd "$root" && exec python -m pytest -q "$@" ;;
  *) echo "usage: ./quickstart.sh demo|test [args...]" >&2; exit 2 ;;
esac
