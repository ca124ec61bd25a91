#!/usr/bin/env bash
# Runs every test of the workspace. The README's test command; `.ci/run` runs it too.
#
# Postgres suites run when CHATTER_TEST_POSTGRES_URL is set (CI sets it and fails when Postgres
# does not answer); otherwise they say that they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CHATTER_TEST_POSTGRES_URL:-}" ]; then
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432 -t 2; then
    export CHATTER_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/test"
    echo "test.sh: Postgres answers on 127.0.0.1:5432; its suites run against $CHATTER_TEST_POSTGRES_URL"
  else
    echo "test.sh: Postgres is not answering on 127.0.0.1:5432 and CHATTER_TEST_POSTGRES_URL is unset: the Postgres suites will be SKIPPED"
  fi
fi

cargo test --workspace --locked

# The Python binding (chatter-py): build the wheel with maturin into a venv this script creates
# under target/ (maturin, pytest and mypy come from PyPI), install it, and run its pytest suite
# against the installed wheel. The dev profile reuses the artifacts of the cargo step above.
PY_VENV=target/py-test-venv
if [ ! -x "$PY_VENV/bin/python" ]; then
  python3 -m venv "$PY_VENV"
fi
"$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.7,<2" pytest mypy
rm -rf target/py-wheels
"$PY_VENV/bin/maturin" build --locked --profile dev -m chatter-py/Cargo.toml -o target/py-wheels
"$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/py-wheels/chatter-*.whl
(cd chatter-py && "../$PY_VENV/bin/python" -m pytest -q -p no:cacheprovider tests)

# The OpenAPI document: TypeScript types generated from it with openapi-typescript must compile
# (npm packages installed under target/openapi/npm by the script).
bash scripts/openapi-ts.sh
# The OpenAI-compatible endpoint (/v1/models, /v1/chat/completions) against the official `openai`
# package from PyPI, in the same venv: the tests start the real `chatter serve` binary (built by
# the cargo step; the build below is a no-op then) on a temporary SQLite file.
cargo build --locked -q -p chatter-http --bin chatter
"$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check "openai>=1.40"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$(pwd)/$TARGET_DIR" ;; esac
CHATTER_BIN="$TARGET_DIR/debug/chatter" \
  "$PY_VENV/bin/python" -m pytest -q -p no:cacheprovider chatter-http/tests/python
