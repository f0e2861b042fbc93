"""AIS: the estimate of log Z agrees with the exact value of an enumerable RBM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.evaluators.ais import AIS, ais_log_partition, annealing_schedule, base_rate_bias
from jaxdl.models.rbm import log_partition_base_rate, log_partition_exact


def test_schedule_has_the_papers_shape():
    betas = annealing_schedule(14500)
    assert betas.shape == (14501,) and betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)
    np.testing.assert_allclose(np.diff(betas)[[0, 600, -1]], [1e-3, 1e-4, 1e-5], rtol=1e-2)
    with pytest.raises(ValueError):
        annealing_schedule(2)


def test_base_rate_model_partition_function():
    bias = jnp.array([0.5, -1.0, 2.0])
    params = {"W": jnp.zeros((3, 4)), "b": bias, "c": jnp.zeros(4)}
    np.testing.assert_allclose(log_partition_base_rate(bias, 4), log_partition_exact(params), rtol=1e-6)
    np.testing.assert_allclose(base_rate_bias(np.array([0.5, 0.0]), 98), [0.0, np.log(1 / 99)], rtol=1e-5)


def test_ais_matches_the_exact_log_partition_function_of_a_20_hidden_unit_rbm():
    rng = np.random.default_rng(0)
    v, h = 64, 20  # 2^20 hidden states: enumerable
    params = {"W": jnp.asarray(rng.normal(0, 0.5, (v, h)), jnp.float32),
              "b": jnp.asarray(rng.normal(-1, 1, v), jnp.float32),
              "c": jnp.asarray(rng.normal(0, 0.5, h), jnp.float32)}
    exact = float(jax.jit(log_partition_exact)(params))
    base = jnp.asarray(base_rate_bias(np.asarray(jax.nn.sigmoid(params["b"])), 1000))
    result = jax.jit(lambda p: ais_log_partition(jax.random.key(1), p, base, jnp.asarray(annealing_schedule(5000)),
                                                 num_runs=100))(params)
    assert abs(float(result.log_z) - exact) < 0.1, (float(result.log_z), exact)
    assert float(result.log_z_low) <= exact <= float(result.log_z_high)
    assert result.log_weights.shape == (100,)


def test_the_evaluator_reports_the_log_probability_with_its_interval():
    from jaxdl.models.rbm import free_energy

    rng = np.random.default_rng(1)
    params = {"W": jnp.asarray(rng.normal(0, 0.5, (12, 6)), jnp.float32), "b": jnp.zeros(12), "c": jnp.zeros(6)}
    v = rng.integers(0, 2, (5, 12)).astype(np.float32)

    state = type("State", (), {"params": params})

    def evaluate(step_fn):
        batch = {"image": (v * 255).astype(np.uint8).reshape(5, 3, 4, 1), "mask": np.array([1, 1, 1, 1, 0], bool)}
        return step_fn(state, batch, jax.random.key(0))

    metrics = AIS(runs=50, betas=2000, seed=0)(evaluate, state, np.zeros(12, np.float32))
    exact = float(jnp.mean(-free_energy(params, jnp.asarray(v[:4]))) - log_partition_exact(params))
    assert abs(metrics["eval/test_log_prob"] - exact) < 0.05, (metrics, exact)
    assert metrics["eval/test_log_prob_low"] <= exact <= metrics["eval/test_log_prob_high"]
    assert 1.0 <= metrics["eval/ais_effective_runs"] <= 50.0
