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
    (5 * 60, "Mux: between 2.0 s (under 1 min) and 9.0 s (5–20 min)"),
    (20 * 60, "Mux: 9.0 s (5–20 min)"),
    (60 * 60, "Mux: between 9.0 s (5–20 min) and 93.5 s (over 1 h)"),
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
    w("(titles over 15 s split, a first chunk of 4 s, audio in ranges, parts in playback order,")
    w("two parts at once on the coordinator, the second in the background). *Before*: the split")
    w("settings before progressive playback (titles over 3 min split, every chunk 60 s, one part")
    w("at a time), run by the same build — so both read the source as it arrives: a title under")
    w("3 min is one item and plays when it completes; a longer one plays after its first 60 s")
    w("chunk. Both run one after the other, per source, on a fresh worker each.")
    w("")
    w("| source | playable s | ÷ duration | completed s, shipped | ÷ duration | completed s, before | shipped ÷ before | anchor |")
    w("|---|---|---|---|---|---|---|---|")
    by_source = {}
    for run in data["runs"]:
        by_source.setdefault(run["source"], {})[run["settings"]] = run
    worst_playable, worst_ratio = 0.0, 0.0
    missing = []
    for source, runs in sorted(by_source.items(), key=lambda item: next(iter(item[1].values()))["duration_secs"]):
        shipped, before = runs.get("shipped"), runs.get("before")
        if not shipped:
            continue
        duration = shipped["duration_secs"]
        playable = shipped["playable_secs"]
        worst_playable = max(worst_playable, playable)
        if before:
            ratio = shipped["completed_secs"] / before["completed_secs"]
            worst_ratio = max(worst_ratio, ratio)
            before_cells = f"{before['completed_secs']:.1f} | {ratio:.3f}"
        else:
            missing.append(f"{duration / 60:.0f} min")
            before_cells = "not run | –"
        completed = shipped["completed_secs"]
        w(f"| {duration / 60:.0f} min | **{playable:.1f}** | {playable / duration:.4f} | "
          f"{completed:.1f} | {completed / duration:.3f} | {before_cells} | {anchor(duration)} |")
    w("")
    w("Bunny's just-in-time tier answers in 10–15 s whatever the length; Cloudflare Stream and")
    w("api.video flip `readyToStream` / `playable` once a first quality is ready (no figure")
    w("published). What the playable time is made of: the first bytes and the index of the")
    w("source (the engine starts on it while it still comes down, in 4 MiB ranges four at a time:")
    w("the start, the end, then the rest, each byte read once it is on disk), a probe, the")
    w("per-title decision (two trial encodes of a one-second window of the title's first 40 s at")
    w("every rung, scored), the first chunk's ladder (4 s of video) and the first audio range,")
    w("each committed — none of which grows with the title. Later minutes become playable as")
    w("their chunks commit, in title order, and the title completes in less than its own")
    w("duration here (completed ÷ duration): a viewer who starts at once does not catch up with")
    w("the encode.")
    w("")
    checks.append(("playable ≤ 15 s after the upload, every length, one 2-core worker", worst_playable <= 15.0, f"{worst_playable:.1f} s at worst"))
    measured = "" if not missing else f" (not run at {', '.join(missing)})"
    checks.append((f"completed, shipped ÷ before ≤ 1.02, every length measured{measured}", worst_ratio <= 1.02, f"{worst_ratio:.3f} at worst"))
    return lines, checks


def splice_section(document, title, lines, checks):
    """Replaces the section `title` of `document` (or adds it before the targets) with
    `lines`, and its target lines (`checks`, named as before) at the end of the Targets block."""
    text = open(document).read()
    block = "\n".join(lines) + "\n"
    pattern = re.compile(re.escape(title) + r"\n.*?(?=\n## )", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block.rstrip("\n") + "\n", text)
    else:
        text = text.replace("## Targets", block + "## Targets")
    # A check's name up to its first number or comparison: a renamed threshold still matches.
    ours = [re.split(r"[0-9≤≥]", name)[0].strip() for name, _, _ in checks]
    kept = [l for l in text.split("\n") if not (l[:5] in ("PASS ", "FAIL ") and any(l[5:].startswith(o) for o in ours))]
    text = "\n".join(kept)
    new = "\n".join(f"{'PASS' if ok else 'FAIL'} {name}: {value}" for name, ok, value in checks)
    # The target lines go at the end of the Targets block.
    head, _, tail = text.rpartition("\n```")
    text = f"{head}\n{new}\n```{tail}"
    open(document, "w").write(text)
    for name, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {value}", file=sys.stderr)


def splice(out, document):
    data = json.load(open(os.path.join(out, "playable.json")))
    lines, checks = section(data)
    splice_section(document, TITLE, lines, checks)


if __name__ == "__main__":
    splice(sys.argv[1], sys.argv[2])
