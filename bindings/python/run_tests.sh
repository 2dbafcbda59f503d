#!/usr/bin/env bash
# The Python package's tests: builds `sgraf` (dev profile, reusing
# $CARGO_TARGET_DIR) into a fresh virtualenv whose only Python dependencies
# are numpy, pytest and maturin (no torch), then runs pytest on the
# committed fixtures against `sgraf-cli` of the same build.
#
# Exit status: pytest's (0 all passed; anything else, including "no tests
# collected", is a failure). Without `python3 -m venv` it prints
# "python tests: skipped (...)" and exits 0: the Rust suite needs no Python.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"

skip() {
    echo "python tests: skipped ($1)"
    exit 0
}

command -v "$py" >/dev/null 2>&1 || skip "apt-get install -y python3-venv"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    skip "sgraf needs CPython >= 3.10, found $("$py" --version 2>&1)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/sgraf-python-tests.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# Debian's python3 has the venv module but not ensurepip without python3-venv.
"$py" -m venv "$tmp/venv" >"$tmp/venv.log" 2>&1 || skip "apt-get install -y python3-venv"
venv="$tmp/venv"

set -e
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
step() { echo "python tests: $*" >&2; }

step "installing numpy, pytest, maturin into a fresh virtualenv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy pytest 'maturin>=1.9.4,<2'

step "building sgraf-cli and the fixture detector"
(cd "$root" && cargo build --quiet -p sgraf-cli)
(cd "$root" && cargo xtask convert-weights --detector tests/fixtures/vision/bua_dim40_k36.pth \
    --out "$tmp/detector" >/dev/null)

step "building the sgraf package (maturin develop)"
(cd "$here" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet)
set +e

step "pytest"
(
    cd "$here" &&
        SGRAF_CLI="$CARGO_TARGET_DIR/debug/sgraf-cli" SGRAF_TEST_DETECTOR="$tmp/detector" \
            "$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
)
status=$?
case $status in
0) echo "python tests: passed" ;;
5) echo "python tests: FAILED (pytest collected no tests)" ;;
*) echo "python tests: FAILED (pytest exit status $status)" ;;
esac
[ "$status" -eq 5 ] && exit 1
exit "$status"
