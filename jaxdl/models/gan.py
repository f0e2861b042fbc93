"""DCGAN: a transposed-convolution generator and a convolutional discriminator.

Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks" (arXiv:1511.06434): strided
(transposed) convolutions instead of pooling, batch norm in both networks
except the generator's output and the discriminator's input layer, ReLU in the
generator with a tanh output, LeakyReLU (slope 0.2) in the discriminator, no
hidden dense layers besides the generator's projection of z, weights drawn
from N(0, 0.02^2).

Deviations, for 28x28 images on a 2-core CPU: two up-/down-sampling stages
instead of four (G: z -> 7x7xC0 -> 14x14xC1 -> 28x28xC; D mirrored), 4x4
kernels as in the paper. `discriminator_norm="layer"` (or "none") replaces the
discriminator's batch norm, which WGAN-GP's per-example gradient penalty
forbids (Gulrajani et al. 2017, section 4).

The module only maps arrays to arrays; the adversarial losses and the
alternating updates live in `jaxdl.tasks.gan`.

Shapes:
  B batch, Z noise width, H W C image (28 28 1 for MNIST), with H and W
  divisible by 4.
  Images are float in [-1, 1] (tanh range) on both sides of the module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.models.layers import batch_norm
from jaxdl.errors import require_positive

Dtype = Any

NORMS = ("batch", "layer", "none")
_INIT = nn.initializers.normal(0.02)  # the paper's N(0, 0.02^2) weights


# Taps of a 4-tap, stride-2 transposed convolution (flax/lax "SAME" padding) that reach output phase a
# from input offset u - 1 (u = 0, 1, 2); 4 marks "none" (a zero tap appended to the kernel).
_PHASE_TAPS = ((0, 2, 4), (4, 1, 3))


class ConvTranspose2x(nn.Module):
    """4x4 transposed convolution with stride 2 and "SAME" padding, the same function as
    `nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")` with the same kernel.

    Computed as one 3x3 convolution to the 4 output phases followed by a
    depth-to-space shuffle (the sub-pixel view of Shi et al. 2016,
    arXiv:1609.05158), with the 3x3x(4 C') kernel assembled from the 4x4 one
    (zeros where a phase has no tap). Reason: on CPU, XLA differentiates the
    dilated convolution of `nn.ConvTranspose` with respect to its kernel about
    9x slower (7x7x128 -> 14x14x64 at batch 64: 830 ms against 95 ms here).

    Attributes:
      features: C', output channels.
      use_bias: add a bias per output channel.
      kernel_init, dtype, param_dtype: as in flax's convolutions; the kernel is [4, 4, C, C'].
    """

    features: int
    use_bias: bool = True
    kernel_init: Any = _INIT
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, 2H, 2W, C']."""
        batch, height, width, channels = x.shape
        kernel = self.param("kernel", self.kernel_init, (4, 4, channels, self.features), self.param_dtype)
        padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # tap 4 is zero
        taps = jnp.asarray(_PHASE_TAPS)  # [2 phases, 3 offsets]
        k3 = padded[taps[:, :, None, None], taps[None, None, :, :]]  # [a, u, b, v, C, C']
        k3 = k3.transpose(1, 3, 4, 0, 2, 5).reshape(3, 3, channels, 4 * self.features)  # [u, v, C, (a, b, C')]
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            k3.astype(self.dtype),
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )  # [B, H, W, 4 C']
        y = y.reshape(batch, height, width, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)  # [B, H, a, W, b, C']
        y = y.reshape(batch, 2 * height, 2 * width, self.features)  # [B, 2H, 2W, C']
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(self.dtype)
        return y


class GANOutput(NamedTuple):
    """What `DCGAN.__call__` returns (used to initialise both networks at once).

    Attributes:
      fake: [B, H, W, C] generated images in [-1, 1].
      real_logits: [B] discriminator scores of the real images.
      fake_logits: [B] discriminator scores of `fake`.
    """

    fake: jax.Array
    real_logits: jax.Array
    fake_logits: jax.Array


class Generator(nn.Module):
    """z [B, Z] -> Dense -> [B, H/4, W/4, C0] -> ConvT(C1, stride 2) -> ConvT(C, stride 2) -> tanh.

    Attributes:
      image_shape: (H, W, C) of the images made.
      channels: (C0, C1), widths at H/4 and H/2.
      batch_norm_momentum: running-average decay of the batch statistics.
      axis_name: mapped axis over which batch statistics are averaged in
        training (None: the local batch); set by the task inside a mapped step.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    image_shape: Sequence[int] = (28, 28, 1)
    channels: Sequence[int] = (64, 32)
    batch_norm_momentum: float = 0.9
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
        """Maps noise to images.

        Args:
          z: [B, Z] float noise, N(0, I) in training.
          train: batch statistics of this batch (and running-average updates,
            which need `mutable=["batch_stats"]`); otherwise the running averages.

        Returns:
          [B, H, W, C] float32 images in [-1, 1].
        """
        height, width, out_channels = self.image_shape
        if height % 4 or width % 4:
            raise ValueError(f"model.image_shape={tuple(self.image_shape)}: H and W must be divisible by 4.")
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_INIT)

        def norm(h):
            return batch_norm(train=train, momentum=self.batch_norm_momentum, axis_name=self.axis_name,
                              dtype=self.dtype, param_dtype=self.param_dtype)(h)

        c0, c1 = self.channels
        h = nn.Dense(height // 4 * width // 4 * c0, use_bias=False, **common)(z.astype(self.dtype))  # [B, H/4*W/4*C0]
        h = nn.relu(norm(h.reshape(z.shape[0], height // 4, width // 4, c0)))  # [B, H/4, W/4, C0]
        h = ConvTranspose2x(c1, use_bias=False, **common)(h)  # [B, H/2, W/2, C1]
        h = nn.relu(norm(h))
        h = ConvTranspose2x(out_channels, **common)(h)  # [B, H, W, C]
        return jnp.tanh(h).astype(jnp.float32)


class Discriminator(nn.Module):
    """x [B, H, W, C] -> Conv(C1, stride 2) -> LReLU -> Conv(C0, stride 2) -> norm -> LReLU -> Dense(1).

    Attributes:
      channels: (C0, C1) as in the generator; the first convolution has C1
        outputs, the second C0 (the generator mirrored).
      norm: "batch" (DCGAN), "layer" or "none" after the second convolution.
      leaky_slope: negative slope of the LeakyReLU (paper: 0.2).
      batch_norm_momentum, axis_name, dtype, param_dtype: as in `Generator`.
    """

    channels: Sequence[int] = (64, 32)
    norm: str = "batch"
    leaky_slope: float = 0.2
    batch_norm_momentum: float = 0.9
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Scores images.

        Args:
          x: [B, H, W, C] float images in [-1, 1].
          train: batch statistics (batch norm only); otherwise running averages.

        Returns:
          [B] float32 scores: logits for the cross-entropy losses, raw values
          for least-squares, hinge and Wasserstein losses.

        Raises:
          ValueError: unknown `norm`.
        """
        if self.norm not in NORMS:
            raise ValueError(f"model.discriminator_norm={self.norm!r}; choose one of {NORMS}.")
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_INIT)
        c0, c1 = self.channels
        h = nn.Conv(c1, (4, 4), strides=(2, 2), padding="SAME", **common)(x.astype(self.dtype))  # [B, H/2, W/2, C1]
        h = nn.leaky_relu(h, self.leaky_slope)
        h = nn.Conv(c0, (4, 4), strides=(2, 2), padding="SAME", use_bias=self.norm == "none", **common)(h)  # [B, H/4, W/4, C0]
        if self.norm == "batch":
            h = batch_norm(train=train, momentum=self.batch_norm_momentum, axis_name=self.axis_name,
                           dtype=self.dtype, param_dtype=self.param_dtype)(h)
        elif self.norm == "layer":
            h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(h)
        h = nn.leaky_relu(h, self.leaky_slope)
        h = h.reshape(h.shape[0], -1)  # [B, H/4 * W/4 * C0]
        return nn.Dense(1, **common)(h)[:, 0].astype(jnp.float32)  # [B]


class DCGAN(nn.Module):
    """A generator and a discriminator with shared settings; `generate` and `discriminate` apply one of them.

    The two networks' variables sit under "generator" and "discriminator";
    the task keeps them in separate train states and applies each alone with
    `method=DCGAN.generate` or `method=DCGAN.discriminate`.

    Attributes:
      latent_dim: Z, width of the noise vector (paper: 100).
      image_shape: (H, W, C).
      channels: (C0, C1), the generator's widths at H/4 and H/2, mirrored in
        the discriminator.
      discriminator_norm: "batch" (DCGAN), "layer" or "none" (WGAN-GP needs
        one of the last two).
      leaky_slope: discriminator LeakyReLU slope.
      batch_norm_momentum: running-average decay of every batch norm.
      axis_name: mapped axis for batch statistics (None: local batch); set by the task.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    latent_dim: int = 100
    image_shape: Sequence[int] = (28, 28, 1)
    channels: Sequence[int] = (64, 32)
    discriminator_norm: str = "batch"
    leaky_slope: float = 0.2
    batch_norm_momentum: float = 0.9
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        require_positive("model", latent_dim=self.latent_dim, channels=self.channels)
        super().__post_init__()

    def setup(self):
        common = dict(
            channels=tuple(self.channels),
            batch_norm_momentum=self.batch_norm_momentum,
            axis_name=self.axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.generator = Generator(image_shape=tuple(self.image_shape), **common)
        self.discriminator = Discriminator(norm=self.discriminator_norm, leaky_slope=self.leaky_slope, **common)

    def generate(self, z: jax.Array, *, train: bool) -> jax.Array:
        """[B, Z] noise -> [B, H, W, C] images in [-1, 1] (see `Generator`)."""
        return self.generator(z, train=train)

    def discriminate(self, x: jax.Array, *, train: bool) -> jax.Array:
        """[B, H, W, C] images in [-1, 1] -> [B] scores (see `Discriminator`)."""
        return self.discriminator(x, train=train)

    def __call__(self, z: jax.Array, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> GANOutput:
        """Generates from `z` [B, Z] and scores both `x` [B, H, W, C] and the fakes (initialises both networks).

        `example_keys` is unused (the noise z is an input); kept for the model contract.
        """
        del example_keys
        fake = self.generate(z, train=train)
        return GANOutput(fake, self.discriminate(x, train=train), self.discriminate(fake, train=train))
