#!/usr/bin/env bash
# `make bench-ladder` (and part of `make bench`): four 30 s 1080p30 sources of different kinds
# through the fixed ladder and the per-title ladder, side by side in one run; writes
# target/bench/ladder.json and splices section f into docs/BENCHMARKS.md
# (BENCH_LADDER_SPLICE=0: leave the document to bench_report.py).
#
#   BENCH_LADDER_SECS=30            length of each source
#   BENCH_LADDER_QUALITY=standard   the per-title goal set against the fixed ladder; another
#                                   (`target:vmaf=93`) writes ladder-<goal>.json, no splice
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
OUT=target/bench
SECS="${BENCH_LADDER_SECS:-30}"
QUALITY="${BENCH_LADDER_QUALITY:-standard}"
RESULT="$OUT/ladder.json"
SPLICE="${BENCH_LADDER_SPLICE:-1}"
if [ "$QUALITY" != standard ]; then
  RESULT="$OUT/ladder-${QUALITY//[^a-z0-9]/-}.json"
  SPLICE=0
fi
mkdir -p "$OUT"
cargo build --release -p tcoder-cli -p tcoder-worker --bins

# Sources, generated here (x264 CRF 18: clean masters for the ladder to start from):
#   slides:    sharp high-contrast blocks that change every 5 s, still in between (screen
#              recording / slides);
#   animation: flat colours and moving shapes (`testsrc2`);
#   talking:   a soft (blurred) picture with slow, small motion and faint sensor noise (a
#              talking head's look);
#   grain:     a zoom into the Mandelbrot set under strong film grain (high motion + grain).
declare -A GRAPHS=(
  [slides]="life=s=192x108:r=0.2:mold=10:ratio=0.1:death_color=white:life_color=#1a1a60,scale=1920:1080:flags=neighbor,fps=30"
  [animation]="testsrc2=s=1920x1080:r=30"
  [talking]="testsrc2=s=1920x1080:r=30,gblur=sigma=5,noise=alls=2:allf=t"
  [grain]="mandelbrot=s=1920x1080:r=30,noise=alls=22:allf=t+u"
)
INPUTS=()
for kind in slides animation talking grain; do
  file="$OUT/ladder-$kind-${SECS}s.mp4"
  if [ ! -s "$file" ]; then
    ffmpeg -nostdin -v error -y -f lavfi -i "${GRAPHS[$kind]}" -t "$SECS" \
      -c:v libx264 -preset veryfast -crf 18 -g 60 -pix_fmt yuv420p "$file"
  fi
  INPUTS+=(--input "$file")
done
VMAF_FFMPEG="$(.tools/venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
./target/release/tcoder compare-ladder "${INPUTS[@]}" --x264-preset fast --quality "$QUALITY" \
  --vmaf-ffmpeg "$VMAF_FFMPEG" > "$RESULT"
if [ "$SPLICE" = 1 ]; then
  python3 scripts/bench_ladder.py "$OUT" docs/BENCHMARKS.md
fi
