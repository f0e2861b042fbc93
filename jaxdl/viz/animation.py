"""Animations of a run's per-epoch pictures (an animated GIF written with Pillow)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from PIL import Image


def save_animation(path: os.PathLike | str, frames: Sequence[os.PathLike | str], *, frame_ms: int = 400) -> None:
    """Writes the PNG files `frames`, in order, as one looping animated GIF at `path`.

    Args:
      path: the GIF to write (under a temporary name, then renamed).
      frames: picture files of equal size, e.g. `samples/epoch_001.png` ...
      frame_ms: display time of each frame, milliseconds (the last one is
        shown three times as long).

    Raises:
      ValueError: no frames.
    """
    if not frames:
        raise ValueError(f"No frames to animate into {path}.")
    images = []
    for frame in frames:
        with Image.open(frame) as picture:
            images.append(picture.convert("L" if picture.mode in ("L", "1") else "RGB"))
    durations = [frame_ms] * (len(images) - 1) + [3 * frame_ms]
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    os.replace(tmp, path)
