#!/usr/bin/env bash
# `make bench-playable` (also a step of `make bench`): 1-, 4-, 10- and 30-minute 1080p30
# sources as HLS jobs on one worker, time to `playable` and to `completed` under the shipped
# settings and the ones before progressive playback (tcoder-bench playable). Writes
# target/bench/playable.json; alone, it also rewrites that section of docs/BENCHMARKS.md.
#
#   BENCH_PLAYABLE_MINUTES=1,4,10,30   which lengths (default all four; about 2 h on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench
MINUTES="${BENCH_PLAYABLE_MINUTES:-1,4,10,30}"
mkdir -p "$OUT"
./scripts/setup.sh
cargo build --release -p tcoder-worker -p tcoder-bench
# One minute encoded (testsrc2 and a tone, 1080p30), the longer sources that minute repeated
# without re-encoding.
if [ ! -s "$OUT/playable-1m.mp4" ]; then
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=1920x1080:r=30:d=60 \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=60 \
    -c:v libx264 -preset veryfast -crf 20 -g 60 -pix_fmt yuv420p -c:a aac -b:a 128k -shortest \
    "$OUT/playable-1m.mp4"
fi
SOURCES=()
for m in ${MINUTES//,/ }; do
  if [ ! -s "$OUT/playable-${m}m.mp4" ]; then
    ffmpeg -nostdin -v error -y -stream_loop "$((m - 1))" -i "$OUT/playable-1m.mp4" -c copy \
      "$OUT/playable-${m}m.mp4"
  fi
  SOURCES+=("$OUT/playable-${m}m.mp4")
done
LIST="$(IFS=,; echo "${SOURCES[*]}")"
./target/release/tcoder-bench playable --worker target/release/tcoder-worker --sources "$LIST" \
  > "$OUT/playable.json"
if [ "${BENCH_PLAYABLE_SPLICE:-1}" = 1 ]; then
  python3 scripts/bench_playable.py "$OUT" docs/BENCHMARKS.md
fi
