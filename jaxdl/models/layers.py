"""Small building blocks shared by several models: nonlinearities by name, per-example dropout,
batch norm synchronised over devices, convolutions as matrix products.

Dropout draws its mask from one PRNG stream per example (`example_keys`, see
`jaxdl.training.parallel.example_keys`), so a step drops the same units
whether the batch sits on one device or is split over eight.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

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


def site_id(path: Sequence[str]) -> int:
    """The uint32 number a dropout layer folds into each example's key when it names none itself.

    The first four bytes (big-endian) of the SHA-1 of the layer's module path
    followed by the integer 1: the number flax's `make_rng` folds into a
    module's first draw, so a layer at the path of an `nn.Dropout` draws the
    masks that `nn.Dropout` drew when the model was applied to one example at
    a time with that example's key as its "dropout" rng.
    """
    digest = hashlib.sha1()
    for part in path:
        digest.update(part.encode("utf-8"))
    digest.update((1).to_bytes(1, "big"))
    return int.from_bytes(digest.digest()[:4], "big")


def site_keys(example_keys: jax.Array, site: int) -> jax.Array:
    """Folds a dropout site's number into each example's key: typed keys [B] -> [B]."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(example_keys, jnp.uint32(site))


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from one PRNG stream per example.

    Every jaxdl model drops units with this layer (see `jaxdl.models.contract`):
    example b's mask is drawn from `fold_in(example_keys[b], site)`, so a step
    drops the same units whether the batch sits on one device or is split
    over eight, and whatever the batch's order.

    Attributes:
      rate: probability of zeroing a unit, in [0, 1).
      site: the number folded into each example's key; None: `site_id` of the
        layer's module path.
    """

    rate: float
    site: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, example_keys: jax.Array | None, *, deterministic: bool) -> jax.Array:
        """x [B, ...] -> x with units zeroed with probability `rate` and the rest scaled by 1 / (1 - rate).

        Args:
          x: activations [B, ...].
          example_keys: typed key array [B], one stream per example (unused when deterministic).
          deterministic: identity when True (evaluation).

        Raises:
          ValueError: training with dropout and no keys.
        """
        if deterministic or self.rate == 0.0:
            return x
        if example_keys is None:
            raise ValueError("Dropout in training needs per-example keys: call the model with example_keys=[B] keys.")
        keys = site_keys(example_keys, site_id(self.path) if self.site is None else self.site)
        return drop(keys, x, self.rate)


def drop(keys: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Zeroes each unit of x [B, ...] with probability `rate` (row b's mask from keys[b]), scales the rest by
    1 / (1 - rate)."""
    keep = 1.0 - rate
    mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, x.shape[1:]))(keys)  # [B, ...]
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def batch_norm(*, train: bool, momentum: float, axis_name: str | None, **kwargs: Any) -> nn.BatchNorm:
    """`flax.linen.BatchNorm` as every jaxdl model uses it (create it inside a compact method).

    Training normalises with the statistics of the global batch, averaged over
    the mapped axis `axis_name` (None: the local batch), and updates the
    running averages with decay `momentum`; evaluation uses the running
    averages. Other keyword arguments (epsilon, use_scale, dtype, name, ...)
    go to `nn.BatchNorm`.
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=momentum, axis_name=axis_name if train else None, **kwargs
    )


def im2col_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                                dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` for NHWC x HWIO as one matrix product over image patches (im2col).

    lhs [B, H, W, C], rhs [kh, kw, C, O] -> [B, H', W', O], same dtype. The
    kh * kw shifted (strided) slices of the padded input are concatenated on
    the channel axis and multiplied by the kernel reshaped to [kh * kw * C, O]:
    the same values as XLA's convolution up to summation order, and gradients
    through slices and one dot. Anything else (dilation, groups, other
    layouts) goes to `lax.conv_general_dilated`. Use it as `flax.linen.Conv`'s
    `conv_general_dilated` (see `CNN.conv_lowering`).
    """
    plain = (feature_group_count == 1 and not any(d != 1 for d in (lhs_dilation or ())) and
             not any(d != 1 for d in (rhs_dilation or ())) and lhs.ndim == 4)
    if plain and dimension_numbers is not None:
        dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        plain = dn == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)
    kh, kw, c, o = rhs.shape
    sh, sw = window_strides
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    h_out = (x.shape[1] - kh) // sh + 1
    w_out = (x.shape[2] - kw) // sw + 1
    taps = [x[:, i : i + sh * (h_out - 1) + 1 : sh, j : j + sw * (w_out - 1) + 1 : sw, :] for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(taps, axis=-1)  # [B, H', W', kh * kw * C], (i, j, c) order as rhs's reshape
    return jnp.dot(patches, rhs.reshape(kh * kw * c, o), precision=precision)  # [B, H', W', O]


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` for dense layers, with a weight gradient that XLA's CPU backend computes without
    transposing the wider activation.

    lhs [..., *in_dims] x rhs [*in_dims, *out_dims] -> [..., *out_dims] (the
    contraction `flax.linen.Dense` and `DenseGeneral` ask for: lhs's trailing
    axes with rhs's leading ones, no batch axes), same dtype. Forward values
    are `lax.dot_general`'s. The gradient of the kernel is a product over all
    positions of the inputs and the output gradient. Written as autodiff writes
    it, d_rhs = lhs^T d_out, XLA's CPU backend makes a transposed copy of d_out,
    fused with whatever produced it (a GELU's derivative in a Transformer MLP):
    a strided write that took 4 ms of a 69 ms step for each [768, 512] MLP
    input on a 2-core CPU. When the layer widens (out > in), this computes
    (d_out^T lhs)^T instead, so that the narrower lhs is the copied operand;
    the same sums of products. Narrowing layers, and any other
    contraction, go to `lax.dot_general` unchanged. Use it as the
    `dot_general` of `flax.linen.Dense` / `DenseGeneral`. The widening case is
    a `jax.custom_vjp`: reverse mode (`jax.grad`, `jax.vjp`) goes through it,
    forward mode (`jax.jvp`, `jax.jacfwd`) does not.
    """
    (lhs_contract, rhs_contract), batch = dimension_numbers
    n = len(lhs_contract)
    dense = (
        not any(batch)
        and preferred_element_type is None
        and tuple(lhs_contract) == tuple(range(lhs.ndim - n, lhs.ndim))
        and tuple(rhs_contract) == tuple(range(n))
    )
    if not dense or math.prod(rhs.shape[n:]) <= math.prod(rhs.shape[:n]):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    return _widening_dense(lhs, rhs, n, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _widening_dense(lhs, rhs, n, precision):
    dims = ((tuple(range(lhs.ndim - n, lhs.ndim)), tuple(range(n))), ((), ()))
    return jax.lax.dot_general(lhs, rhs, dims, precision=precision)


def _widening_dense_fwd(lhs, rhs, n, precision):
    return _widening_dense(lhs, rhs, n, precision), (lhs, rhs)


def _widening_dense_bwd(n, precision, residuals, d_out):
    lhs, rhs = residuals
    size_in = math.prod(rhs.shape[:n])
    x, w = lhs.reshape(-1, size_in), rhs.reshape(size_in, -1)  # [M, in], [in, out]
    g = d_out.reshape(x.shape[0], w.shape[1])  # [M, out]
    d_lhs = jax.lax.dot_general(g, w, (((1,), (1,)), ((), ())), precision=precision)  # [M, in]
    d_rhs_t = jax.lax.dot_general(g, x, (((0,), (0,)), ((), ())), precision=precision)  # [out, in]
    return d_lhs.reshape(lhs.shape).astype(lhs.dtype), d_rhs_t.T.reshape(rhs.shape).astype(rhs.dtype)


_widening_dense.defvjp(_widening_dense_fwd, _widening_dense_bwd)
