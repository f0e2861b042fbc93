"""Image grids written as PNG with Pillow."""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Converts images to uint8: floats are read as [0, 1] and clipped, uint8 passes through."""
    if images.dtype == np.uint8:
        return images
    return (np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_grid(images: np.ndarray, *, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tiles images into one picture.

    Args:
      images: [N, H, W, C] with C in {1, 3}, float in [0, 1] or uint8.
      columns: images per row (default: ceil(sqrt(N))).
      padding: pixels of white border between images.

    Returns:
      uint8 [rows * (H + p) + p, columns * (W + p) + p, C].
    """
    images = to_uint8(np.asarray(images))
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = images[i]
    return grid


def save_image_grid(path: os.PathLike | str, images: np.ndarray, *, columns: int | None = None, scale: int = 2) -> None:
    """Writes `image_grid(images, columns=columns)` to `path` as PNG, enlarged `scale` times.

    The file is written under a temporary name and renamed, so a crash never
    leaves a truncated PNG.
    """
    grid = image_grid(images, columns=columns)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    picture.save(tmp, format="PNG")
    os.replace(tmp, path)
