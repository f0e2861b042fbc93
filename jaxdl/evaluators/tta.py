"""Test-time augmentation of an image classifier: airbench's views and the accuracy of their average.

Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"
(arXiv:2404.00498), levels of its `infer`:

  0: the image itself;
  1: the mean of the logits of the image and of its mirror image;
  2: 1/2 the level-1 logits of the image plus 1/4 those of the image shifted
     one pixel up-left and 1/4 down-right (reflect padding): 6 views.

Used by the classification task's final evaluation (`eval/tta_accuracy`).
Shapes: B batch, H W C image, K classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.training.parallel import psum

LEVELS = (0, 1, 2)


def check_level(level: int) -> None:
    """Raises ValueError unless `level` is one of LEVELS."""
    if level not in LEVELS:
        raise ValueError(f"task.tta_level={level}; choose 0 (none), 1 (mirror) or 2 (mirror and translate).")


def tta_logits(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array, level: int) -> jax.Array:
    """Logits [B, K] of images `x` [B, H, W, C] averaged over the views of `level` (see the module docstring).

    Args:
      logits_fn: images [B, H, W, C] -> evaluation-mode logits [B, K].
    """

    def mirrored(images):
        if level == 0:
            return logits_fn(images)
        return 0.5 * logits_fn(images) + 0.5 * logits_fn(images[:, :, ::-1])

    logits = mirrored(x)
    if level < 2:
        return logits
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")  # [B, H + 2, W + 2, C]
    shifted = 0.5 * mirrored(padded[:, :h, :w]) + 0.5 * mirrored(padded[:, 2 : h + 2, 2 : w + 2])
    return 0.5 * logits + 0.5 * shifted


def correct_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array, axis_name: str | None) -> dict[str, jax.Array]:
    """`correct_sum` and `count` over the valid examples (mask bool [B]) of the global batch."""
    mask = mask.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == labels) * mask
    return psum({"correct_sum": jnp.sum(correct), "count": mask.sum()}, axis_name)


def accuracy(totals: Mapping[str, np.ndarray]) -> float:
    """The accuracy of summed `correct_sums`, a fraction in [0, 1]."""
    return float(totals["correct_sum"]) / float(totals["count"])
