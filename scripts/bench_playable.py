#!/usr/bin/env python3
"""The "Playable in seconds" section of docs/BENCHMARKS.md, from target/bench/playable.json
(`tcoder-bench playable`). scripts/bench_report.py includes it; run alone
(`bench_playable.py <out> docs/BENCHMARKS.md`, what `make bench-playable` does) it replaces
that section and its target lines in the document, leaving the other measurements as they
were."""
import json
import os
import re
import sys

TITLE = "## e. Playable in seconds"

# What the hosted services publish for the wait before a title plays (medians from their own
# pages), by length.
ANCHORS = [
    (60, "Mux: 2.0 s (under 1 min)"),
    (20 * 60, "Mux: 9.0 s (5–20 min)"),
    (10**9, "Mux: 93.5 s (over 1 h)"),
]


def anchor(duration):
    return next(text for limit, text in ANCHORS if duration <= limit + 1)


def section(data):
    """(lines, checks) of the section."""
    lines, checks = [], []
    w = lines.append
    qualities = "/".join(data["qualities"])
    w(TITLE)
    w("")
    w(f"1080p30 sources with audio (`testsrc2` and a tone; one minute encoded, the longer ones that")
    w(f"minute repeated), each an HLS job ({qualities}, x264 `fast`, thumbnails) on **one worker** of")
    w("this 2-core machine: seconds from the upload notification to the job's `playable` event")
    w("(the title plays from its stable URL) and to `completed`. *Shipped*: the default settings")
    w("(titles over 15 s split, a first chunk of 4 s, audio in ranges, parts in playback order).")
    w("*Before*: the settings before progressive playback (titles over 3 min split, every chunk")
    w("60 s): a title plays when it completes. Both run one after the other, per source.")
    w("")
    w("| source | playable s | ÷ duration | completed s, shipped | completed s, before | shipped ÷ before | anchor |")
    w("|---|---|---|---|---|---|---|")
    by_source = {}
    for run in data["runs"]:
        by_source.setdefault(run["source"], {})[run["settings"]] = run
    worst_playable, worst_ratio = 0.0, 0.0
    for source, runs in by_source.items():
        shipped, before = runs.get("shipped"), runs.get("before")
        if not shipped or not before:
            continue
        duration = shipped["duration_secs"]
        playable = shipped["playable_secs"]
        ratio = shipped["completed_secs"] / before["completed_secs"]
        worst_playable = max(worst_playable, playable)
        worst_ratio = max(worst_ratio, ratio)
        w(f"| {duration / 60:.0f} min | **{playable:.1f}** | {playable / duration:.4f} | "
          f"{shipped['completed_secs']:.1f} | {before['completed_secs']:.1f} | {ratio:.3f} | {anchor(duration)} |")
    w("")
    w("Bunny's just-in-time tier answers in 10–15 s whatever the length; Cloudflare Stream and")
    w("api.video flip `readyToStream` / `playable` once a first quality is ready (no figure")
    w("published). What the playable time is made of: the source's download, a probe, the first")
    w("chunk's ladder (4 s of video) and the first audio range, each committed — it does not grow")
    w("with the title. Later minutes become playable as their chunks commit, in title order.")
    w("")
    checks.append(("playable ≤ 15 s after the upload, every length, one 2-core worker", worst_playable <= 15.0, f"{worst_playable:.1f} s at worst"))
    checks.append(("completed, shipped ÷ before ≤ 1.02, every length", worst_ratio <= 1.02, f"{worst_ratio:.3f} at worst"))
    return lines, checks


def splice(out, document):
    data = json.load(open(os.path.join(out, "playable.json")))
    lines, checks = section(data)
    text = open(document).read()
    block = "\n".join(lines) + "\n"
    pattern = re.compile(re.escape(TITLE) + r"\n.*?(?=\n## )", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block.rstrip("\n"), text)
    else:
        text = text.replace("## Targets", block + "## Targets")
    names = [name for name, _, _ in checks]
    kept = [l for l in text.split("\n") if not any(l.startswith(p) and name in l for name in names for p in ("PASS ", "FAIL "))]
    text = "\n".join(kept)
    new = "\n".join(f"{'PASS' if ok else 'FAIL'} {name}: {value}" for name, ok, value in checks)
    # The target lines go at the end of the Targets block.
    head, _, tail = text.rpartition("\n```")
    text = f"{head}\n{new}\n```{tail}"
    open(document, "w").write(text)
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {value}", file=sys.stderr)


if __name__ == "__main__":
    splice(sys.argv[1], sys.argv[2])
