"""Autoencoder module: shapes, dtypes, parameter count, code width."""

import jax
import jax.numpy as jnp
import pytest

from jaxdl.models.autoencoder import Autoencoder, AutoencoderOutput


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_output_shapes_and_dtypes(architecture):
    model = Autoencoder(architecture=architecture, code_dim=3, hidden_dims=(32,), channels=(4, 8))
    x = jnp.zeros((5, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    out = model.apply(variables, x, train=False)
    assert isinstance(out, AutoencoderOutput)
    assert out.recon_logits.shape == (5, 28, 28, 1) and out.code.shape == (5, 3)
    assert out.recon_logits.dtype == out.code.dtype == jnp.float32
    code = model.apply(variables, x, method=Autoencoder.encode)
    assert model.apply(variables, code, method=Autoencoder.decode).shape == (5, 28, 28, 1)


def test_default_parameter_count():
    # 784-512-256-128-2 encoder with a linear code layer, mirrored decoder.
    encoder = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 2 + 2
    decoder = 2 * 128 + 128 + 128 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784
    variables = Autoencoder().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert sum(p.size for p in jax.tree.leaves(variables)) == encoder + decoder


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="'mlp' or 'conv'"):
        Autoencoder(architecture="rnn").init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
