"""airbench94: the small CIFAR-10 network of "94% on CIFAR-10 in 3.29 seconds on a single GPU".

Keller Jordan 2024, arXiv:2404.00498; ported from `legacy/airbench94.py` of
github.com/KellerJordan/cifar10-airbench (94.01% mean test accuracy over 1000
runs on canonical CIFAR-10, with its training recipe in
`jaxdl.tasks.airbench`).

Network (the script's `make_net`):
  whitening conv 2x2 "VALID" with bias, 2 * C * 2 * 2 = 24 filters fixed to the
  eigenvectors of the training patches' covariance (`whitening_kernel`; the task
  freezes them) -> GELU -> 3 x ConvGroup(64, 256, 256) -> 3x3 max-pool ->
  flatten -> linear without bias -> x 1/9.
  ConvGroup: conv 3x3 -> 2x2 max-pool -> BatchNorm -> GELU -> conv 3x3 ->
  BatchNorm -> GELU. Convolutions have no bias; each starts as PyTorch's
  default init (uniform, bound 1/sqrt(fan_in)) with its first C_in filters set
  to the identity (`torch.nn.init.dirac_`).
  BatchNorm: eps 1e-12, running averages kept as 0.6 * old + 0.4 * batch, a
  trained bias and a scale frozen at 1 (so it is left out: `use_scale=False`).

Deviations from the script: float32 throughout (the script runs the network
in float16 with float32 BatchNorm); the running variance averages the biased
batch variance (PyTorch the unbiased one; the factor n / (n - 1) is at most
1 + 1/(9 * 1024) here); exact (erf) GELU as PyTorch's default.

Shapes:
  B batch, H W C image (32, 32, 3), K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.layers import batch_norm
from jaxdl.errors import require_positive

Dtype = Any

#: PyTorch's default Conv2d/Linear weight init: uniform with bound 1/sqrt(fan_in).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dirac_init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    """PyTorch's default conv init with the first min(C_in, C_out) filters set to the identity.

    Args:
      shape: kernel shape [kh, kw, C_in, C_out] (flax layout).

    Returns:
      the kernel; filter i < min(C_in, C_out) is 1 at the centre tap of input channel i, 0 elsewhere.
    """
    kernel = torch_default_init(key, shape, dtype)
    kh, kw, c_in, c_out = shape
    n = min(c_in, c_out)
    identity = jnp.zeros((kh, kw, c_in, n), dtype).at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1.0)
    return kernel.at[..., :n].set(identity)


def whitening_kernel(images: np.ndarray, kernel_size: int = 2, eps: float = 5e-4) -> np.ndarray:
    """The whitening conv's filters from the covariance of every `kernel_size`^2 patch of `images`.

    The script's `init_whitening_conv`: the (uncentred) patch covariance
    P^T P / n is eigendecomposed; each eigenvector, scaled by 1/sqrt(eigenvalue + eps),
    becomes a filter, in order of decreasing eigenvalue, followed by the same
    filters negated (so GELU passes both signs).

    Args:
      images: [N, H, W, C] float, normalised as the network sees them (the
        script uses the first 5000 training images, not augmented).
      kernel_size: k, patch side in pixels.
      eps: added to the eigenvalues (units of the normalised pixel variance).

    Returns:
      float32 kernel [k, k, C, 2 * C * k * k] (flax layout; PyTorch's filter
      index o, channel c, tap (y, x) is kernel[y, x, c, o]).
    """
    n, h, w, c = images.shape
    k = kernel_size
    cov = np.zeros((c * k * k, c * k * k), np.float64)
    count = 0
    for start in range(0, n, 500):
        chunk = np.asarray(images[start : start + 500], np.float64)
        # [b, H-k+1, W-k+1, k, k, C] -> PyTorch's (C, ky, kx) order of a flattened patch
        windows = np.lib.stride_tricks.sliding_window_view(chunk, (k, k), axis=(1, 2))  # [b, H', W', C, k, k]
        patches = windows.reshape(-1, c * k * k)
        cov += patches.T @ patches
        count += patches.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(cov / count)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order].T / np.sqrt(eigenvalues[order] + eps)[:, None]  # [C k k, C k k] rows = filters
    filters = np.concatenate([filters, -filters]).reshape(-1, c, k, k)  # [O, C, ky, kx]
    return filters.transpose(2, 3, 1, 0).astype(np.float32)  # [ky, kx, C, O]


def max_pool(x: jax.Array, size: int) -> jax.Array:
    """Non-overlapping size x size max-pool of [B, H, W, C] in PyTorch's floor mode -> [B, H // size, W // size, C].

    Written as a reshape and a max reduction: the same values as `nn.max_pool`, with a gradient that XLA's CPU
    backend computes about 2x faster than select-and-scatter (exact ties share the gradient).
    """
    b, h, w, c = x.shape
    x = x[:, : h // size * size, : w // size * size]  # floor mode drops the last rows/columns
    return x.reshape(b, h // size, size, w // size, size, c).max(axis=(2, 4))


class ConvGroup(nn.Module):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU: [B, H, W, C_in] -> [B, H // 2, W // 2, width]."""

    width: int
    batch_norm_momentum: float = 0.6
    batch_norm_eps: float = 1e-12
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def norm(name: str) -> nn.BatchNorm:
            return batch_norm(
                train=train,
                momentum=self.batch_norm_momentum,
                axis_name=self.axis_name,
                epsilon=self.batch_norm_eps,
                use_scale=False,  # frozen at 1 in the script
                use_fast_variance=False,
                name=name,
                **common,
            )

        x = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, kernel_init=dirac_init, name="conv1", **common)(x)
        x = max_pool(x, 2)  # [B, H // 2, W // 2, width]
        x = nn.gelu(norm("norm1")(x), approximate=False)
        x = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, kernel_init=dirac_init, name="conv2", **common)(x)
        return nn.gelu(norm("norm2")(x), approximate=False)


class Airbench94(nn.Module):
    """The airbench94 network: images [B, 32, 32, 3] (normalised) -> logits [B, K].

    Attributes:
      widths: output channels of the three ConvGroups.
      whiten_kernel_size: side of the whitening filters, pixels.
      batch_norm_momentum: running-average decay (PyTorch momentum 1 - this).
      batch_norm_eps: added to the batch variance.
      scaling_factor: multiplies the head's output (the script's `Mul(1/9)`).
      num_outputs: K.
      axis_name: mapped axis for batch statistics (None: local batch); set by tasks.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.

    Parameter names the task relies on: `whiten/kernel` (frozen), `whiten/bias`
    (trained for the first epochs), `*/norm*/bias` (BatchNorm biases, larger
    learning rate), the rest (conv kernels, `head/kernel`).
    """

    widths: Sequence[int] = (64, 256, 256)
    whiten_kernel_size: int = 2
    batch_norm_momentum: float = 0.6
    batch_norm_eps: float = 1e-12
    scaling_factor: float = 1.0 / 9.0
    num_outputs: int = 10
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        require_positive("model", widths=self.widths, num_outputs=self.num_outputs)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        """Maps normalised images [B, H, W, C] to logits [B, K] (float32); `train` uses batch statistics.

        `example_keys` is unused (no dropout); kept for the model contract.
        """
        del example_keys
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        k = self.whiten_kernel_size
        h = nn.Conv(
            2 * c * k * k, (k, k), padding="VALID", use_bias=True, kernel_init=torch_default_init, name="whiten", **common
        )(x.astype(self.dtype))  # [B, H - k + 1, W - k + 1, 2 C k k]
        h = nn.gelu(h, approximate=False)
        for i, width in enumerate(self.widths):
            h = ConvGroup(
                width, self.batch_norm_momentum, self.batch_norm_eps, self.axis_name, name=f"block{i + 1}", **common
            )(h, train=train)  # H, W halve (floor)
        h = max_pool(h, 3)  # [B, 1, 1, widths[-1]] for 32x32 inputs
        h = h.reshape(h.shape[0], -1)
        logits = nn.Dense(self.num_outputs, use_bias=False, kernel_init=torch_default_init, name="head", **common)(h)
        return (logits * self.scaling_factor).astype(jnp.float32)  # [B, K]
