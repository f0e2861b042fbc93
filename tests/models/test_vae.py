"""VAE module: shapes, dtypes, parameter count, reparameterization, KL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.vae import VAE, VAEOutput, reparameterize
from jaxdl.tasks.vae import gaussian_kl, gaussian_log_prob


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_output_shapes_and_dtypes(architecture):
    model = VAE(architecture=architecture, latent_dim=8, hidden_dims=(32,), channels=(4, 8))
    x = jnp.zeros((5, 28, 28, 1))
    variables = model.init(jax.random.key(0), x, example_keys=jax.random.key(1))
    out = model.apply(variables, x, example_keys=jax.random.key(2))
    assert isinstance(out, VAEOutput)
    assert out.recon_logits.shape == (5, 28, 28, 1)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (5, 8)
    assert all(a.dtype == jnp.float32 for a in out)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    model = VAE(latent_dim=4, hidden_dims=(16,), dtype=jnp.bfloat16)
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x, example_keys=jax.random.key(1))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    out = model.apply(variables, x, example_keys=jax.random.key(2))
    assert out.recon_logits.dtype == jnp.float32 and out.mu.dtype == jnp.float32


def test_default_parameter_count_matches_burda_architecture():
    # 784-200-200-50 encoder (mu and logvar heads) and 50-200-200-784 decoder.
    encoder = 784 * 200 + 200 + 200 * 200 + 200 + 2 * (200 * 50 + 50)
    decoder = 50 * 200 + 200 + 200 * 200 + 200 + 200 * 784 + 784
    variables = VAE().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), example_keys=jax.random.key(1))
    assert sum(p.size for p in jax.tree.leaves(variables)) == encoder + decoder == 425_284


def test_reparameterized_samples_have_the_posterior_mean_and_variance():
    mu = jnp.array([[1.5, -2.0, 0.0]])
    logvar = jnp.array([[0.0, np.log(0.25), np.log(4.0)]])
    n = 200_000
    z = reparameterize(jax.random.key(0), jnp.broadcast_to(mu, (n, 3)), jnp.broadcast_to(logvar, (n, 3)))
    np.testing.assert_allclose(z.mean(0), mu[0], atol=0.02)
    np.testing.assert_allclose(z.var(0), np.exp(logvar[0]), rtol=0.02)


def test_per_example_keys_make_samples_independent_of_batch_split():
    keys = jax.random.split(jax.random.key(0), 6)
    mu, logvar = jnp.zeros((6, 4)), jnp.zeros((6, 4))
    whole = reparameterize(keys, mu, logvar)
    halves = jnp.concatenate([reparameterize(keys[:3], mu[:3], logvar[:3]), reparameterize(keys[3:], mu[3:], logvar[3:])])
    np.testing.assert_array_equal(whole, halves)
    assert not np.allclose(whole[0], whole[1])  # distinct streams per example


def test_reparameterization_gradient_flows_to_mu_and_logvar():
    def sample_mean(mu, logvar):
        return reparameterize(jax.random.key(0), mu, logvar).sum()

    g_mu, g_logvar = jax.grad(sample_mean, argnums=(0, 1))(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    np.testing.assert_allclose(g_mu, 1.0)
    assert np.all(np.abs(g_logvar) > 0)


def test_analytic_kl_matches_monte_carlo():
    mu = jnp.array([0.5, -1.0, 2.0])
    logvar = jnp.array([0.3, -0.7, 0.1])
    n = 400_000
    z = reparameterize(jax.random.key(3), jnp.broadcast_to(mu, (n, 3)), jnp.broadcast_to(logvar, (n, 3)))
    monte_carlo = jnp.mean(gaussian_log_prob(z, mu, logvar) - gaussian_log_prob(z, 0.0, 0.0))
    np.testing.assert_allclose(gaussian_kl(mu, logvar), monte_carlo, rtol=1e-2)


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="'mlp' or 'conv'"):
        VAE(architecture="rnn").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), example_keys=jax.random.key(1))


def test_z_is_always_sampled_from_the_given_keys():
    model = VAE(latent_dim=3, hidden_dims=(8,))
    x = jnp.zeros((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x, example_keys=jax.random.key(1))
    with pytest.raises(ValueError, match="example_keys"):
        model.apply(variables, x)
    keys = jax.random.split(jax.random.key(2), 2)
    np.testing.assert_array_equal(model.apply(variables, x, example_keys=keys).z,
                                  model.apply(variables, x, train=False, example_keys=keys).z)
