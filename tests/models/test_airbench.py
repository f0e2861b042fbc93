"""airbench94 network: shapes and parameter count, identity-initialised convolutions, whitening filters."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.airbench import Airbench94, dirac_init, whitening_kernel


def test_default_network_shapes_and_parameter_count():
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)  # shapes alone: the default network is large to run
    variables = jax.eval_shape(lambda x: Airbench94().init(jax.random.key(0), x, train=False), x)
    params = variables["params"]
    n = sum(p.size for p in jax.tree.leaves(params))
    convs = 24 * 64 * 9 + 64 * 64 * 9 + 64 * 256 * 9 + 256 * 256 * 9 * 3
    assert n == 2 * 2 * 3 * 24 + 24 + convs + 2 * (64 + 256 + 256) + 256 * 10
    assert "scale" not in params["block1"]["norm1"]  # the BatchNorm weight is frozen at 1
    logits = jax.eval_shape(lambda v, x: Airbench94().apply(v, x, train=False), variables, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_dirac_init_passes_the_first_channels_through():
    kernel = dirac_init(jax.random.key(0), (3, 3, 4, 6))
    x = jax.random.normal(jax.random.key(1), (1, 5, 5, 4))
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y[..., :4], x, atol=1e-6)
    assert np.abs(np.asarray(kernel[..., 4:])).max() <= 1 / np.sqrt(4 * 9) + 1e-6


def test_whitening_filters_whiten_the_patches():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 3))
    images = rng.normal(size=(200, 8, 8, 3)) @ mixing  # correlated channels
    kernel = whitening_kernel(images, kernel_size=2, eps=0.0)
    assert kernel.shape == (2, 2, 3, 24)
    filters = kernel.transpose(3, 2, 0, 1).reshape(24, 12)
    np.testing.assert_allclose(filters[12:], -filters[:12])
    patches = np.lib.stride_tricks.sliding_window_view(images, (2, 2), axis=(1, 2)).reshape(-1, 12)
    responses = patches @ filters[:12].T
    np.testing.assert_allclose(responses.T @ responses / len(patches), np.eye(12), atol=1e-6)
