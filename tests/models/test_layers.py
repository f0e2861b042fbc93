"""Shared layers: per-example dropout and its site numbers, activations by name."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.layers import Dropout, activation_fn, site_id
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
