"""Implementations tried to close a speed gap and measured by `scripts.benchmark --variants`, kept out of the library.

Each variant is a context manager that swaps one building block of a jaxdl
model for the attempted one while a step is traced, so the benchmark times the
real task step with only that block changed. tests/test_benchmark.py checks
that the LSTM and convolution variants compute what the library's blocks
compute (same parameters, outputs and gradients to float rounding), so the
timings compare like with like; `batch_dropout` draws other masks by design.

* `hoisted_lstm`: the LSTM's input projection x_t W_i for every t as one
  [B*T, E] x [E, 4D] product before the time loop (RNNLM uses nn.RNN over
  nn.OptimizedLSTMCell, which does it step by step).
* `batch_dropout`: one dropout mask per batch (as Keras and PyTorch draw it)
  instead of one random stream per example.
* `im2col_conv`: every 2-D convolution as one matrix product over image
  patches (k*k shifted slices concatenated on the channel axis), through the
  `conv_general_dilated` hook of `flax.linen.Conv`.

Shapes: B batch, T time, E input width, D hidden width; H W C image, O output channels.
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.linen.recurrent import DenseParams

from jaxdl.models.layers import Dropout, im2col_conv_general_dilated
from jaxdl.models.rnn import RNNLM

Dtype = Any


class HoistedLSTM(nn.Module):
    """One LSTM layer over a whole sequence, x [B, T, E] -> (carry (c, h) [B, D] each, outputs [B, T, D]).

    The gates of `nn.OptimizedLSTMCell` (Hochreiter & Schmidhuber 1997; no
    peepholes, forget bias 0): i, f, o = sigmoid(.), g = tanh(.) of
    x_t W_i* + h_{t-1} W_h* + b_h*; c_t = f c_{t-1} + i g; h_t = o tanh(c_t).
    The x_t W_i* terms of every step come from one matrix product before the
    `lax.scan` over time, so the loop body holds only the recurrent product.
    Parameters: ii, if, ig, io {kernel [E, D]} and hi, hf, hg, ho {kernel
    [D, D], bias [D]}, created exactly as `OptimizedLSTMCell` creates them.

    Attributes:
      features: D.
      unroll: time steps per loop iteration of the scan (speed only).
    """

    features: int
    unroll: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None):
        """Runs the layer from a zero state.

        Args:
          x: float [B, T, E] inputs.
          lengths: int32 [B] valid steps per sequence (a prefix), or None (all T).
            The returned carry is the state after each sequence's last valid
            step (as `nn.RNN(seq_lengths=...)`); outputs are given for every step.

        Returns:
          ((c, h), outputs): c, h [B, D]; outputs [B, T, D], h at every step.
        """
        d = self.features
        h_like = jnp.zeros((1, d), self.param_dtype)
        dense = dict(param_dtype=self.param_dtype, bias_init=nn.initializers.zeros_init())
        w_x = [DenseParams(d, use_bias=False, kernel_init=nn.initializers.lecun_normal(), name=f"i{g}", **dense)(x)[0]
               for g in "ifgo"]
        w_h = [DenseParams(d, use_bias=True, kernel_init=nn.initializers.orthogonal(), name=f"h{g}", **dense)(h_like)
               for g in "ifgo"]
        kernel_x = jnp.concatenate(w_x, axis=-1)  # [E, 4D]
        kernel_h = jnp.concatenate([k for k, _ in w_h], axis=-1)  # [D, 4D]
        bias_h = jnp.concatenate([b for _, b in w_h], axis=-1)  # [4D]
        x, kernel_x, kernel_h, bias_h = promote_dtype(x, kernel_x, kernel_h, bias_h, dtype=self.dtype)
        gates_x = jnp.swapaxes(jnp.dot(x, kernel_x), 0, 1)  # [T, B, 4D], time-major for the scan
        batch = x.shape[0]
        zeros = jnp.zeros((batch, d), gates_x.dtype)
        steps = jnp.arange(gates_x.shape[0], dtype=jnp.int32)

        def step(carry, inputs):
            c, h = carry
            gx, t = inputs  # [B, 4D], scalar
            y = gx + jnp.dot(h, kernel_h) + bias_h  # [B, 4D]
            i, f, g, o = jnp.split(y, 4, axis=-1)
            new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
            if lengths is not None:
                valid = (t < lengths)[:, None]  # [B, 1]
                return (jnp.where(valid, new_c, c), jnp.where(valid, new_h, h)), new_h
            return (new_c, new_h), new_h

        carry, outputs = jax.lax.scan(step, (zeros, zeros), (gates_x, steps), unroll=self.unroll)
        return carry, jnp.swapaxes(outputs, 0, 1)  # [B, T, D]


class HoistedRNNLM(RNNLM):
    """`jaxdl.models.rnn.RNNLM` with its LSTM layers run as `HoistedLSTM` (the same parameter tree)."""

    @nn.compact
    def __call__(
        self, tokens: jax.Array, *, train: bool, example_keys: jax.Array | None = None,
        token_mask: jax.Array | None = None,
    ) -> jax.Array:
        if self.cell != "lstm":
            raise ValueError("HoistedRNNLM only changes the LSTM; use RNNLM for other cells.")
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Embed(self.vocab_size, self.embed_dim, name="embed", **dense)(tokens)  # [B, T, E]
        x = Dropout(self.dropout_rate)(x, example_keys, deterministic=not train)
        lengths = None
        if self.num_classes is not None:
            mask = jnp.ones(tokens.shape, bool) if token_mask is None else token_mask.astype(bool)
            lengths = jnp.maximum(mask.sum(axis=1), 1).astype(jnp.int32)  # [B]
        carry = None
        for i in range(self.num_layers):
            carry, x = HoistedLSTM(self.hidden_dim, name=f"cell_{i}", **dense)(x, lengths)  # x: [B, T, D]
            x = Dropout(self.dropout_rate)(x, example_keys, deterministic=not train)
        if self.num_classes is not None:
            h = Dropout(self.dropout_rate)(carry[1], example_keys, deterministic=not train)
            return nn.Dense(self.num_classes, name="classifier", **dense)(h).astype(jnp.float32)  # [B, C]
        return nn.Dense(self.vocab_size, name="logits", **dense)(x).astype(jnp.float32)  # [B, T, V]


@contextlib.contextmanager
def hoisted_lstm():
    """`model=rnn`/`lstm` builds `HoistedRNNLM` while the context is open (the registry entry is swapped)."""
    from jaxdl import models

    saved = models.MODELS["rnn"]
    models.MODELS["rnn"] = HoistedRNNLM
    try:
        yield
    finally:
        models.MODELS["rnn"] = saved


class _LaxWithIm2col:
    """`jax.lax` except `conv_general_dilated` (what flax.linen.Conv calls when its hook is unset)."""

    conv_general_dilated = staticmethod(im2col_conv_general_dilated)

    def __getattr__(self, name):
        return getattr(jax.lax, name)


@contextlib.contextmanager
def im2col_conv():
    """Every `flax.linen.Conv` traced while the context is open computes through `im2col_conv_general_dilated`."""
    from flax.linen import linear

    saved = linear.lax
    linear.lax = _LaxWithIm2col()
    try:
        yield
    finally:
        linear.lax = saved


class BatchDropout(nn.Module):
    """Dropout with one mask drawn for the whole batch from the first example's stream (what Keras and
    PyTorch do); unlike `jaxdl.models.layers.Dropout` the mask then depends on how the batch is split
    over devices. Same call signature, for timing only."""

    rate: float
    site: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, keys: jax.Array | None, *, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(keys[0], keep, x.shape)  # [B, ...]
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


@contextlib.contextmanager
def batch_dropout():
    """The MLP and CNN draw one dropout mask per batch while the context is open (trace inside it)."""
    from jaxdl.models import cnn, mlp

    saved = mlp.Dropout, cnn.Dropout
    mlp.Dropout = cnn.Dropout = BatchDropout
    try:
        yield
    finally:
        mlp.Dropout, cnn.Dropout = saved
