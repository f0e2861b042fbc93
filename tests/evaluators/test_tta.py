"""Test-time augmentation: airbench's views and how their logits are averaged."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.evaluators import tta
from tests.conftest import assert_close


def test_tta_levels_average_the_views():
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
    weights = jax.random.normal(jax.random.key(1), (8 * 8 * 3, 5))

    def logits_fn(images):  # a position-sensitive linear classifier, so every view gives other logits
        return images.reshape(len(images), -1) @ weights

    plain = logits_fn(x)
    assert_close(tta.tta_logits(logits_fn, x, 0), plain)
    mirrored = 0.5 * plain + 0.5 * logits_fn(x[:, :, ::-1])
    assert_close(tta.tta_logits(logits_fn, x, 1), mirrored, rtol=1e-5, atol=1e-5)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [padded[:, :8, :8], padded[:, 2:, 2:]]
    level1 = [tta.tta_logits(logits_fn, v, 1) for v in views]
    assert_close(tta.tta_logits(logits_fn, x, 2), 0.5 * mirrored + 0.25 * (level1[0] + level1[1]), rtol=1e-5, atol=1e-5)
    assert not np.allclose(tta.tta_logits(logits_fn, x, 2), plain)


def test_correct_sums_and_accuracy_leave_padding_out():
    logits = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    sums = tta.correct_sums(logits, jnp.array([0, 0, 1]), jnp.array([True, True, False]), None)
    assert float(sums["correct_sum"]) == 1.0 and float(sums["count"]) == 2.0
    assert tta.accuracy(sums) == 0.5
