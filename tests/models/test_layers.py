"""Shared layers: per-example dropout and its site numbers, activations by name."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.layers import Dropout, activation_fn, dense_dot_general, site_id
from jaxdl.training.parallel import example_keys


class Pair(nn.Module):
    """Dropout at the same path with the project's layer or flax's (called one example at a time)."""

    flax_dropout: bool

    @nn.compact
    def __call__(self, x, keys=None):
        h = nn.Dense(6, name="dense")(x)
        if self.flax_dropout:
            return nn.Dropout(0.4, deterministic=False, name="drop")(h)
        return Dropout(0.4, name="drop")(h, keys, deterministic=False)


def test_a_site_named_by_its_path_draws_flax_dropout_masks():
    x = jax.random.normal(jax.random.key(0), (5, 3))
    variables = Pair(True).init(jax.random.key(1), x)
    keys = example_keys(jax.random.key(2), jnp.arange(5))
    ours = Pair(False).apply(variables, x, keys)
    theirs = jax.vmap(lambda k, row: Pair(True).apply(variables, row[None], rngs={"dropout": k})[0])(keys, x)
    np.testing.assert_array_equal(ours, theirs)
    assert site_id(("drop",)) != site_id(("other",))


def test_masks_follow_each_example_and_numbered_sites_differ():
    x = jnp.ones((4, 200))
    keys = example_keys(jax.random.key(0), jnp.arange(4))
    layer = Dropout(0.5, site=0)
    whole = layer.apply({}, x, keys, deterministic=False)
    np.testing.assert_array_equal(layer.apply({}, x[2:], keys[2:], deterministic=False), whole[2:])
    assert set(np.unique(whole)) == {0.0, 2.0} and abs(float((whole == 0).mean()) - 0.5) < 0.1
    assert not np.array_equal(Dropout(0.5, site=1).apply({}, x, keys, deterministic=False), whole)
    np.testing.assert_array_equal(layer.apply({}, x, None, deterministic=True), x)
    with pytest.raises(ValueError, match="example_keys"):
        layer.apply({}, x, None, deterministic=False)


def test_unknown_activation_lists_the_names():
    with pytest.raises(ValueError, match="choose one of"):
        activation_fn("swish2")


@pytest.mark.parametrize(
    "layer, x_shape",
    [
        (nn.Dense(48), (3, 5, 16)),  # widening: the transposed weight gradient
        (nn.Dense(8), (3, 5, 16)),  # narrowing: lax.dot_general itself
        (nn.DenseGeneral((3, 4, 8), use_bias=False), (2, 7, 16)),  # widening, several output axes
        (nn.DenseGeneral(32, axis=(-2, -1)), (2, 7, 4, 8)),  # several input axes, widening
    ],
)
def test_dense_dot_general_gives_lax_values_and_gradients(layer, x_shape):
    x = jax.random.normal(jax.random.key(0), x_shape)
    ours = layer.clone(dot_general=dense_dot_general)
    params = layer.init(jax.random.key(1), x)

    def loss(module, params, x):
        return jnp.sum(jnp.sin(module.apply(params, x)))

    np.testing.assert_allclose(ours.apply(params, x), layer.apply(params, x), rtol=1e-6, atol=1e-6)
    (g_params, g_x), (r_params, r_x) = (jax.grad(loss, argnums=(1, 2))(m, params, x) for m in (ours, layer))
    np.testing.assert_allclose(g_x, r_x, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_params), jax.tree.leaves(r_params)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dense_dot_general_keeps_a_low_precision_compute_dtype():
    layer = nn.Dense(32, dtype=jnp.bfloat16, dot_general=dense_dot_general)
    x = jnp.ones((4, 8), jnp.float32)
    params = layer.init(jax.random.key(0), x)
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, x).astype(jnp.float32)))(params)
    assert layer.apply(params, x).dtype == jnp.bfloat16
    assert grads["params"]["kernel"].dtype == jnp.float32  # the param dtype, as flax's own Dense gives
