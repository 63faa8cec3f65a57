"""Reads an animated WebP with Pillow (an image library nobody here wrote) and prints what a
viewer would get: format, size, frame count, per-frame durations (ms), loop count, and whether
consecutive frames differ (motion). Usage: webp_info.py <file>"""

import json
import sys

from PIL import Image, ImageChops

with Image.open(sys.argv[1]) as image:
    frames, durations, changes = image.n_frames, [], 0
    previous = None
    for n in range(frames):
        image.seek(n)
        current = image.convert("RGB")
        durations.append(image.info.get("duration"))
        if previous is not None and ImageChops.difference(previous, current).getbbox():
            changes += 1
        previous = current
    print(json.dumps({
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "frames": frames,
        "animated": getattr(image, "is_animated", False),
        "loop": image.info.get("loop"),
        "durations": durations,
        "changes": changes,
    }))
