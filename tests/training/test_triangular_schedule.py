"""airbench's triangular schedule and SGD with PyTorch-style (coupled) weight decay."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.training import optim


def test_triangular_matches_airbenchs_get_lr():
    total, warmup = 476, 109
    schedule = optim.make_schedule(
        "triangular", 2.0, total_steps=total, steps_per_epoch=48, warmup_steps=warmup, start_factor=0.2, end_factor=0.07
    )

    def get_lr(step):  # legacy/airbench94.py
        if step < warmup:
            frac = step / warmup
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup) / (total - warmup)
        return 1.0 * (1 - frac) + 0.07 * frac

    for step in (0, 1, 50, 108, 109, 110, 300, 475, 476):
        np.testing.assert_allclose(float(schedule(step)), 2.0 * get_lr(step), rtol=1e-5)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.make_schedule("triangular", 1.0, total_steps=10, steps_per_epoch=5, warmup_steps=10)


def test_sgd_weight_decay_is_added_to_the_gradient_before_momentum():
    tx = optim.make_optimizer("sgd", optax.constant_schedule(0.1), momentum=0.9, nesterov=True, weight_decay=0.5)
    params = {"w": jnp.array([2.0])}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.array([1.0])}, state, params)
    g = 1.0 + 0.5 * 2.0  # PyTorch: d_p = grad + weight_decay * p; buf = d_p; nesterov step d_p + momentum * buf
    np.testing.assert_allclose(updates["w"], [-0.1 * (g + 0.9 * g)], rtol=1e-6)
    with pytest.raises(ValueError, match="adamw and sgd"):
        optim.make_optimizer("adam", optax.constant_schedule(0.1), weight_decay=0.5)
