#!/usr/bin/env bash
# Builds the engine (`tcoder-worker`) of an earlier commit for `make bench` to run beside this
# one's, and prints the folder holding it: target/bench/baseline-<rev>/.
#
# In a worktree of its own with a target folder of its own: cargo judges freshness by file
# times, and two checkouts sharing one target folder would each take the other's build as
# fresh. A folder already holding the binary is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
REV="$(git rev-parse --short "$1")"
OUT="$2"
DIR="$OUT/baseline-$REV"
if [ ! -x "$DIR/tcoder-worker" ]; then
  SRC="$OUT/baseline-src"
  git worktree remove --force "$SRC" 2>/dev/null || true
  git worktree add --detach "$SRC" "$REV" >&2
  cargo build --release -p tcoder-worker --manifest-path "$SRC/Cargo.toml" \
    --target-dir "$OUT/baseline-target" >&2
  mkdir -p "$DIR"
  cp "$OUT/baseline-target/release/tcoder-worker" "$DIR/"
  git worktree remove --force "$SRC"
fi
echo "$DIR"
