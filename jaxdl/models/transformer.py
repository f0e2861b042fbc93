"""Decoder-only Transformer language model (GPT-2 style, pre-LayerNorm) with a key/value cache.

Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762); the
pre-LayerNorm decoder-only layout, GELU MLP, learned positions and tied
input/output embeddings of GPT-2 (Radford et al. 2019), as in Karpathy's
nanoGPT `model.py`, whose initialisation this follows: every weight
~ N(0, 0.02), residual output projections ~ N(0, 0.02 / sqrt(2 * num_layers)),
biases 0, LayerNorm eps 1e-5, exact (erf) GELU.

Attention goes through `jax.nn.dot_product_attention`, which picks a fused
kernel where the backend has one (cuDNN flash attention on GPU for bf16). When
training with `dropout_rate > 0` attention is written out instead, so that
dropout can act on the attention probabilities as in nanoGPT. Dropout follows
the model contract (`jaxdl.models.contract`): one stream per example
(`example_keys`), each layer's mask folded from its module path. The dense
layers take their products through `jaxdl.models.layers.dense_dot_general`
(the values of `lax.dot_general`; a weight gradient that XLA's CPU backend
computes without a transposed copy of the widening layers' output gradient).

`decode=True` turns on Flax's autoregressive cache (collection "cache"): init
the model on a [B, max_len] array to size the cache, then call it on chunks of
new tokens (a prompt, then one token at a time); each call attends to every
token cached so far. The caller keeps the total below `max_len`.

Shapes:
  B batch, T tokens in this call, S = max_len cached positions, V vocab_size,
  D embed_dim, N num_heads, H = D / N head width.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import require_positive
from jaxdl.models.layers import Dropout, dense_dot_general, drop, site_id, site_keys

Dtype = Any

_INIT_STD = 0.02  # GPT-2 / nanoGPT weight init


def _normal(std: float) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=std)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: x [B, T, D] -> [B, T, D].

    Attributes:
      num_heads: N; D must be divisible by N.
      dropout_rate: on attention probabilities and on the output (training only).
      use_bias: biases in the projections.
      decode: read and extend the key/value cache (see the module docstring).
      out_std: init std of the output projection.
    """

    num_heads: int
    dropout_rate: float = 0.0
    use_bias: bool = False
    decode: bool = False
    out_std: float = _INIT_STD
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        batch, length, width = x.shape
        if width % self.num_heads:
            raise ValueError(f"embed_dim={width} is not divisible by num_heads={self.num_heads}.")
        head = width // self.num_heads
        qkv = nn.DenseGeneral(
            (3, self.num_heads, head), use_bias=self.use_bias, kernel_init=_normal(_INIT_STD),
            dtype=self.dtype, param_dtype=self.param_dtype, dot_general=dense_dot_general, name="qkv",
        )(x)  # [B, T, 3, N, H]
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, T, N, H] each

        mask, causal = None, True
        if self.decode:
            initialized = self.has_variable("cache", "key")
            cached_key = self.variable("cache", "key", jnp.zeros, k.shape, k.dtype)  # [B, S, N, H]
            cached_value = self.variable("cache", "value", jnp.zeros, v.shape, v.dtype)
            index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
            if initialized:  # not during init, which only sizes the cache
                i = index.value
                k = jax.lax.dynamic_update_slice(cached_key.value, k, (0, i, 0, 0))  # [B, S, N, H]
                v = jax.lax.dynamic_update_slice(cached_value.value, v, (0, i, 0, 0))
                cached_key.value, cached_value.value, index.value = k, v, i + length
                query_pos = i + jnp.arange(length)  # absolute positions of this call's tokens
                mask = (jnp.arange(k.shape[1])[None, :] <= query_pos[:, None])[None, None]  # [1, 1, T, S]
                causal = False

        if train and self.dropout_rate > 0.0:
            if example_keys is None:
                raise ValueError(
                    "Dropout in training needs per-example keys: call the model with example_keys=[B] keys."
                )
            keys = site_keys(example_keys, site_id(self.path))  # [B], this layer's own streams
            y = _attention_with_dropout(q, k, v, mask, self.dropout_rate, keys)
        else:
            y = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)  # [B, T, N, H]
        y = nn.DenseGeneral(
            width, axis=(-2, -1), use_bias=self.use_bias, kernel_init=_normal(self.out_std),
            dtype=self.dtype, param_dtype=self.param_dtype, dot_general=dense_dot_general, name="out",
        )(y)  # [B, T, D]
        return Dropout(self.dropout_rate)(y, example_keys, deterministic=not train)


def _attention_with_dropout(q, k, v, mask, rate: float, keys: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(H)) with causal/cache mask and dropout on the probabilities (example b's mask
    from keys[b]), times v."""
    scores = jnp.einsum("btnh,bsnh->bnts", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])  # [B, N, T, S]
    if mask is None:
        mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))[None, None]
    probs = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
    probs = drop(keys, probs, rate).astype(v.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs, v)


class MLP(nn.Module):
    """x [B, T, D] -> Dense(mlp_ratio * D) -> GELU -> Dense(D) -> dropout."""

    mlp_ratio: int = 4
    dropout_rate: float = 0.0
    use_bias: bool = False
    out_std: float = _INIT_STD
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        common = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                      dot_general=dense_dot_general)
        h = nn.Dense(self.mlp_ratio * width, kernel_init=_normal(_INIT_STD), name="fc", **common)(x)  # [B, T, 4D]
        h = nn.gelu(h, approximate=False)
        h = nn.Dense(width, kernel_init=_normal(self.out_std), name="proj", **common)(h)  # [B, T, D]
        return Dropout(self.dropout_rate)(h, example_keys, deterministic=not train)


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    num_heads: int
    mlp_ratio: int = 4
    dropout_rate: float = 0.0
    use_bias: bool = False
    decode: bool = False
    out_std: float = _INIT_STD
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        common = dict(dropout_rate=self.dropout_rate, use_bias=self.use_bias, out_std=self.out_std,
                      dtype=self.dtype, param_dtype=self.param_dtype)
        norm = dict(epsilon=1e-5, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        x = x + CausalSelfAttention(self.num_heads, decode=self.decode, name="attn", **common)(
            nn.LayerNorm(name="ln_1", **norm)(x), train=train, example_keys=example_keys
        )
        h = nn.LayerNorm(name="ln_2", **norm)(x)
        return x + MLP(self.mlp_ratio, name="mlp", **common)(h, train=train, example_keys=example_keys)


class Transformer(nn.Module):
    """GPT-style causal language model over token ids.

    Attributes:
      vocab_size: V.
      max_len: the longest sequence (positions embedded; the cache size), tokens.
      num_layers, num_heads, embed_dim: depth, N and D.
      mlp_ratio: MLP width / D.
      dropout_rate: on embeddings, attention probabilities and residual branches (training only).
      use_bias: biases in Dense and LayerNorm layers (nanoGPT's `bias`).
      decode: autoregressive mode with a key/value cache (set by `cached`, never a setting).
      axis_name: unused (no batch norm); the model contract's collective axis.
      dtype: compute dtype (e.g. bfloat16 on GPU/TPU); param_dtype: storage dtype.
    """

    vocab_size: int = 65
    max_len: int = 256
    num_layers: int = 6
    num_heads: int = 6
    embed_dim: int = 384
    mlp_ratio: int = 4
    dropout_rate: float = 0.2
    use_bias: bool = False
    decode: bool = False
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def context_length(self) -> int:
        """The longest window the model reads, tokens (`max_len`)."""
        return self.max_len

    def cached(self) -> Transformer:
        """This model with its key/value cache on (see the module docstring and `jaxdl.sampling`)."""
        return self.clone(decode=True)

    def __post_init__(self):
        require_positive(
            "model", vocab_size=self.vocab_size, max_len=self.max_len, num_layers=self.num_layers,
            num_heads=self.num_heads, embed_dim=self.embed_dim,
        )
        super().__post_init__()

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        """Next-token logits.

        Args:
          tokens: int [B, T] token ids in [0, V); T <= max_len (in decode mode:
            tokens cached so far + T <= max_len, which is not checked under jit).
          train: apply dropout; eval is deterministic.
          example_keys: typed key array [B], each example's dropout stream
            (needed only when training with dropout_rate > 0).

        Returns:
          float32 [B, T] x V logits: position t predicts token t + 1.

        Raises:
          ValueError: T > max_len.
        """
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"Sequences of {length} tokens exceed the model's max_len={self.max_len}.")
        embed = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=_normal(_INIT_STD),
                         dtype=self.dtype, param_dtype=self.param_dtype, name="wte")
        positions = jnp.arange(length)
        if self.decode:
            initialized = self.has_variable("cache", "position")
            offset = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
            if initialized:
                positions = positions + offset.value
                offset.value = offset.value + length
        pos_embed = nn.Embed(self.max_len, self.embed_dim, embedding_init=_normal(_INIT_STD),
                             dtype=self.dtype, param_dtype=self.param_dtype, name="wpe")
        x = embed(tokens) + pos_embed(positions)[None]  # [B, T, D]
        x = Dropout(self.dropout_rate)(x, example_keys, deterministic=not train)
        out_std = _INIT_STD / math.sqrt(2 * self.num_layers)
        for i in range(self.num_layers):
            x = Block(self.num_heads, self.mlp_ratio, self.dropout_rate, self.use_bias, self.decode, out_std,
                      dtype=self.dtype, param_dtype=self.param_dtype, name=f"block_{i}")(
                x, train=train, example_keys=example_keys)
        x = nn.LayerNorm(epsilon=1e-5, use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="ln_f")(x)
        return embed.attend(x).astype(jnp.float32)  # [B, T, V], tied with the input embedding
