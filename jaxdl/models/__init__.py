"""Flax modules: arrays in, arrays out; no losses, optimizers or I/O. What every model takes and offers is
`jaxdl.models.contract`."""

import flax.linen as nn

from jaxdl.models.airbench import Airbench94
from jaxdl.models.cnn import CNN
from jaxdl.models.autoencoder import Autoencoder
from jaxdl.models.gan import DCGAN
from jaxdl.models.mlp import MLP
from jaxdl.models.rbm import RBM
from jaxdl.models.rnn import RNNLM
from jaxdl.models.transformer import Transformer
from jaxdl.models.vae import VAE

MODELS: dict[str, type[nn.Module]] = {
    "vae": VAE,
    "cnn": CNN,
    "airbench94": Airbench94,
    "mlp": MLP,
    "autoencoder": Autoencoder,
    "rbm": RBM,
    "transformer": Transformer,
    "rnn": RNNLM,
    "gan": DCGAN,
}

__all__ = ["Airbench94", "CNN", "DCGAN", "MODELS", "MLP", "RBM", "Autoencoder", "RNNLM", "Transformer", "VAE"]
