"""Deterministic autoencoder with MLP or convolutional encoder and decoder.

Hinton & Salakhutdinov 2006, "Reducing the dimensionality of data with neural
networks" (Science 313): a nonlinear encoder to a low-dimensional linear code
and a mirrored decoder, compared with PCA at the same code size. Vincent et
al. 2008, "Extracting and composing robust features with denoising
autoencoders" (ICML): the same network trained to reconstruct clean inputs
from corrupted ones (the corruption lives in `jaxdl.tasks.autoencoder`).
Deviations from Hinton & Salakhutdinov: no RBM pretraining (trained end to
end with Adam) and ReLU hidden units by default.

Encoder and decoder are the VAE's (`jaxdl.models.vae.image_coders`) with one
linear `code` head instead of `mu` and `logvar`.

Shapes:
  B batch, H W C image (28 28 1 for MNIST), D = H*W*C, Z code width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.vae import image_coders
from jaxdl.errors import require_positive

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
      axis_name: unused (no batch norm); the model contract's collective axis.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    code_dim: int = 2
    hidden_dims: Sequence[int] = (512, 256, 128)
    channels: Sequence[int] = (32, 64)
    architecture: str = "mlp"
    activation: str = "relu"
    image_shape: Sequence[int] = (28, 28, 1)
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        require_positive("model", code_dim=self.code_dim, hidden_dims=self.hidden_dims, channels=self.channels)
        super().__post_init__()

    def setup(self):
        self.encoder, self.decoder = image_coders(
            self.architecture, self.hidden_dims, self.channels, self.code_dim, ("code",), self.image_shape,
            activation=self.activation, dtype=self.dtype, param_dtype=self.param_dtype, owner="autoencoder")

    def encode(self, x: jax.Array) -> jax.Array:
        """x [B, H, W, C] float in [0, 1] -> code [B, Z] float32."""
        (code,) = self.encoder(x)
        return code.astype(jnp.float32)

    def decode(self, code: jax.Array) -> jax.Array:
        """code [..., Z] -> reconstruction logits [..., H, W, C] float32."""
        return self.decoder(code).astype(jnp.float32)

    def __call__(self, x: jax.Array, *, train: bool = True, example_keys: jax.Array | None = None) -> AutoencoderOutput:
        """Encodes and decodes `x` [B, H, W, C] (float in [0, 1], possibly corrupted).

        `train` and `example_keys` are unused (no dropout or batch norm); kept for the model contract.
        """
        del train, example_keys
        code = self.encode(x)
        return AutoencoderOutput(self.decode(code), code)
