"""Flax modules: arrays in, arrays out; no losses, optimizers or I/O."""

import flax.linen as nn

from jaxdl.models.vae import VAE

MODELS: dict[str, type[nn.Module]] = {
    "vae": VAE,
}

__all__ = ["MODELS", "VAE"]
