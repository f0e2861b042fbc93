"""Training diagnostics for vanishing and exploding gradients: per-layer and per-time-step norms, dead units.

Pure functions that a task's `diagnostics` step (and `scripts/vanishing_gradients.py`)
composes; the loop compiles that step separately and calls it only every
`trainer.diagnostics_every_steps` steps, so the ordinary train step is the same
program whether diagnostics are on or off.

* `layer_grad_norms`: the L2 norm of the gradient of each module's
  parameters (kernel and bias together), keyed by the module's path in the
  parameter tree ("Dense_0", "rnn_0/cell_0/hi"). A norm that shrinks
  geometrically from the output layer towards the input is the vanishing
  gradient of Hochreiter 1991 / Bengio et al. 1994; one that grows, the
  exploding one (Glorot & Bengio 2010, "Understanding the difficulty of
  training deep feedforward neural networks", AISTATS).
* `time_step_grad_norms`: for a recurrent model, the norm of the gradient of
  the loss at the *last* position with respect to the input embedding at each
  earlier position, per distance from the end (Pascanu et al. 2013, "On the
  difficulty of training recurrent neural networks", arXiv:1211.5063, Fig. 5).
  The embedding output is perturbed with `flax.linen.intercept_methods`, so
  no model needs a special hook.
* `dead_unit_fractions`: the fraction of units of each sown activation
  ("intermediates" collection, e.g. `MLP`'s `activations`) that are exactly 0
  for every example of the global batch: dead ReLUs (Lu et al. 2019,
  arXiv:1903.06733). Saturated sigmoids are never exactly 0, so they count 0.

Every value is a float32 scalar; names are flat "diag/..." keys ready for
`MetricWriter` (JSONL and TensorBoard).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp


def layer_grad_norms(grads: Any) -> dict[str, jax.Array]:
    """L2 norm of each module's gradient: {module path: float32 scalar}.

    Args:
      grads: gradient pytree shaped like the `params` collection (nested dicts
        whose leaves are the parameters, e.g. {"Dense_0": {"kernel", "bias"}}).

    Returns:
      One norm per module (the leaves' parent path, joined with "/"), in
      parameter-tree order; a leaf at the top level is its own module.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(grads))
    squares: dict[str, list[jax.Array]] = {}
    for path, g in flat.items():
        module = "/".join(str(p) for p in path[:-1]) or str(path[-1])
        squares.setdefault(module, []).append(jnp.sum(jnp.square(g.astype(jnp.float32))))
    return {module: jnp.sqrt(sum(parts)) for module, parts in squares.items()}


def dead_unit_fractions(intermediates: Mapping[str, Any], axis_name: str | None = None) -> dict[str, jax.Array]:
    """Fraction of units exactly 0 on every example, per sown activation: {name: float32 in [0, 1]}.

    Args:
      intermediates: the "intermediates" collection of an apply with
        `mutable=["intermediates"]`; each sown value is a tuple of arrays
        [B, ..., D] (one per `sow` call). A unit is one position of the
        trailing axes (a channel at one pixel, for convolutions).
      axis_name: mapped batch axis; a unit counts as dead only when it is 0
        on every device's examples.

    Returns:
      {"<path>_<i>": fraction} for the i-th array sown under `path`, and
      "all": the fraction over all units of all of them.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates))
    out, dead_total, units_total = {}, 0.0, 0
    for path, values in flat.items():
        name = "/".join(str(p) for p in path)
        for i, h in enumerate(values):
            alive = jnp.any(h != 0, axis=0).astype(jnp.float32)  # [...] units active on some local example
            if axis_name is not None:
                alive = jax.lax.pmax(alive, axis_name)
            dead = jnp.sum(1.0 - alive)
            out[f"{name}_{i}"] = dead / alive.size
            dead_total, units_total = dead_total + dead, units_total + alive.size
    if units_total:
        out["all"] = dead_total / units_total
    return out


def time_step_grad_norms(loss_of_delta: Callable[[jax.Array], jax.Array], embedded_shape: tuple[int, ...]) -> jax.Array:
    """Norm of d loss / d embedding at each position: float32 [T], mean over the batch.

    Args:
      loss_of_delta: `f(delta) -> scalar loss` whose forward pass runs under
        `with perturb_embedding(delta):`, so that `delta` [B, T, E] is added
        to the embedding output and its gradient is the embedding's gradient.
        For the classic plot the loss is that of the last position only.
      embedded_shape: [B, T, E], the shape of the embedding output.

    Returns:
      [T]: entry t is the batch mean of ||d loss / d x_t||_2 over the E
      embedding units; T - 1 - t is the distance from the last position.
    """
    g = jax.grad(loss_of_delta)(jnp.zeros(embedded_shape, jnp.float32))  # [B, T, E]
    return jnp.sqrt(jnp.sum(jnp.square(g), axis=-1)).mean(axis=0)  # [T]


def perturb_embedding(delta: jax.Array):
    """Context manager: the first `nn.Embed` call inside it whose output is shaped like `delta` [B, T, E]
    returns `embedding + delta` (the token embedding; a position embedding [T, E] is left alone)."""
    done = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if (
            not done
            and isinstance(context.module, nn.Embed)
            and context.method_name == "__call__"
            and out.shape == delta.shape
        ):
            done.append(True)
            out = out + delta.astype(out.dtype)
        return out

    return nn.intercept_methods(interceptor)


def embedding_shape(params: Any, tokens_shape: tuple[int, ...]) -> tuple[int, ...]:
    """[B, T, E]: the shape of the token embedding of `tokens_shape` [B, T], E read from the first
    "embedding" parameter [V, E] of `params`.

    Raises:
      ValueError: the model has no embedding table.
    """
    for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items():
        if path[-1] == "embedding":
            return (*tokens_shape, leaf.shape[-1])
    raise ValueError("Per-time-step gradient norms need a model with an nn.Embed token embedding.")


def summarize(
    grads: Any,
    intermediates: Mapping[str, Any] | None = None,
    *,
    time_norms: jax.Array | None = None,
    distances: tuple[int, ...] = (),
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    """Flat "diag/..." metrics: per-layer gradient norms, dead-unit fractions, per-distance norms.

    Args:
      grads: the step's (already averaged) gradient pytree.
      intermediates: sown activations, or None to skip dead units.
      time_norms: float32 [T] from `time_step_grad_norms`, or None.
      distances: distances from the last position to report from `time_norms`
        (those >= T are skipped); empty: every distance.
      axis_name: mapped batch axis (for the dead-unit reduction).

    Returns:
      {"diag/grad_norm/<module>", "diag/dead/<activation>", "diag/dead/all",
       "diag/time_grad_norm/d<k>"}: float32 scalars.
    """
    out = {f"diag/grad_norm/{k}": v for k, v in layer_grad_norms(grads).items()}
    if intermediates:
        out.update({f"diag/dead/{k}": v for k, v in dead_unit_fractions(intermediates, axis_name).items()})
    if time_norms is not None:
        length = time_norms.shape[0]
        for d in distances or range(length):
            if d < length:
                out[f"diag/time_grad_norm/d{d}"] = time_norms[length - 1 - d]
    return out
