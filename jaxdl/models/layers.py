"""Small building blocks shared by several models: nonlinearities by name, per-example dropout.

Dropout draws its mask from one PRNG stream per example (`example_keys`, see
`jaxdl.training.parallel.example_keys`), so a step drops the same units
whether the batch sits on one device or is split over eight.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": nn.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "silu": nn.silu,
    "leaky_relu": nn.leaky_relu,
    "softplus": nn.softplus,
    "identity": lambda x: x,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the elementwise nonlinearity called `name`.

    Raises:
      ValueError: `name` is not in ACTIVATIONS; the message lists the valid names.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}.") from None


def layer_keys(keys: jax.Array, layer: int) -> jax.Array:
    """Folds a layer number into each example's key: typed keys [B] -> [B]."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, layer)


class ExampleDropout(nn.Module):
    """Inverted dropout whose mask comes from one PRNG stream per example.

    Attributes:
      rate: probability of zeroing a unit, in [0, 1).
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, keys: jax.Array | None, *, deterministic: bool) -> jax.Array:
        """x [B, ...] -> x with units zeroed with probability `rate` and the rest scaled by 1 / (1 - rate).

        Args:
          x: activations [B, ...].
          keys: typed key array [B], one stream per example (unused when deterministic).
          deterministic: identity when True (evaluation).

        Raises:
          ValueError: training with dropout and no keys.
        """
        if deterministic or self.rate == 0.0:
            return x
        if keys is None:
            raise ValueError("Dropout in training needs per-example keys: call the model with example_keys=[B] keys.")
        keep = 1.0 - self.rate
        mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, x.shape[1:]))(keys)  # [B, ...]
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
