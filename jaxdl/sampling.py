"""Autoregressive generation from a token model: with a key/value cache or by recomputing the window.

Used by the language-model task's text samples and by `scripts.sample`.
Works with any `jaxdl.models.contract.TokenModel` (tokens int [B, T] ->
next-token logits [B, T, V]); the cached path needs a model whose `cached()`
copy decodes incrementally (the Transformer).

With the cache, the prompt is fed once and then one token per step; when the
cache is full the last context_length // 2 tokens are fed again as a fresh
context. Without it, every step recomputes the model on the last
context_length tokens (nanoGPT's `generate`). Both agree token for token
while prompt + output fit in the context; beyond it their contexts differ
(the cached one then sees between half and all of the context length). Token
t of the output (counting from the prompt's first token) is drawn with
`fold_in(key, t)` in both.

Shapes: B batch, P prompt tokens, S context length, V vocabulary.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.models.contract import TokenModel


def sample_logits(key: jax.Array, logits: jax.Array, temperature: float, top_k: int | None) -> jax.Array:
    """Draws token ids [B] from logits [B, V]: argmax when temperature == 0, else softmax(logits / temperature)
    restricted to the `top_k` largest (None: all)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate(
    model: TokenModel,
    params,
    prompt: np.ndarray,
    max_new_tokens: int,
    *,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    use_cache: bool | None = None,
) -> np.ndarray:
    """Continues `prompt` autoregressively (see the module docstring).

    Args:
      model: the token model; params: its parameters.
      prompt: int [B, P] token ids, P >= 1.
      max_new_tokens: tokens to add.
      key: typed PRNG key.
      temperature: 0 for greedy decoding.
      top_k: sample among the k most likely tokens (None: all).
      use_cache: the cached (True) or recomputing (False) path; None: cached
        when the model has a cache.

    Returns:
      int32 [B, P + max_new_tokens] numpy array, prompt first.

    Raises:
      ValueError: a malformed prompt, or the cache asked of a model without one.
    """
    prompt = np.asarray(prompt, np.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be int [B, P] with P >= 1, got shape {prompt.shape}.")
    decoder = model.cached()
    if use_cache is None:
        use_cache = decoder is not None
    sampling = (float(temperature), None if top_k is None else int(top_k))
    if not use_cache:
        return _generate_recompute(model, params, prompt, max_new_tokens, key, sampling)
    if decoder is None or decoder.context_length is None:
        raise ValueError(f"{type(model).__name__} has no key/value cache; generate with use_cache=False.")
    return _generate_cached(decoder, params, prompt, max_new_tokens, key, sampling)


def _generate_recompute(model, params, prompt: np.ndarray, max_new: int, key: jax.Array, sampling) -> np.ndarray:
    """Every step: the model on the last S tokens (a fixed [B, S] buffer), logits of the newest."""
    max_len = model.context_length or prompt.shape[1] + max_new
    batch, length = prompt.shape
    context = prompt[:, -max_len:]
    buffer = np.zeros((batch, max_len), np.int32)
    buffer[:, : context.shape[1]] = context
    tokens = _recompute_loop(model, sampling, max_new, params, jnp.asarray(buffer), context.shape[1], length, key)
    return np.concatenate([prompt, np.asarray(tokens).T], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _recompute_loop(model, sampling: tuple, steps: int, params, buffer, filled, offset, key):
    sample = functools.partial(sample_logits, temperature=sampling[0], top_k=sampling[1])

    def step(carry, t):
        buffer, filled = carry
        logits = model.apply({"params": params}, buffer, train=False)  # [B, S, V]
        last = jax.lax.dynamic_index_in_dim(logits, filled - 1, axis=1, keepdims=False)  # [B, V]
        token = sample(jax.random.fold_in(key, offset + t), last)  # [B]
        full = filled == buffer.shape[1]
        shifted = jnp.where(full, jnp.roll(buffer, -1, axis=1), buffer)
        position = jnp.where(full, buffer.shape[1] - 1, filled)
        buffer = jax.lax.dynamic_update_slice(shifted, token[:, None], (0, position))
        return (buffer, jnp.minimum(filled + 1, buffer.shape[1])), token

    _, tokens = jax.lax.scan(step, (buffer, jnp.asarray(filled, jnp.int32)), jnp.arange(steps))
    return tokens  # [steps, B]


def _generate_cached(decoder, params, prompt: np.ndarray, max_new: int, key: jax.Array, sampling) -> np.ndarray:
    """Feeds a context into a fresh cache, then one token per step; restarts from the last S // 2 tokens when full.

    Every restart runs a whole segment (S - S // 2 + 1 tokens) and the last one drops what is not asked for,
    so any length compiles at most two programs (each compiled segment stays in memory, about 20 MB on a
    CPU for a small Transformer); token j depends only on the tokens before it and `fold_in(key, j)`.
    """
    max_len = decoder.context_length
    batch = prompt.shape[0]
    sequence = prompt
    remaining, first = max_new, True
    while remaining > 0:
        context = sequence[:, -(max_len if first else max(max_len // 2, 1)) :]
        room = max_len - context.shape[1] + 1  # the last sampled token need not be fed
        steps = min(remaining, room) if first else room
        new = _cached_segment(decoder, sampling, batch, context.shape[1], steps, params, jnp.asarray(context),
                              sequence.shape[1], key)
        sequence = np.concatenate([sequence, np.asarray(new)[:remaining].T], axis=1)
        remaining -= min(steps, remaining)
        first = False
    return sequence


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _cached_segment(decoder, sampling: tuple, batch: int, context_len: int, steps: int, params, context, offset, key):
    """Prefill `context` [B, C], then sample `steps` tokens; token j uses fold_in(key, offset + j)."""
    del context_len  # static: one compiled program per context length
    sample = functools.partial(sample_logits, temperature=sampling[0], top_k=sampling[1])
    max_len = decoder.context_length
    shapes = jax.eval_shape(lambda: decoder.init(jax.random.key(0), jnp.zeros((batch, max_len), jnp.int32), train=False))
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
    logits, updated = decoder.apply({"params": params, "cache": cache}, context, train=False, mutable=["cache"])
    first = sample(jax.random.fold_in(key, offset), logits[:, -1])

    def step(carry, j):
        cache, token = carry
        logits, updated = decoder.apply({"params": params, "cache": cache}, token[:, None], train=False,
                                        mutable=["cache"])
        nxt = sample(jax.random.fold_in(key, offset + j), logits[:, -1])
        return (updated["cache"], nxt), nxt

    _, rest = jax.lax.scan(step, (updated["cache"], first), jnp.arange(1, steps))
    return jnp.concatenate([first[None], rest], axis=0)  # [steps, B]
