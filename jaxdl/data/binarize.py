"""Binary images from intensities: each pixel ~ Bernoulli(intensity / 255).

The binarized MNIST of the VAE and RBM literature: training images are
binarized afresh at every use ("dynamic binarization", on device, one PRNG
stream per example) and evaluation images once, from a seed, on the host
(Salakhutdinov & Murray 2008; Burda et al. 2016).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def binarize(keys: jax.Array, images: jax.Array) -> jax.Array:
    """uint8 images [B, ...] in 0..255 -> float32 [B, ...] in {0, 1}; example b's pixels drawn from keys[b]."""
    probs = images.astype(jnp.float32) / 255.0
    return jax.vmap(lambda k, p: jax.random.bernoulli(k, p).astype(jnp.float32))(keys, probs)


def binarize_once(images: np.ndarray, seed: int) -> np.ndarray:
    """One fixed binarization of uint8 images [N, ...] on the host, as uint8 0 or 255 of the same shape."""
    rng = np.random.default_rng(seed)
    probs = images.astype(np.float32) / 255.0
    return (rng.random(probs.shape, dtype=np.float32) < probs).astype(np.uint8) * 255
