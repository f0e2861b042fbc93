"""Binarization: per-example draws on device, one fixed draw on the host."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data.binarize import binarize, binarize_once
from jaxdl.training.parallel import example_keys


def test_device_binarization_draws_each_example_from_its_key():
    images = jnp.full((4, 28, 28, 1), 64, jnp.uint8)
    keys = example_keys(jax.random.key(0), jnp.arange(4))
    binary = binarize(keys, images)
    assert binary.shape == images.shape and binary.dtype == jnp.float32 and set(np.unique(binary)) == {0.0, 1.0}
    np.testing.assert_allclose(float(binary.mean()), 64 / 255, atol=0.02)
    np.testing.assert_array_equal(binarize(keys[2:], images[2:]), binary[2:])
    np.testing.assert_array_equal(binarize(keys, jnp.full((4, 2), 255, jnp.uint8)), 1.0)


def test_host_binarization_is_fixed_by_its_seed():
    images = np.full((3, 5, 5, 1), 128, np.uint8)
    once = binarize_once(images, 0)
    assert once.dtype == np.uint8 and set(np.unique(once)) == {0, 255}
    np.testing.assert_array_equal(once, binarize_once(images, 0))
    assert not np.array_equal(once, binarize_once(images, 1))
