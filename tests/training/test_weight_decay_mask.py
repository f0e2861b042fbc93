"""optimizer.decay_min_ndim: AdamW decays weight matrices but not biases or norm scales (GPT-2, nanoGPT)."""

import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.training import optim


def test_only_parameters_with_enough_axes_are_decayed():
    params = {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4), "scale": jnp.ones(4), "qkv": jnp.ones((2, 3, 2, 2))}
    zero_grads = {k: jnp.zeros_like(v) for k, v in params.items()}
    tx = optim.make_optimizer("adamw", optax.constant_schedule(0.1), weight_decay=0.5, decay_min_ndim=2)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.05)  # -lr * weight_decay * param
    np.testing.assert_allclose(updates["qkv"], -0.05)
    np.testing.assert_allclose(updates["bias"], 0.0)
    np.testing.assert_allclose(updates["scale"], 0.0)
    every = optim.make_optimizer("adamw", optax.constant_schedule(0.1), weight_decay=0.5)
    updates, _ = every.update(zero_grads, every.init(params), params)
    np.testing.assert_allclose(updates["bias"], -0.05)  # the default (0) still decays everything
