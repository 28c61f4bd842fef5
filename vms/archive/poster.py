"""A poster frame for a ready archive: its first keyframe, decoded once, saved as a JPEG."""

from __future__ import annotations

import os
from pathlib import Path

import av

# Wide enough for a phone's player, small enough to be a few tens of KB.
MAX_SIZE = (640, 360)


def make_poster(video: Path, poster: Path) -> None:
    """Decode the first keyframe of `video` and write it to `poster` (atomically). Blocking."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"  # only keyframes are decoded at all
        frame = next(container.decode(stream))
        image = frame.to_image()  # type: ignore[no-untyped-call]
    image.thumbnail(MAX_SIZE)
    partial = poster.with_name(poster.name + ".part")
    image.save(partial, "JPEG", quality=80)
    os.replace(partial, poster)
