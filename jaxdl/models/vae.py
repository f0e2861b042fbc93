"""Variational autoencoder with a Gaussian encoder and a Bernoulli decoder.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (arXiv:1312.6114).
The default MLP follows the one-stochastic-layer VAE of Burda, Grosse &
Salakhutdinov 2016, "Importance Weighted Autoencoders" (arXiv:1509.00519):
784-200-200-50 with tanh, decoder mirrored. A convolutional variant
(`architecture="conv"`) swaps both MLPs for strided convolutions.

The module only maps arrays to arrays; the objective (ELBO, importance-weighted
bound) lives in `jaxdl.tasks.vae`.

Shapes:
  B batch, H W C image (28 28 1 for MNIST), D = H*W*C, Z latent width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import activation_fn
from jaxdl.errors import require_positive

Dtype = Any


class VAEOutput(NamedTuple):
    """What `VAE.__call__` returns.

    Attributes:
      recon_logits: [B, H, W, C] Bernoulli logits of p(x | z), pre-sigmoid.
      mu: [B, Z] mean of q(z | x).
      logvar: [B, Z] log-variance (natural log) of q(z | x).
      z: [B, Z] the reparameterized sample the logits were decoded from.
    """

    recon_logits: jax.Array
    mu: jax.Array
    logvar: jax.Array
    z: jax.Array


def reparameterize(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Draws z = mu + exp(logvar / 2) * eps with eps ~ N(0, I).

    Args:
      key: a typed PRNG key, either scalar (one stream for the whole batch) or
        of shape [B] (one stream per example, so that a sample does not depend
        on how the batch is split over devices).
      mu: [B, ..., Z] float mean (extra axes, e.g. [B, K, Z] for K samples per
        example, are drawn from the example's stream).
      logvar: log-variance (natural log) broadcastable to `mu`.

    Returns:
      z: float array of `mu`'s shape and dtype.
    """
    if key.shape == ():
        eps = jax.random.normal(key, mu.shape, mu.dtype)
    else:
        eps = jax.vmap(lambda k: jax.random.normal(k, mu.shape[1:], mu.dtype))(key)
    return mu + jnp.exp(0.5 * logvar) * eps


def linear_heads(h: jax.Array, heads: Sequence[str], out_dim: int, dtype: Dtype, param_dtype: Dtype) -> tuple[jax.Array, ...]:
    """One linear layer per name in `heads` on features h [B, F]: a tuple of [B, out_dim] arrays.

    Must be called inside a compact module; the layers are named after the heads.
    """
    return tuple(nn.Dense(out_dim, dtype=dtype, param_dtype=param_dtype, name=name)(h) for name in heads)


class MLPEncoder(nn.Module):
    """x [B, H, W, C] -> one [B, Z] array per head, through dense layers.

    `heads` names the linear output layers: ("mu", "logvar") for the VAE's
    Gaussian posterior, ("code",) for a deterministic autoencoder.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    heads: Sequence[str] = ("mu", "logvar")
    activation: str = "tanh"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        act = activation_fn(self.activation)
        h = x.reshape(x.shape[0], -1).astype(self.dtype)  # [B, D]
        for width in self.hidden_dims:
            h = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(h))
        return linear_heads(h, self.heads, self.out_dim, self.dtype, self.param_dtype)


class MLPDecoder(nn.Module):
    """z [..., Z] -> Bernoulli logits [..., H, W, C] through dense layers."""

    hidden_dims: Sequence[int]
    image_shape: Sequence[int]
    activation: str = "tanh"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        h = z.astype(self.dtype)
        for width in self.hidden_dims:
            h = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(h))
        size = 1
        for d in self.image_shape:
            size *= d
        logits = nn.Dense(size, dtype=self.dtype, param_dtype=self.param_dtype)(h)  # [..., D]
        return logits.reshape(*z.shape[:-1], *self.image_shape)


class ConvEncoder(nn.Module):
    """x [B, H, W, C] -> one [B, Z] array per head, through stride-2 3x3 convolutions.

    `heads` as in `MLPEncoder`.
    """

    channels: Sequence[int]
    out_dim: int
    heads: Sequence[str] = ("mu", "logvar")
    activation: str = "relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        act = activation_fn(self.activation)
        h = x.astype(self.dtype)
        for c in self.channels:
            h = act(nn.Conv(c, (3, 3), strides=2, dtype=self.dtype, param_dtype=self.param_dtype)(h))  # H, W halve
        h = h.reshape(h.shape[0], -1)
        return linear_heads(h, self.heads, self.out_dim, self.dtype, self.param_dtype)


class ConvDecoder(nn.Module):
    """z [..., Z] -> logits [..., H, W, C] through stride-2 transposed convolutions.

    H and W must be divisible by 2 ** len(channels).
    """

    channels: Sequence[int]
    image_shape: Sequence[int]
    activation: str = "relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        height, width, out_channels = self.image_shape
        scale = 2 ** len(self.channels)
        if height % scale or width % scale:
            raise ValueError(f"image_shape {tuple(self.image_shape)} is not divisible by {scale}; use fewer channels.")
        lead = z.shape[:-1]
        h = z.reshape(-1, z.shape[-1]).astype(self.dtype)
        h = act(nn.Dense(height // scale * width // scale * self.channels[0], dtype=self.dtype, param_dtype=self.param_dtype)(h))
        h = h.reshape(-1, height // scale, width // scale, self.channels[0])
        for c in self.channels:
            h = act(nn.ConvTranspose(c, (3, 3), strides=(2, 2), dtype=self.dtype, param_dtype=self.param_dtype)(h))  # H, W double
        logits = nn.Conv(out_channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype)(h)
        return logits.reshape(*lead, height, width, out_channels)


def image_coders(architecture: str, hidden_dims: Sequence[int], channels: Sequence[int], out_dim: int,
                 heads: Sequence[str], image_shape: Sequence[int], *, activation: str, dtype: Dtype,
                 param_dtype: Dtype, owner: str) -> tuple[nn.Module, nn.Module]:
    """An encoder to `heads` of width `out_dim` and the mirrored decoder to pixel logits.

    Call from a module's `setup`. "mlp" uses `hidden_dims`, "conv" uses `channels`
    (the decoder takes them in reverse order).

    Raises:
      ValueError: `architecture` is neither "mlp" nor "conv" (the message names `owner`).
    """
    common = dict(activation=activation, dtype=dtype, param_dtype=param_dtype)
    if architecture == "mlp":
        return (MLPEncoder(hidden_dims, out_dim, tuple(heads), **common),
                MLPDecoder(tuple(reversed(hidden_dims)), image_shape, **common))
    if architecture == "conv":
        return (ConvEncoder(channels, out_dim, tuple(heads), **common),
                ConvDecoder(tuple(reversed(channels)), image_shape, **common))
    raise ValueError(f"Unknown {owner} architecture {architecture!r}; use 'mlp' or 'conv'.")


class VAE(nn.Module):
    """Gaussian-latent VAE with a Bernoulli likelihood over pixels.

    Attributes:
      latent_dim: Z, width of the latent code.
      hidden_dims: MLP widths of the encoder (the decoder mirrors them).
      channels: conv widths of the encoder (the decoder mirrors them); used
        when `architecture == "conv"`.
      architecture: "mlp" (Burda et al. 2016) or "conv".
      activation: name of the hidden nonlinearity ("tanh", "relu", ...).
      image_shape: (H, W, C) of the data.
      axis_name: unused (no batch norm); the model contract's collective axis.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    latent_dim: int = 50
    hidden_dims: Sequence[int] = (200, 200)
    channels: Sequence[int] = (32, 64)
    architecture: str = "mlp"
    activation: str = "tanh"
    image_shape: Sequence[int] = (28, 28, 1)
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        require_positive("model", latent_dim=self.latent_dim, hidden_dims=self.hidden_dims, channels=self.channels)
        super().__post_init__()

    def setup(self):
        self.encoder, self.decoder = image_coders(
            self.architecture, self.hidden_dims, self.channels, self.latent_dim, ("mu", "logvar"), self.image_shape,
            activation=self.activation, dtype=self.dtype, param_dtype=self.param_dtype, owner="VAE")

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, H, W, C] float in [0, 1] -> (mu [B, Z], logvar [B, Z]) float32."""
        mu, logvar = self.encoder(x)
        return mu.astype(jnp.float32), logvar.astype(jnp.float32)

    def decode(self, z: jax.Array) -> jax.Array:
        """z [..., Z] -> Bernoulli logits [..., H, W, C] float32."""
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x: jax.Array, *, train: bool = True, example_keys: jax.Array | None = None) -> VAEOutput:
        """Encodes, samples z by reparameterization, decodes.

        Args:
          x: [B, H, W, C] float in [0, 1] (binary for a Bernoulli likelihood).
          train: unused (no dropout or batch norm); kept for the model contract.
          example_keys: the latent stream: typed keys [B], one per example, or
            one scalar key (see `reparameterize`).

        Returns:
          VAEOutput with recon_logits [B, H, W, C], mu, logvar and z [B, Z].

        Raises:
          ValueError: no `example_keys` (z is always sampled).
        """
        del train
        if example_keys is None:
            raise ValueError("The VAE samples z: call it with example_keys (typed keys [B], or one key).")
        mu, logvar = self.encode(x)
        z = reparameterize(example_keys, mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z)
