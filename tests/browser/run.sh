#!/usr/bin/env bash
# The browser test of `sgraf-cli serve`: builds sgraf-cli, makes a fixture
# folder (two photos through the tiny fixture detector and a feature file),
# starts the server on an ephemeral port with an access token (SGRAF_TOKEN),
# drives the page in Debian's chromium with playwright-core (test.mjs: the
# token prompt, a wrong then the right token, results, a region view), and
# stops the server.
# Needs /usr/bin/chromium (apt-get install chromium) and node + npm.
# Exit 0 on success; SCREENSHOT (default target/serve-screenshot.png) is
# written, and the token prompt beside it (serve-screenshot-token.png).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
shot="${SCREENSHOT:-$root/target/serve-screenshot.png}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "browser test: $chromium not found (apt-get install chromium)" >&2
  exit 3
fi
[ -d "$here/node_modules/playwright-core" ] || (cd "$here" && npm ci --no-audit --no-fund)
cargo build -q -p sgraf-cli -p xtask
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/debug/sgraf-cli"
work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$target/debug/xtask" convert-weights --detector tests/fixtures/vision/bua_dim40_k36.pth --out "$work/detector" >/dev/null
mkdir -p "$work/images/sub"
cp tests/fixtures/vision/images/wide.png "$work/images/wide.png"
cp tests/fixtures/vision/images/tall.png "$work/images/sub/tall.png"
# A feature file (with its NAME.json boxes) next to the photos.
"$bin" extract --detector "$work/detector" --images "$work/images" --out "$work/feats" >/dev/null 2>&1
cp "$work/feats/wide.npy" "$work/images/features-only.npy"
cp "$work/feats/wide.json" "$work/images/features-only.json"
token="browser-test-$RANDOM-$RANDOM-$$"
SGRAF_TOKEN="$token" "$bin" serve -m tests/fixtures/sgr -m tests/fixtures/saf --images "$work/images" \
  --detector "$work/detector" --port 0 > "$work/serve.out" 2> "$work/serve.err" &
server=$!
url=""
for _ in $(seq 1 300); do
  url="$(grep -o 'http://[0-9.:]*/' "$work/serve.out" 2>/dev/null | head -1 || true)"
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
  sleep 0.2
done
[ -n "$url" ] || { echo "serve did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
mkdir -p "$(dirname "$shot")"
CHROMIUM="$chromium" SGRAF_TEST_TOKEN="$token" node "$here/test.mjs" "${url%/}" "a dog playing in the snow" "$shot"
