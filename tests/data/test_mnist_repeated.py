"""The larger-than-memory MNIST variant: distinct shifted copies, exact pixel moves."""

import numpy as np
import pytest

from jaxdl.data.mnist_repeated import MnistBig, shift_images, shifts


def test_copies_get_distinct_shifts_starting_unshifted():
    offsets = shifts(12)
    assert offsets[0] == (0, 0) and len(set(offsets)) == 12
    assert all(max(abs(dy), abs(dx)) <= 3 for dy, dx in offsets)
    with pytest.raises(ValueError, match="At most 49"):
        shifts(50)


def test_shift_moves_pixels_and_fills_zeros():
    x = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4)
    moved = shift_images(x, 1, -2)  # one down, two left
    np.testing.assert_array_equal(moved[0, 1:, :2], x[0, :3, 2:])
    assert not moved[0, 0].any() and not moved[0, :, 2:].any()
    np.testing.assert_array_equal(shift_images(x, 0, 0), x)


def test_builder_declares_the_enlarged_image(tmp_path):
    info = MnistBig(data_dir=str(tmp_path)).info
    assert info.features["image"].shape == (56, 56, 1) and info.features["label"].num_classes == 10
