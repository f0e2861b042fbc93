"""MLP module: shapes, parameter count, batch norm, per-example dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.mlp import MLP
from jaxdl.training.parallel import example_keys


def test_output_shape_and_dtype_for_images_and_vectors():
    model = MLP(hidden_dims=(16, 8), num_outputs=3)
    for x in (jnp.zeros((5, 28, 28, 1)), jnp.zeros((5, 10))):
        variables = model.init(jax.random.key(0), x, train=False)
        out = model.apply(variables, x, train=False)
        assert out.shape == (5, 3) and out.dtype == jnp.float32


def test_default_parameter_count():
    # 784-512-512-10 with biases.
    variables = MLP().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    expected = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert sum(p.size for p in jax.tree.leaves(variables["params"])) == expected == 669_706


def test_batch_norm_uses_batch_statistics_in_training_and_running_averages_in_eval():
    model = MLP(hidden_dims=(4,), num_outputs=2, batch_norm=True, batch_norm_momentum=0.0)
    x = jax.random.normal(jax.random.key(1), (64, 6)) * 3.0 + 5.0
    variables = model.init(jax.random.key(0), x, train=False)
    assert "batch_stats" in variables and "bias" not in variables["params"]["Dense_0"]
    train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # momentum 0: the running averages become this batch's statistics, so eval reproduces training.
    eval_out = model.apply({**variables, **updates}, x, train=False)
    np.testing.assert_allclose(eval_out, train_out, rtol=1e-4, atol=1e-4)
    assert not np.allclose(model.apply(variables, x, train=False), train_out, atol=1e-2)


def test_dropout_is_per_example_and_deterministic_in_eval():
    model = MLP(hidden_dims=(256,), num_outputs=256, dropout_rate=0.5, activation="identity")
    x = jnp.ones((6, 8))
    variables = model.init(jax.random.key(0), x, train=False)
    keys = example_keys(jax.random.key(3), jnp.arange(6))
    whole = model.apply(variables, x, train=True, example_keys=keys)
    halves = jnp.concatenate(
        [model.apply(variables, x[:3], train=True, example_keys=keys[:3]),
         model.apply(variables, x[3:], train=True, example_keys=keys[3:])]
    )
    np.testing.assert_array_equal(whole, halves)  # independent of how the batch is split
    assert not np.allclose(whole[0], whole[1])  # distinct masks per example
    np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))
    with pytest.raises(ValueError, match="example_keys"):
        model.apply(variables, x, train=True)
