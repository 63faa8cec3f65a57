#!/usr/bin/env bash
# `make split-check` (also a step of `make bench`): a generated 4-minute 1080p30 source with
# audio, encoded whole and split into 60 s chunks (+ the audio item + the stitch), side by
# side; the stitched title is checked against the whole one with ffprobe and ffmpeg's psnr
# filter (frames, durations, segment boundaries, PSNR within 0.1 dB, one timeline, the audio,
# faststart MP4s) and the command fails if it differs. Writes the report to $1 (default
# target/bench/split.json). Takes about half an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench
REPORT="${1:-$OUT/split.json}"
mkdir -p "$OUT"
./scripts/setup.sh
cargo build --release --workspace --bins
if [ ! -s "$OUT/long.mp4" ]; then
  ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=1920x1080:r=30:d=240 \
    -f lavfi -i sine=frequency=440:sample_rate=48000:duration=240 \
    -c:v libx264 -preset veryfast -crf 16 -g 60 -pix_fmt yuv420p -c:a aac -b:a 128k -shortest \
    "$OUT/long.mp4"
fi
# Whole vs chunks + audio + stitch on all cores, then one core per worker (taskset, one
# encoder thread); the equivalence check runs on the first.
status=0
./target/release/tcoder compare-engine --input "$OUT/long.mp4" --preset hls \
  --qualities 720p,360p,144p --x264-preset fast --repeats 1 --split-chunk-secs 60 \
  > "$REPORT.partial" || status=$?
# A report is written even when the titles differ (the command then fails after printing it).
if [ -s "$REPORT.partial" ]; then mv "$REPORT.partial" "$REPORT"; else rm -f "$REPORT.partial"; fi
if [ "$status" -eq 0 ]; then
  echo "split title equivalent to the whole encode; report in $REPORT" >&2
fi
exit "$status"
