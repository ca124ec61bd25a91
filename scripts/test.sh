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
