#!/usr/bin/env bash
# Builds the book (docs/book) with mdBook. Its examples are tested by
# `cargo test -p sgraf-cli --test book` (commands, links) and
# `cargo test -p sgraf --doc` (Rust), so `mdbook test`, which cannot link
# the workspace's crates, adds nothing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v mdbook >/dev/null; then
    echo "book: skipped (cargo install mdbook --locked)"
    exit 0
fi
# mdbook reports a missing {{#include}} file as an error but still exits 0.
log=$(mdbook build . 2>&1) || { echo "$log"; exit 1; }
echo "$log"
if grep -q "ERROR" <<<"$log"; then
    echo "book: mdbook reported an error"
    exit 1
fi
echo "book: built into docs/book/book ($(mdbook --version))"
