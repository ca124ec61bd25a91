#!/usr/bin/env bash
# Side-by-side benchmark of Chatter's Python binding against LangGraph (see compare.py).
# Creates its own venv under target/ with langgraph, langgraph-checkpoint-sqlite and maturin
# from PyPI, builds and installs the chatter wheel (release), then runs compare.py with any
# arguments given (e.g. --quick, --modes memory, --clock cpu, --markdown out.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/compare-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check langgraph langgraph-checkpoint-sqlite "maturin>=1.7,<2"
rm -rf target/compare-wheels
"$VENV/bin/maturin" build --locked --release -m chatter-py/Cargo.toml -o target/compare-wheels
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/compare-wheels/chatter-*.whl
exec "$VENV/bin/python" benches/compare/compare.py "$@"
