"""Convolutional classifier: blocks of conv layers and pooling, then a dense head.

The default is the classic Keras CNN for CIFAR-10 (Chollet, "Deep Learning
with Python"; the project's reference job): Conv2D(16, 2x2, relu), MaxPool 2x2,
Conv2D(32, 2x2, relu), MaxPool 2x2, Flatten, Dense(100, relu), Dense(10)
with softmax in the loss. With `convs_per_block=2`, 3x3 "SAME" convolutions,
batch norm and dropout the same module is a VGG-style network (Simonyan &
Zisserman 2015, arXiv:1409.1556). `pool_first` moves each block's pooling
right after its first convolution, as airbench does (Jordan 2024,
arXiv:2404.00498): the block's later convolutions then run on a quarter of the
pixels, which makes the network about half as costly at the same widths.

Dropout masks come from one PRNG stream per example (`example_keys`), so a
step is the same on 1 device or on N; batch norm averages statistics over
`axis_name` when a task sets it.

Shapes:
  B batch, H W C image, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import require_positive
from jaxdl.models.layers import Dropout, activation_fn, batch_norm, im2col_conv_general_dilated

Dtype = Any


class CNN(nn.Module):
    """[(Conv -> (BatchNorm) -> act) x convs_per_block -> pool -> (Dropout)] per entry of `channels`,
    then [Dense -> act -> (Dropout)] per entry of `dense_dims`, then Dense(num_outputs).

    Attributes:
      channels: output channels of each block's convolutions.
      convs_per_block: convolutions per block.
      kernel_size: square kernel width, pixels.
      padding: "VALID" (Keras's default) or "SAME".
      conv_lowering: "xla" (XLA's convolution) or "im2col" (each convolution as one
        matrix product over image patches, `layers.im2col_conv_general_dilated`;
        same values up to summation order, faster for some shapes on CPU; see
        benchmarks/RESULTS.md).
      pool: "max", "avg" or "none" after each block; pool_size: its window and stride, pixels.
      pool_first: pool right after each block's first convolution (before its batch norm)
        instead of at the block's end (airbench's ConvGroup order).
      batch_norm: normalise every convolution's output (the convolution then has no bias).
      batch_norm_momentum: running-average decay of the batch statistics.
      conv_dropout_rate: dropout after each block; dropout_rate: after each hidden dense layer.
      dense_dims: hidden dense widths of the head.
      num_outputs: K.
      activation: nonlinearity name.
      axis_name: mapped axis for batch statistics (None: local batch); set by tasks.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    channels: Sequence[int] = (16, 32)
    convs_per_block: int = 1
    kernel_size: int = 2
    padding: str = "VALID"
    conv_lowering: str = "xla"
    pool: str = "max"
    pool_size: int = 2
    pool_first: bool = False
    batch_norm: bool = False
    batch_norm_momentum: float = 0.9
    conv_dropout_rate: float = 0.0
    dropout_rate: float = 0.0
    dense_dims: Sequence[int] = (100,)
    num_outputs: int = 10
    activation: str = "relu"
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        require_positive("model", channels=self.channels, dense_dims=self.dense_dims, num_outputs=self.num_outputs)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        """Maps images to class logits.

        Args:
          x: [B, H, W, C] float images (NHWC).
          train: batch statistics and dropout on; evaluation is deterministic.
          example_keys: typed key array [B], each example's dropout stream
            (needed only when training with dropout).

        Returns:
          [B, K] float32 logits.

        Raises:
          ValueError: an unknown pooling name, or an image too small for the blocks.
        """
        if self.pool not in ("max", "avg", "none"):
            raise ValueError(f"model.pool={self.pool!r}; choose max, avg or none.")
        act = activation_fn(self.activation)
        if self.conv_lowering not in ("xla", "im2col"):
            raise ValueError(f"model.conv_lowering={self.conv_lowering!r}; choose xla or im2col.")
        lowering = im2col_conv_general_dilated if self.conv_lowering == "im2col" else None
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x.astype(self.dtype)
        layer = 0
        for width in self.channels:
            for conv in range(self.convs_per_block):
                h = nn.Conv(width, (self.kernel_size,) * 2, padding=self.padding, use_bias=not self.batch_norm,
                            conv_general_dilated=lowering, **common)(h)
                if self.pool_first and conv == 0:
                    h = self._pool(h)
                if self.batch_norm:
                    h = batch_norm(train=train, momentum=self.batch_norm_momentum, axis_name=self.axis_name, **common)(h)
                h = act(h)
            if not self.pool_first:
                h = self._pool(h)
            if self.conv_dropout_rate > 0.0:  # sites numbered by block and dense layer
                h = Dropout(self.conv_dropout_rate, site=layer)(h, example_keys, deterministic=not train)
            layer += 1
        h = h.reshape(h.shape[0], -1)  # [B, H' * W' * C']
        for width in self.dense_dims:
            h = act(nn.Dense(width, **common)(h))
            if self.dropout_rate > 0.0:
                h = Dropout(self.dropout_rate, site=layer)(h, example_keys, deterministic=not train)
            layer += 1
        return nn.Dense(self.num_outputs, name="output", **common)(h).astype(jnp.float32)  # [B, K]

    def _pool(self, h: jax.Array) -> jax.Array:
        """The block's pooling (none, max or average); H and W shrink by `pool_size`."""
        if self.pool == "none":
            return h
        if min(h.shape[1:3]) < self.pool_size:
            raise ValueError(f"Feature map {h.shape[1:3]} is smaller than the {self.pool_size}-pixel pool; use fewer blocks.")
        p = self.pool_size
        b, height, width, c = h.shape
        # Non-overlapping VALID pooling ignores the last H % p rows and W % p columns, so crop them and pool as a
        # reduction over [B, H/p, p, W/p, p, C]: the same values as nn.max_pool / nn.avg_pool, and on XLA's CPU
        # backend a max's gradient about 2x cheaper than select-and-scatter (ties share the gradient instead of
        # going to the first; after a ReLU the common tie, all zeros, has zero gradient either way).
        h = h[:, : height - height % p, : width - width % p]
        h = h.reshape(b, height // p, p, width // p, p, c)
        return h.max(axis=(2, 4)) if self.pool == "max" else h.mean(axis=(2, 4))  # [B, H // p, W // p, C]
