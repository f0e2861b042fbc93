"""Optimizers and learning-rate schedules, built from plain settings with optax."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "piecewise", "triangular")


def make_schedule(
    name: str,
    learning_rate: float,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    warmup_offset: int = 0,
    end_factor: float = 0.0,
    boundaries_epochs: Sequence[int] = (),
    decay_factor: float = 0.1,
    start_factor: float = 0.0,
) -> optax.Schedule:
    """Returns the learning rate as a function of the step.

    Args:
      name: "constant"; "cosine" (linear warmup over `warmup_steps`, then
        cosine decay to `end_factor * learning_rate` at `total_steps`);
        "piecewise" (multiply by `decay_factor` at each epoch in
        `boundaries_epochs`, as in Burda et al. 2016).
      learning_rate: peak rate (units of the optimizer's update).
      total_steps, steps_per_epoch: length of the run, in optimizer steps.
      start_factor: "triangular" (airbench's one-cycle, Jordan 2024): the rate rises
        linearly from `start_factor * learning_rate` at step 0 to the peak at
        `warmup_steps`, then falls linearly to `end_factor * learning_rate` at `total_steps`.
      warmup_offset: the warmup rate at step s (counted from 0) is
        `learning_rate * (s + warmup_offset) / (warmup_steps + warmup_offset)`:
        0 starts from a rate of 0; 1 is nanoGPT's `lr * (it + 1) / (warmup_iters + 1)`,
        whose first step already moves the weights.

    Raises:
      ValueError: unknown name or inconsistent settings.
    """
    if warmup_offset < 0:
        raise ValueError(f"warmup_offset={warmup_offset} must be 0 or more.")
    warmup_init = learning_rate * warmup_offset / (warmup_steps + warmup_offset) if warmup_steps else learning_rate
    if name == "constant":
        if warmup_steps:
            return optax.join_schedules(
                [optax.linear_schedule(warmup_init, learning_rate, warmup_steps), optax.constant_schedule(learning_rate)],
                [warmup_steps],
            )
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps={warmup_steps} must be below the run's {total_steps} steps.")
        return optax.warmup_cosine_decay_schedule(
            warmup_init,
            learning_rate,
            warmup_steps,
            total_steps,
            end_value=end_factor * learning_rate,
        )
    if name == "triangular":
        if warmup_steps >= total_steps:
            raise ValueError(f"warmup_steps={warmup_steps} must be below the run's {total_steps} steps.")
        return optax.join_schedules(
            [
                optax.linear_schedule(start_factor * learning_rate, learning_rate, warmup_steps),
                optax.linear_schedule(learning_rate, end_factor * learning_rate, total_steps - warmup_steps),
            ],
            [warmup_steps],
        )
    if name == "piecewise":
        boundaries = {int(e) * steps_per_epoch: decay_factor for e in boundaries_epochs}
        return optax.piecewise_constant_schedule(learning_rate, boundaries)
    raise ValueError(f"Unknown schedule {name!r}; choose one of {SCHEDULES}.")


def make_optimizer(
    name: str,
    schedule: optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    decay_min_ndim: int = 0,
    grad_clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """Returns an optax optimizer, optionally preceded by global-norm clipping.

    `decay_min_ndim` restricts adamw's weight decay to parameters with at least
    that many dimensions (2: weight matrices and embeddings but not biases or
    norm scales, as GPT-2 and nanoGPT do); 0 decays every parameter.

    Raises:
      ValueError: unknown name, or weight decay asked of an optimizer that
        does not take it here.
    """
    if name == "adam":
        tx = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        mask = (lambda params: jax.tree.map(lambda p: p.ndim >= decay_min_ndim, params)) if decay_min_ndim else None
        tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)
    elif name == "sgd":  # weight decay as PyTorch's SGD: weight_decay * param added to the gradient, before momentum
        tx = optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov)
        if weight_decay:
            tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    elif name == "rmsprop":
        tx = optax.rmsprop(schedule, eps=eps, momentum=momentum)
    else:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
    if weight_decay and name not in ("adamw", "sgd"):
        raise ValueError(f"optimizer.weight_decay applies to adamw and sgd only; got name={name!r}. Use optimizer=adamw.")
    if grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx
