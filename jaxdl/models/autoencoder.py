"""Deterministic autoencoder with MLP or convolutional encoder and decoder.

Hinton & Salakhutdinov 2006, "Reducing the dimensionality of data with neural
networks" (Science 313): a nonlinear encoder to a low-dimensional linear code
and a mirrored decoder, compared with PCA at the same code size. Vincent et
al. 2008, "Extracting and composing robust features with denoising
autoencoders" (ICML): the same network trained to reconstruct clean inputs
from corrupted ones (the corruption lives in `jaxdl.tasks.autoencoder`).
Deviations from Hinton & Salakhutdinov: no RBM pretraining (trained end to
end with Adam) and ReLU hidden units by default.

The decoders are the VAE's (`jaxdl.models.vae.MLPDecoder`, `ConvDecoder`):
both map a code to Bernoulli logits of the pixels.

Shapes:
  B batch, H W C image (28 28 1 for MNIST), D = H*W*C, Z code width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import activation_fn
from jaxdl.models.vae import ConvDecoder, MLPDecoder

Dtype = Any


class AutoencoderOutput(NamedTuple):
    """What `Autoencoder.__call__` returns.

    Attributes:
      recon_logits: [B, H, W, C] pre-sigmoid logits of the reconstruction
        (sigmoid gives pixel intensities in [0, 1]).
      code: [B, Z] the code (linear units, unbounded).
    """

    recon_logits: jax.Array
    code: jax.Array


class MLPCodeEncoder(nn.Module):
    """x [B, H, W, C] -> code [B, Z]: dense hidden layers, then a linear code layer."""

    hidden_dims: Sequence[int]
    code_dim: int
    activation: str = "relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        h = x.reshape(x.shape[0], -1).astype(self.dtype)  # [B, D]
        for width in self.hidden_dims:
            h = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.param_dtype)(h))
        return nn.Dense(self.code_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="code")(h)  # [B, Z]


class ConvCodeEncoder(nn.Module):
    """x [B, H, W, C] -> code [B, Z]: stride-2 3x3 convolutions, then a linear code layer."""

    channels: Sequence[int]
    code_dim: int
    activation: str = "relu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        h = x.astype(self.dtype)
        for c in self.channels:
            h = act(nn.Conv(c, (3, 3), strides=2, dtype=self.dtype, param_dtype=self.param_dtype)(h))  # H, W halve
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(self.code_dim, dtype=self.dtype, param_dtype=self.param_dtype, name="code")(h)  # [B, Z]


class Autoencoder(nn.Module):
    """Encoder to a Z-dimensional code and a mirrored decoder to pixel logits.

    Attributes:
      code_dim: Z, width of the code (2 for pictures, like PCA's first two components).
      hidden_dims: MLP encoder widths (the decoder mirrors them); used when
        `architecture == "mlp"`.
      channels: conv encoder widths (the decoder mirrors them); used when
        `architecture == "conv"`. H and W must be divisible by 2 ** len(channels).
      architecture: "mlp" or "conv".
      activation: hidden nonlinearity.
      image_shape: (H, W, C) of the data.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    code_dim: int = 2
    hidden_dims: Sequence[int] = (512, 256, 128)
    channels: Sequence[int] = (32, 64)
    architecture: str = "mlp"
    activation: str = "relu"
    image_shape: Sequence[int] = (28, 28, 1)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        common = dict(activation=self.activation, dtype=self.dtype, param_dtype=self.param_dtype)
        if self.architecture == "mlp":
            self.encoder = MLPCodeEncoder(self.hidden_dims, self.code_dim, **common)
            self.decoder = MLPDecoder(tuple(reversed(self.hidden_dims)), self.image_shape, **common)
        elif self.architecture == "conv":
            self.encoder = ConvCodeEncoder(self.channels, self.code_dim, **common)
            self.decoder = ConvDecoder(tuple(reversed(self.channels)), self.image_shape, **common)
        else:
            raise ValueError(f"Unknown autoencoder architecture {self.architecture!r}; use 'mlp' or 'conv'.")

    def encode(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, C] float in [0, 1] -> code [B, Z] float32."""
        return self.encoder(x).astype(jnp.float32)

    def decode(self, code: jax.Array) -> jax.Array:
        """code [..., Z] -> reconstruction logits [..., H, W, C] float32."""
        return self.decoder(code).astype(jnp.float32)

    def __call__(self, x: jax.Array, *, train: bool = True) -> AutoencoderOutput:
        """Encodes and decodes `x` [B, H, W, C] (float in [0, 1], possibly corrupted).

        `train` is unused (no dropout or batch norm); kept for the model contract.
        """
        del train
        code = self.encode(x)
        return AutoencoderOutput(self.decode(code), code)
