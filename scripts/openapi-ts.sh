#!/usr/bin/env bash
# Generates TypeScript types from the server's OpenAPI document and checks that they compile.
#
#   1. `chatter openapi` prints the document (the one `GET /openapi.json` serves) to
#      target/openapi/chatter.openapi.json;
#   2. openapi-typescript (npm) turns it into target/openapi/chatter.d.ts;
#   3. tsc (typescript from npm) type-checks scripts/openapi-ts/check.ts, a small client that
#      uses the generated types (and expects errors where the types must refuse something).
#
# The npm packages are installed (pinned versions) into target/openapi/npm, so nothing global
# is needed besides node and npm. `scripts/test.sh` runs this at its end.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAPI_TYPESCRIPT_VERSION=7.13.0
TYPESCRIPT_VERSION=5.9.3
OUT=target/openapi
NPM_DIR="$OUT/npm"

mkdir -p "$OUT"
cargo run --quiet --locked -p chatter-http --bin chatter -- openapi > "$OUT/chatter.openapi.json"

installed() {
  local package=$1 version=$2
  [ -f "$NPM_DIR/node_modules/$package/package.json" ] &&
    grep -q "\"version\": \"$version\"" "$NPM_DIR/node_modules/$package/package.json"
}
if ! installed openapi-typescript "$OPENAPI_TYPESCRIPT_VERSION" || ! installed typescript "$TYPESCRIPT_VERSION"; then
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent \
    "openapi-typescript@$OPENAPI_TYPESCRIPT_VERSION" "typescript@$TYPESCRIPT_VERSION"
fi

"$NPM_DIR/node_modules/.bin/openapi-typescript" "$OUT/chatter.openapi.json" -o "$OUT/chatter.d.ts"
cp scripts/openapi-ts/check.ts "$OUT/check.ts"
"$NPM_DIR/node_modules/.bin/tsc" --noEmit --strict --target es2022 --module es2022 \
  --moduleResolution bundler "$OUT/check.ts"
echo "openapi-ts: $OUT/chatter.d.ts generated and type-checked"
