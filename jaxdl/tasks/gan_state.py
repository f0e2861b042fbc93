"""The two players of the GAN game: their state, applying one network, and images from the generator.

The `DCGAN` module holds both networks under "generator" and "discriminator";
each has its own `TrainState` (params, batch_stats, optimizer state) in
`GANState`, and is applied alone (`apply_network`). Images for pictures and
FID come from the averaged generator where the state keeps one
(`sample_images`), in [0, 1].

Shapes: B batch, Z noise width, H W C image.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.gan import DCGAN
from jaxdl.training.parallel import pmean
from jaxdl.training.state import TrainState

_METHODS = {"generator": DCGAN.generate, "discriminator": DCGAN.discriminate}


class GANState(flax.struct.PyTreeNode):
    """The state of both players.

    Attributes:
      step: int32 scalar, generator updates so far (the loop's step).
      g: the generator's TrainState (params, batch_stats, opt_state, own step).
      d: the discriminator's TrainState (its step counts D updates).
      g_ema: the averaged generator {"params": ..., "batch_stats": ...} (same
        structure as `g`'s), or None when the task's `ema_decay` is 0.
    """

    step: jax.Array
    g: TrainState
    d: TrainState
    g_ema: dict[str, Any] | None = None

    @property
    def params(self) -> dict[str, Any]:
        """Both networks' parameters, {"generator": ..., "discriminator": ...}."""
        return {"generator": self.g.params, "discriminator": self.d.params}

    def generator(self, averaged: bool = True) -> tuple[Any, Any]:
        """(params, batch_stats) of the averaged generator when kept and `averaged`, else of the current one."""
        if averaged and self.g_ema is not None:
            return self.g_ema["params"], self.g_ema["batch_stats"]
        return self.g.params, self.g.batch_stats


def _variables(name: str, params: Any, batch_stats: Any) -> dict[str, Any]:
    variables = {"params": {name: params}}
    if batch_stats is not None:
        variables["batch_stats"] = {name: batch_stats}
    return variables


def apply_network(
    model: DCGAN, name: str, params, batch_stats, x: jax.Array, *, train: bool, axis_name: str | None = None
) -> tuple[jax.Array, Any]:
    """One network of the pair ("generator" or "discriminator") on x.

    Returns:
      (output, batch_stats): in training the updated running averages, with
      batch statistics and their update averaged over `axis_name`; otherwise
      the given batch_stats.
    """
    variables = _variables(name, params, batch_stats)
    if train and axis_name is not None:
        model = model.clone(axis_name=axis_name)
    if train and batch_stats is not None:
        out, updates = model.apply(variables, x, train=True, method=_METHODS[name], mutable=["batch_stats"])
        return out, pmean(updates["batch_stats"][name], axis_name)
    return model.apply(variables, x, train=train, method=_METHODS[name]), batch_stats


def to_unit_range(images: jax.Array) -> jax.Array:
    """Generator images in [-1, 1] -> pixel intensities in [0, 1] (the scale of the classifier and pictures)."""
    return jnp.clip((images + 1.0) * 0.5, 0.0, 1.0)


def sample_images(
    model: DCGAN, state: GANState, num: int, *, seed: int = 0, batch_size: int = 1000, averaged: bool = True
) -> np.ndarray:
    """`num` generated images in evaluation mode, as float32 [num, H, W, C] in [0, 1] (host numpy).

    Noise z ~ N(0, I) from `jax.random.key(seed)`; the same seed gives the same images.
    `averaged`: from the averaged generator where the state keeps one, else from the current generator.
    """
    params, batch_stats = state.generator(averaged)
    z = np.asarray(jax.random.normal(jax.random.key(seed), (num, model.latent_dim)))
    out = [
        np.asarray(_generate_unit(model, params, batch_stats, z[i : i + batch_size]))
        for i in range(0, num, batch_size)
    ]
    return np.concatenate(out)


@functools.partial(jax.jit, static_argnums=0)
def _generate_unit(model: DCGAN, params, batch_stats, z: jax.Array) -> jax.Array:
    fake = model.apply(_variables("generator", params, batch_stats), z, train=False, method=DCGAN.generate)
    return to_unit_range(fake)
