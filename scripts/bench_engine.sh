#!/usr/bin/env bash
# `make bench-engine` (and part of `make bench`): the engine against FFmpeg itself on the
# 10 s easy and hard sources, both presets, interleaved (tcoder compare-engine), and where a
# job's CPU goes (FFmpeg decoding alone, decoding and scaling). Writes target/bench/engine-*.json
# and profile-*.txt; alone, it also rewrites section a of docs/BENCHMARKS.md
# (BENCH_ENGINE_SPLICE=0: leave the document to bench_report.py).
#
#   BENCH_REPEATS=3        repeats of each comparison
#   BENCH_BASELINE=<git rev> also runs that commit's engine, interleaved with this one's
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
REPEATS="${BENCH_REPEATS:-3}"
OUT=target/bench
mkdir -p "$OUT"
cargo build --release -p tcoder-worker -p tcoder-cli --bins

# Easy: synthetic pattern, mostly flat. Hard: the same with strong temporal noise (high
# entropy, like film grain or water): far more bits and encoder work per frame.
if [ ! -s "$OUT/easy.mp4" ]; then
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=1920x1080:r=30:d=10 \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=10 \
    -c:v libx264 -preset veryfast -crf 16 -pix_fmt yuv420p -c:a aac -b:a 128k -shortest \
    "$OUT/easy.mp4"
fi
if [ ! -s "$OUT/hard.mp4" ]; then
  ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=s=1920x1080:r=30:d=10,noise=alls=40:allf=t+u" \
    -f lavfi -i anoisesrc=sample_rate=48000:duration=10 \
    -c:v libx264 -preset veryfast -crf 16 -pix_fmt yuv420p -c:a aac -b:a 128k -shortest \
    "$OUT/hard.mp4"
fi

BASELINE_ARGS=()
if [ -n "${BENCH_BASELINE:-}" ]; then
  BASELINE_ARGS=(--baseline-bin-dir "$(./scripts/bench_baseline.sh "$BENCH_BASELINE" "$OUT")")
fi
for clip in easy hard; do
  for preset in web-optimized hls; do
    echo "  engine vs ffmpeg: $clip / $preset, $REPEATS repeats" >&2
    ./target/release/tcoder compare-engine --input "$OUT/$clip.mp4" --preset "$preset" \
      --qualities 720p,360p,144p --x264-preset fast --repeats "$REPEATS" --json \
      "${BASELINE_ARGS[@]}" > "$OUT/engine-$clip-$preset.json"
  done
done

# Profile: CPU seconds of decoding alone and decoding + scaling to the three sizes.
TIMEFORMAT='%U %S'
for clip in easy hard; do
  { time ffmpeg -nostdin -v error -threads 0 -i "$OUT/$clip.mp4" -an -f null - ; } 2> "$OUT/profile-$clip-decode.txt"
  { time ffmpeg -nostdin -v error -threads 0 -i "$OUT/$clip.mp4" -an -filter_complex \
      "[0:v]split=3[a][b][c];[a]scale=1280:720[o1];[b]scale=640:360[o2];[c]scale=256:144[o3]" \
      -map '[o1]' -f null - -map '[o2]' -f null - -map '[o3]' -f null - ; } 2> "$OUT/profile-$clip-scale.txt"
done

if [ "${BENCH_ENGINE_SPLICE:-1}" = 1 ]; then
  python3 scripts/bench_engine.py "$OUT" docs/BENCHMARKS.md
fi
