"""RBM helpers: free energy, conditionals and exact log Z against brute-force enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.rbm import (
    RBM,
    energy,
    free_energy,
    gibbs_chain,
    log_partition_exact,
    mean_field_reconstruction,
    pseudo_log_likelihood,
)
from jaxdl.training.parallel import example_keys


def random_params(v=6, h=4, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return {"W": jnp.asarray(rng.normal(0, scale, (v, h)), jnp.float32),
            "b": jnp.asarray(rng.normal(0, 1, v), jnp.float32),
            "c": jnp.asarray(rng.normal(0, 1, h), jnp.float32)}


def all_states(n):
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=n)), jnp.float32)


def test_module_holds_w_b_c_and_returns_hidden_probabilities():
    model = RBM(num_hidden=7)
    variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
    assert {k: v.shape for k, v in variables["params"].items()} == {"W": (784, 7), "b": (784,), "c": (7,)}
    probs = model.apply(variables, jnp.ones((3, 28, 28, 1)))
    assert probs.shape == (3, 7) and float(probs.min()) > 0 and float(probs.max()) < 1


def test_free_energy_marginalises_the_energy_over_hidden_states():
    params = random_params()
    v, hs = all_states(6), all_states(4)
    brute = -jax.nn.logsumexp(
        jnp.stack([-energy(params, v, jnp.broadcast_to(h, (len(v), 4))) for h in hs]), axis=0)
    np.testing.assert_allclose(free_energy(params, v), brute, rtol=1e-5, atol=1e-5)


def test_exact_log_partition_matches_enumeration_over_visible_states():
    params = random_params(v=8, h=10)
    brute = jax.nn.logsumexp(-free_energy(params, all_states(8)))
    np.testing.assert_allclose(log_partition_exact(params, chunk=64), brute, rtol=1e-5)
    with pytest.raises(ValueError, match="Use AIS"):
        log_partition_exact(random_params(v=2, h=25))


def test_long_gibbs_chains_sample_the_model_distribution():
    params = random_params(v=4, h=3, scale=0.7)
    states = all_states(4)
    exact = np.exp(np.asarray(-free_energy(params, states) - log_partition_exact(params)))
    keys = example_keys(jax.random.key(0), jnp.arange(20000))
    v, _ = gibbs_chain(params, jnp.zeros((20000, 4)), keys, 30)
    codes = np.asarray(v @ jnp.array([8.0, 4.0, 2.0, 1.0])).astype(int)
    empirical = np.bincount(codes, minlength=16) / 20000
    np.testing.assert_allclose(empirical, exact, atol=0.012)


def test_pseudo_log_likelihood_is_unbiased_for_the_exact_one():
    rng = np.random.default_rng(0)
    params = {"W": jnp.asarray(rng.normal(0, 0.5, (6, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(0, 0.5, 6), jnp.float32),
              "c": jnp.asarray(rng.normal(0, 0.5, 4), jnp.float32)}
    v = jnp.asarray([[1, 0, 1, 1, 0, 0]], jnp.float32)
    exact = 0.0
    for i in range(6):
        flipped = v.at[0, i].set(1 - v[0, i])
        exact += float(jax.nn.log_sigmoid(free_energy(params, flipped) - free_energy(params, v))[0])
    estimates = pseudo_log_likelihood(params, jnp.tile(v, (6000, 1)), example_keys(jax.random.key(0), jnp.arange(6000)))
    np.testing.assert_allclose(float(estimates.mean()), exact, rtol=0.03)


def test_mean_field_reconstruction_is_the_expected_visible_of_the_expected_hidden():
    params = random_params()
    v = jnp.asarray([[1, 0, 1, 1, 0, 0]], jnp.float32)
    h = jax.nn.sigmoid(params["c"] + v @ params["W"])
    np.testing.assert_allclose(mean_field_reconstruction(params, v), jax.nn.sigmoid(params["b"] + h @ params["W"].T),
                               rtol=1e-6)
