#!/usr/bin/env bash
# `make bench`: measures tcoder against FFmpeg itself and its own control plane, and writes
# docs/BENCHMARKS.md. Everything is measured side by side in this one run (ratios), with min
# and median over repeats: absolute numbers on a shared machine are noise, ratios are not.
#
#   BENCH_REPEATS=3        repeats of each engine comparison (default 3; scripts/bench_engine.sh)
#   BENCH_LATENCY_JOBS=200 jobs measured one at a time for latency
#   BENCH_THROUGHPUT_JOBS=500
#   BENCH_BASELINE=<git rev> also runs that commit's engine, interleaved with this one's, in
#                          every engine comparison (what a change to the engine costs)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
LATENCY_JOBS="${BENCH_LATENCY_JOBS:-200}"
THROUGHPUT_JOBS="${BENCH_THROUGHPUT_JOBS:-500}"
OUT=target/bench
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*" >&2; }

step "building (release): a worker with the bench-only no-op engine, then the normal binaries"
cargo build --release -p tcoder-worker --features bench
cp target/release/tcoder-worker "$OUT/tcoder-worker-bench"
# Rebuilt without the feature: target/release/tcoder-worker stays the production binary.
cargo build --release --workspace --bins

step "engine vs ffmpeg (split) vs ffmpeg (one run per quality), and where its time goes"
BENCH_ENGINE_SPLICE=0 ./scripts/bench_engine.sh

step "split title: a 4-minute 1080p30 source whole against split into 60 s chunks"
# Measured and checked for equivalence by the same script as `make split-check`; a difference
# is reported among the targets below rather than ending the run.
./scripts/split_check.sh "$OUT/split.json" || echo "the split title differs (see the report)" >&2

step "playable in seconds: 1-, 4-, 10- and 30-minute 1080p30 titles on one worker"
BENCH_PLAYABLE_SPLICE=0 ./scripts/bench_playable.sh

step "per-title ladder: four 30 s sources, fixed against per-title, checked with libvmaf"
BENCH_LADDER_SPLICE=0 ./scripts/bench_ladder.sh

step "control plane with the no-op engine: $LATENCY_JOBS jobs for latency, $THROUGHPUT_JOBS for throughput"
# child: the sandboxed engine process is spawned (and does nothing); in-process: no engine
# process at all, the control plane alone.
for noop in child in-process; do
  ./target/release/tcoder-bench control-plane --noop "$noop" --worker "$OUT/tcoder-worker-bench" \
    --latency-jobs "$LATENCY_JOBS" --throughput-jobs "$THROUGHPUT_JOBS" > "$OUT/control-plane-$noop.json"
done

step "worker memory: idle, a normal job (hls ladder of the easy clip), a 1 GB upload"
./target/release/tcoder-bench memory --worker "$OUT/tcoder-worker-bench" --clip "$OUT/easy.mp4" \
  --upload-bytes 1073741824 > "$OUT/memory.json"

step "writing docs/BENCHMARKS.md"
python3 scripts/bench_report.py "$OUT" > docs/BENCHMARKS.md
grep -E '^(PASS|FAIL)' docs/BENCHMARKS.md >&2 || true
