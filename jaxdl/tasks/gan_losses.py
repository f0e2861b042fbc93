"""The GAN game's losses, the WGAN-GP gradient penalty and the diversity measure of a batch.

Losses (`LOSSES`; D's scores are logits for the first two, raw values otherwise),
each per example ([B] -> [B]); the task averages them over the global batch:
  non_saturating and minimax: Goodfellow et al. 2014, "Generative Adversarial
    Nets" (arXiv:1406.2661), section 3;
  least_squares: Mao et al. 2017, "Least Squares Generative Adversarial
    Networks" (arXiv:1611.04076), eq. 2 with a = 0, b = c = 1;
  hinge: Lim & Ye 2017, "Geometric GAN" (arXiv:1705.02894);
  wgan_gp: Gulrajani et al. 2017, "Improved Training of Wasserstein GANs"
    (arXiv:1704.00028), with the gradient penalty lambda * (||grad D(x_hat)|| - 1)^2
    on random interpolates x_hat; it needs a discriminator without batch norm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


def ns_d_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """Discriminator cross-entropy -log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014, eq. 1).

    Args:
      real, fake: [B] logits of D on real and on generated images (pairs by row).

    Returns:
      [B] float32 nats, softplus(-real) + softplus(fake); the task averages it.
    """
    return jax.nn.softplus(-real) + jax.nn.softplus(fake)


def ns_g_loss(fake: jax.Array) -> jax.Array:
    """Non-saturating generator loss -log D(G(z)) = softplus(-fake) (Goodfellow et al. 2014, section 3). [B] -> [B] nats."""
    return jax.nn.softplus(-fake)


def minimax_g_loss(fake: jax.Array) -> jax.Array:
    """Minimax generator loss log(1 - D(G(z))) = -softplus(fake) (Goodfellow et al. 2014, eq. 1). [B] -> [B] nats."""
    return -jax.nn.softplus(fake)


def ls_d_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """LSGAN discriminator loss 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2 (Mao et al. 2017, eq. 2, a = 0, b = 1). [B], [B] -> [B]."""
    return 0.5 * jnp.square(real - 1.0) + 0.5 * jnp.square(fake)


def ls_g_loss(fake: jax.Array) -> jax.Array:
    """LSGAN generator loss 1/2 (D(G(z)) - 1)^2 (Mao et al. 2017, eq. 2, c = 1). [B] -> [B]."""
    return 0.5 * jnp.square(fake - 1.0)


def hinge_d_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """Hinge discriminator loss max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye 2017). [B], [B] -> [B]."""
    return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)


def wasserstein_d_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """Critic loss D(G(z)) - D(x) (Arjovsky et al. 2017; Gulrajani et al. 2017, algorithm 1, without the penalty). [B] -> [B]."""
    return fake - real


def wasserstein_g_loss(fake: jax.Array) -> jax.Array:
    """Generator loss -D(G(z)) of WGAN and of the hinge GAN (Lim & Ye 2017). [B] -> [B]."""
    return -fake


def gradient_penalty(score_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array, eps: jax.Array) -> jax.Array:
    """(||d score / d x_hat||_2 - 1)^2 at x_hat = eps x + (1 - eps) G(z) (Gulrajani et al. 2017, eq. 3).

    Args:
      score_fn: images [B, H, W, C] -> scores [B], with no interaction
        between examples (no batch norm), so that the gradient of the summed
        scores holds each example's own gradient.
      real, fake: [B, H, W, C] images.
      eps: [B] interpolation weights in [0, 1].

    Returns:
      [B] float32 penalties (multiply by lambda and average).
    """
    eps = eps.reshape(-1, *([1] * (real.ndim - 1)))
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: score_fn(x).sum())(x_hat)  # [B, H, W, C]
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
    return jnp.square(norms - 1.0)


class GANLoss(NamedTuple):
    """A loss of the GAN game: per-example D and G losses and D's decision threshold on its scores."""

    d_loss: Callable[[jax.Array, jax.Array], jax.Array]
    g_loss: Callable[[jax.Array], jax.Array]
    threshold: float


LOSSES: dict[str, GANLoss] = {
    "non_saturating": GANLoss(ns_d_loss, ns_g_loss, 0.0),
    "minimax": GANLoss(ns_d_loss, minimax_g_loss, 0.0),
    "least_squares": GANLoss(ls_d_loss, ls_g_loss, 0.5),
    "hinge": GANLoss(hinge_d_loss, wasserstein_g_loss, 0.0),
    "wgan_gp": GANLoss(wasserstein_d_loss, wasserstein_g_loss, 0.0),
}


def neighbour_distance(images: jax.Array, weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Sum of L2 distances between each image and the next one in the batch, and the number of pairs.

    Args:
      images: [B, H, W, C] float.
      weights: [B] 0/1 validity (None: all valid); a pair counts when both are valid.

    Returns:
      (distance sum, pair count): float32 scalars. Their ratio falls towards 0
      when a generator repeats itself (mode collapse).
    """
    flat = images.reshape(images.shape[0], -1)
    dist = jnp.sqrt(jnp.sum(jnp.square(flat - jnp.roll(flat, 1, axis=0)), axis=-1) + 1e-12)  # [B]
    w = jnp.ones(flat.shape[0]) if weights is None else weights * jnp.roll(weights, 1)
    return jnp.sum(dist * w), jnp.sum(w)
