"""Weighted softmax cross-entropy over a global batch: the update, the eval sums and their metrics.

Shared by the objectives that weight positions or examples (the language
model's next-token loss, the trace classifier's window loss). Losses are in
nats, means over the weighted positions of the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.training.parallel import psum
from jaxdl.training.state import TrainState


def cross_entropy_update(
    state: TrainState,
    logits_fn: Callable[..., jax.Array],
    labels: jax.Array,
    weights: jax.Array,
    axis_name: str | None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update on the weighted mean cross-entropy over the global batch.

    Each device divides its summed loss by the global weight total and the
    gradients are summed over `axis_name`, so the update is that of the
    global mean however the batch is split.

    Args:
      logits_fn: params -> float logits [..., K].
      labels: int [...] class (or next-token) ids.
      weights: float [...] per-position weights (0 leaves a position out).

    Returns:
      the updated state and float32 metrics: "loss" (nats), "accuracy", "grad_norm".
    """
    count = jnp.maximum(psum(weights.sum(), axis_name), 1.0)

    def loss_fn(params):
        logits = logits_fn(params)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [...] nats
        return jnp.sum(nll * weights) / count, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = psum(grads, axis_name)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    metrics = {
        "loss": psum(loss, axis_name),
        "accuracy": psum(jnp.sum(correct * weights), axis_name) / count,
        "grad_norm": optax.tree.norm(grads),
    }
    return state.apply_gradients(grads=grads), metrics


def cross_entropy_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    """Eval sums over the weighted positions: `nll_sum` (nats), `correct_sum` and `count` (float32 scalars).

    Args:
      logits: float [..., K]; labels: int [...]; weights: float [...] (0 leaves a position out).
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"nll_sum": jnp.sum(nll * weights), "correct_sum": jnp.sum(correct * weights), "count": weights.sum()}


def cross_entropy_metrics(totals: Mapping[str, np.ndarray]) -> dict[str, float]:
    """`loss` (nats per position), `bpc` (bits per position), `perplexity` and `accuracy` of summed
    `cross_entropy_sums`.

    Raises:
      ValueError: no position was counted (e.g. no held-out normal trace in a truncated eval split).
    """
    count = float(totals["count"])
    if count == 0:
        raise ValueError("The eval split has no counted positions (no held-out normal windows?); raise data.eval_limit.")
    loss = float(totals["nll_sum"]) / count
    return {"loss": loss, "bpc": loss / math.log(2.0), "perplexity": math.exp(min(loss, 700.0)),
            "accuracy": float(totals["correct_sum"]) / count}
