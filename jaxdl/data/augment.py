"""Image augmentation as pure, seeded JAX functions that run on device.

Every function takes one example's typed PRNG key and one image [H, W, C]
(float), so a batch is augmented with `jax.vmap` over per-example keys
(`jaxdl.training.parallel.example_keys`): the draws depend on the example and
the step, not on the device layout, and a resumed run repeats them exactly.

Sources: random crop after 4-pixel padding and horizontal flips as in He et al.
2016 (arXiv:1512.03385); cutout as in DeVries & Taylor 2017 (arXiv:1708.04552).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

PAD_MODES = ("reflect", "constant")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation of images: `augment`'s settings, every transform off by default.

    Attributes:
      crop_pad: pixels of padding before a random crop back to the image size (0: no crop).
      crop_mode: "reflect" or "constant" (zero) padding.
      flip: random horizontal flips.
      cutout_size: side of a zeroed square, pixels (0: no cutout).
    """

    crop_pad: int = 0
    crop_mode: str = "reflect"
    flip: bool = False
    cutout_size: int = 0

    def __post_init__(self):
        if self.crop_mode not in PAD_MODES:
            raise ValueError(f"task.augment.crop_mode={self.crop_mode!r}; choose one of {PAD_MODES}.")
        if self.crop_pad < 0 or self.cutout_size < 0:
            raise ValueError("task.augment.crop_pad and task.augment.cutout_size must be 0 (off) or more pixels.")

    def enabled(self) -> dict[str, object]:
        """The keyword arguments of `augment` for the transforms that are on ({} when none is)."""
        on = {k: v for k, v in dataclasses.asdict(self).items() if v and k != "crop_mode"}
        if self.crop_pad:
            on["crop_mode"] = self.crop_mode
        return on


def random_crop(key: jax.Array, image: jax.Array, *, pad: int, mode: str = "reflect") -> jax.Array:
    """Pads `image` [H, W, C] by `pad` pixels on each side and crops a random H x W window.

    Raises:
      ValueError: unknown pad mode (reflect or constant, i.e. zeros).
    """
    if mode not in PAD_MODES:
        raise ValueError(f"crop pad mode {mode!r}; choose one of {PAD_MODES}.")
    h, w, c = image.shape
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
    dy, dx = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Mirrors `image` [H, W, C] left-right with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def cutout(key: jax.Array, image: jax.Array, *, size: int) -> jax.Array:
    """Zeroes a `size` x `size` square centred on a random pixel (the part inside the image)."""
    h, w, _ = image.shape
    cy, cx = jax.random.randint(key, (2,), 0, jnp.array([h, w]))
    y0, x0 = cy - size // 2, cx - size // 2
    ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)  # [H, W]
    return jnp.where(inside[..., None], jnp.zeros_like(image), image)


def augment(
    keys: jax.Array,
    images: jax.Array,
    *,
    crop_pad: int = 0,
    crop_mode: str = "reflect",
    flip: bool = False,
    cutout_size: int = 0,
) -> jax.Array:
    """Applies crop, flip and cutout (each when enabled) to a batch.

    Args:
      keys: typed key array [B], one stream per example.
      images: [B, H, W, C] float images.
      crop_pad: pixels of padding before the random crop (0: no crop).
      crop_mode: "reflect" or "constant" (zero) padding.
      flip: random horizontal flips.
      cutout_size: side of the zeroed square, pixels (0: no cutout).

    Returns:
      [B, H, W, C] augmented images, same dtype.
    """

    def one(key: jax.Array, image: jax.Array) -> jax.Array:
        crop_key, flip_key, cutout_key = jax.random.split(key, 3)
        if crop_pad:
            image = random_crop(crop_key, image, pad=crop_pad, mode=crop_mode)
        if flip:
            image = random_flip(flip_key, image)
        if cutout_size:
            image = cutout(cutout_key, image, size=cutout_size)
        return image

    return jax.vmap(one)(keys, images)


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """(images - mean) / std per channel; mean and std are [C] sequences in the images' scale."""
    return (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)
