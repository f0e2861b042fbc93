"""MNIST enlarged, repeated and shifted: a training split larger than host memory, for streaming benchmarks.

`mnist_big` holds MNIST's 60,000 training images at twice their resolution
(56x56, every pixel doubled) 12 times (720,000 records of 3,136 pixels:
2.26 GB of pixels): copy c is shifted by a different (dy, dx) in
-6..6 pixels (even offsets, zero fill; copy 0 is unshifted), so the copies
are different images with the same labels, a crude translation augmentation
written to disk. The test split is MNIST's 10,000 test images, enlarged the
same way and unshifted. Prepared from the same verified raw files as `mnist`
(see `jaxdl.data.idx_images`) without TensorFlow; larger records rather than
more of them keep the preparation short, since TFDS serialises records one by
one (about 5,000 MNIST records a second on a shared 2-core CPU).

Record: image uint8 [56, 56, 1], label int64 in 0..9.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import shuffle as tfds_shuffle

from jaxdl.data.idx_images import MnistIdx, read_idx
from jaxdl.data.raw_files import RawFileError

MAX_SHIFT = 3  # original pixels (scaled with the image)


def shifts(copies: int) -> list[tuple[int, int]]:
    """(dy, dx) of each copy in original pixels: (0, 0) first, then the other offsets in -3..3 by distance."""
    grid = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    grid.sort(key=lambda s: (s[0] ** 2 + s[1] ** 2, s))
    if copies > len(grid):
        raise ValueError(f"At most {len(grid)} distinct shifted copies; asked for {copies}.")
    return grid[:copies]


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 [N, H, W] moved down by dy and right by dx pixels (|dy|, |dx| < H, W), zeros where nothing moved in."""
    n, h, w = images.shape
    pad = max(abs(dy), abs(dx))
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    return padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w]


class _MnistRepeated(MnistIdx, skip_registration=True):
    """MNIST scaled up SCALE times, its training split repeated COPIES times with shifts (module docstring)."""

    COPIES: int
    SCALE: int
    DESCRIPTION = "MNIST enlarged, its training images repeated and shifted (a larger-than-memory split)."

    def _info(self) -> tfds.core.DatasetInfo:
        side = 28 * self.SCALE
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(side, side, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def download_and_prepare(self, *args, **kwargs):
        """TFDS's `download_and_prepare`, holding the whole split in memory while it is written.

        TFDS's writer spills a split larger than 1 GB to temporary files through
        TensorFlow (`tf.io.gfile`); this split is 2.26 GB of pixels, so the limit
        is raised for the preparation, which then holds the serialised split in
        memory once.
        """
        saved = tfds_shuffle.MAX_MEM_BUFFER_SIZE
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(saved, 6 << 30)
        try:
            return super().download_and_prepare(*args, **kwargs)
        finally:
            tfds_shuffle.MAX_MEM_BUFFER_SIZE = saved

    def _generate_examples(self, images_path: epath.Path, labels_path: epath.Path) -> Iterator[tuple[int, dict]]:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or len(images) != len(labels):
            raise RawFileError(f"{images_path} and {labels_path} are not a matching idx image / label pair.")
        images = images.repeat(self.SCALE, axis=1).repeat(self.SCALE, axis=2)  # [N, 28 s, 28 s]
        copies = shifts(self.COPIES) if images_path.name.startswith("train") else [(0, 0)]
        n = len(labels)
        for copy, (dy, dx) in enumerate(copies):
            moved = shift_images(images, dy * self.SCALE, dx * self.SCALE)
            for i in range(n):
                yield copy * n + i, {"image": moved[i, :, :, None], "label": int(labels[i])}


class MnistBig(_MnistRepeated):
    """MNIST at 56x56, its training split 12 times, shifted: 720,000 training records (2.26 GB of pixels)."""

    COPIES = 12
    SCALE = 2
