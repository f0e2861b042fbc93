"""Optimizers and learning-rate schedules, built from plain settings with optax."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

from jaxdl.errors import SettingsError
from jaxdl.settings import check_keys, of_callable

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
    raise SettingsError(f"Unknown schedule {name!r}; choose one of {SCHEDULES}.")


def adam(schedule: optax.Schedule, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam (Kingma & Ba 2015, arXiv:1412.6980); b1, b2: decay rates of the moment averages; eps: added to sqrt(v)."""
    return optax.adam(schedule, b1=b1, b2=b2, eps=eps)


def adamw(
    schedule: optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    decay_min_ndim: int = 0,
) -> optax.GradientTransformation:
    """AdamW, decoupled weight decay (Loshchilov & Hutter 2019, arXiv:1711.05101).

    Args:
      weight_decay: per step, relative to the learning rate (the update adds
        -lr * weight_decay * param).
      decay_min_ndim: decay only parameters with at least this many axes (2:
        weight matrices and embeddings but not biases or norm scales, as
        GPT-2 and nanoGPT do); 0 decays every parameter.
    """
    mask = (lambda params: jax.tree.map(lambda p: p.ndim >= decay_min_ndim, params)) if decay_min_ndim else None
    return optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=mask)


def sgd(
    schedule: optax.Schedule, *, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """SGD with heavy-ball or Nesterov momentum (0: none).

    `weight_decay` is PyTorch's coupled decay: weight_decay * param is added to
    the gradient before momentum.
    """
    tx = optax.sgd(schedule, momentum=momentum or None, nesterov=nesterov)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx


def rmsprop(
    schedule: optax.Schedule, *, decay: float = 0.9, eps: float = 1e-8, momentum: float = 0.0
) -> optax.GradientTransformation:
    """RMSProp (Tieleman & Hinton 2012); decay: of the squared-gradient average."""
    return optax.rmsprop(schedule, decay=decay, eps=eps, momentum=momentum or None)


#: Optimizer name -> builder; each builder's keyword parameters are that optimizer's settings.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": adam,
    "adamw": adamw,
    "sgd": sgd,
    "rmsprop": rmsprop,
}
#: Default peak learning rate of each optimizer (the `learning_rate` setting).
DEFAULT_LEARNING_RATES = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.1, "rmsprop": 1e-3}


def make_optimizer(
    name: str, schedule: optax.Schedule, *, grad_clip_norm: float | None = None, **settings: Any
) -> optax.GradientTransformation:
    """Returns the optax optimizer `OPTIMIZERS[name](schedule, **settings)`, optionally after global-norm clipping.

    Args:
      name: "adam", "adamw", "sgd" or "rmsprop".
      schedule: the learning rate as a function of the step (`make_schedule`).
      grad_clip_norm: clip the global gradient norm to this first (None: no clipping).
      **settings: that optimizer's own settings (see its builder).

    Raises:
      SettingsError (a ValueError): unknown name, or a setting that optimizer
        does not have (e.g. weight decay asked of adam: use adamw or sgd).
    """
    if name not in OPTIMIZERS:
        raise SettingsError(f"Unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}.")
    if "weight_decay" in settings and "weight_decay" not in inspect.signature(OPTIMIZERS[name]).parameters:
        raise SettingsError(f"optimizer.weight_decay applies to adamw and sgd only; got name={name!r}. Use optimizer=adamw.")
    check_keys(f"optimizer {name}", settings, of_callable(OPTIMIZERS[name], skip=("schedule",)))
    tx = OPTIMIZERS[name](schedule, **settings)
    if grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx
