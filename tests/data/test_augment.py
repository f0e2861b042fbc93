"""On-device augmentation: each transform does what it says, per example, reproducibly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data import augment


def image(h=8, w=8, c=3):
    return jnp.arange(h * w * c, dtype=jnp.float32).reshape(h, w, c)


def test_random_crop_is_a_window_of_the_padded_image():
    x = image()
    for seed in range(10):
        out = augment.random_crop(jax.random.key(seed), x, pad=2, mode="constant")
        padded = np.pad(np.asarray(x), ((2, 2), (2, 2), (0, 0)))
        windows = [padded[dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(out, w) for w in windows)


def test_flip_mirrors_about_half_the_time():
    x = image()
    flipped = [bool(np.array_equal(augment.random_flip(jax.random.key(s), x), x[:, ::-1])) for s in range(200)]
    assert 70 < sum(flipped) < 130
    unflipped = [bool(np.array_equal(augment.random_flip(jax.random.key(s), x), x)) for s in range(200)]
    assert all(a != b for a, b in zip(flipped, unflipped, strict=True))


def test_cutout_zeroes_at_most_a_size_square():
    x = jnp.ones((16, 16, 3))
    for seed in range(10):
        zeros = int((augment.cutout(jax.random.key(seed), x, size=4)[..., 0] == 0).sum())
        assert 0 < zeros <= 16


def test_batch_augmentation_depends_only_on_each_examples_key():
    keys = jax.random.split(jax.random.key(0), 4)
    batch = jnp.stack([image() + i for i in range(4)])
    full = augment.augment(keys, batch, crop_pad=2, flip=True, cutout_size=3)
    part = augment.augment(keys[2:], batch[2:], crop_pad=2, flip=True, cutout_size=3)
    np.testing.assert_array_equal(full[2:], part)
    assert full.shape == batch.shape


def test_unknown_pad_mode_is_named():
    with pytest.raises(ValueError, match="reflect"):
        augment.random_crop(jax.random.key(0), image(), pad=1, mode="wrap")
