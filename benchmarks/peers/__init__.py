"""The reference models in PyTorch (eager and torch.compile) and Keras 3 (JAX backend), for `scripts.benchmark`.

Peers: MLP, CNN (the Keras CNN and the VGG-style one), airbench94's network,
LSTM and Transformer language models, MLP VAE and DCGAN in PyTorch
(`torch_models`; airbench94's and nanoGPT's networks in `torch_airbench94`
and `torch_gpt`, which the full reference runs in benchmarks/reference and the
step-for-step tests also build); all but airbench94 in Keras (`keras_models`).
Each framework runs in a process of its own with its defaults (`process`).

torch and keras are benchmark-only: `pip install -e .[bench]`.

Differences that remain, and why:
  * jaxdl draws dropout and VAE noise from one PRNG stream per example
    (`example_keys`, so a step is the same on 1 or N devices); the peers draw
    one tensor per batch.
  * Keras steps go through `Model.train_on_batch`, which returns the loss to
    the host each step; PyTorch on CPU is synchronous anyway.
  * The DCGAN's transposed convolutions are each framework's own op
    (ConvTranspose2d, Conv2DTranspose); jaxdl computes the same map as one
    3x3 convolution and a depth-to-space (`jaxdl.models.gan.ConvTranspose2x`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from benchmarks.peers.common import NotAvailable

__all__ = ["NotAvailable", "make"]


def make(peer: str, arch: str, settings: Mapping[str, Any], batch: Mapping[str, np.ndarray]) -> Callable[[int], None]:
    """`run(k)`: k training steps of `arch` in `peer` ("torch", "compile" or "keras") on `batch`.

    Raises:
      NotAvailable: the framework is not installed, or has no such model here.
      ValueError: unknown peer.
    """
    if peer in ("torch", "compile"):
        try:
            import torch  # noqa: F401
        except ImportError as error:
            raise NotAvailable("torch is not installed: pip install -e .[bench]") from error
        from benchmarks.peers import torch_models

        if arch not in torch_models.BUILDERS:
            raise NotAvailable(f"no PyTorch {arch}")
        return torch_models.runner(arch, settings, batch, compiled=peer == "compile")
    if peer == "keras":
        os.environ.setdefault("KERAS_BACKEND", "jax")  # read when keras is first imported
        try:
            import keras
        except ImportError as error:
            raise NotAvailable("keras is not installed: pip install -e .[bench]") from error
        if keras.backend.backend() != "jax":
            raise NotAvailable(f"keras runs on {keras.backend.backend()}, not jax (set KERAS_BACKEND=jax)")
        from benchmarks.peers import keras_models

        if arch not in keras_models.BUILDERS:
            raise NotAvailable(f"no natural Keras {arch}")
        return keras_models.BUILDERS[arch](settings, batch)
    raise ValueError(f"Unknown peer {peer!r}.")
