"""Applying a supervised model (inputs [B, ...] -> outputs [B, ...]) as the model contract has it.

Shared by the classification, airbench and regression tasks and the FID
evaluator: inputs scaled to float, variables initialised, and the model
applied in training mode (batch statistics of the global batch, per-example
dropout streams; `jaxdl.models.contract`) or in evaluation mode.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.tasks.base import Batch
from jaxdl.training.parallel import pmean


def model_inputs(batch: Batch, key: str) -> jax.Array:
    """The model input of a batch as float32: uint8 images scaled from 0..255 to [0, 1]."""
    x = batch[key]
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return x.astype(jnp.float32)


def init_variables(model: nn.Module, key: jax.Array, x: jax.Array) -> tuple[Any, Any]:
    """Initialises `model` on inputs shaped like `x` [1, ...]; returns (params, batch_stats or None)."""
    variables = model.init({"params": key}, x, train=False)
    return variables["params"], variables.get("batch_stats")


def apply_model(
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    x: jax.Array,
    *,
    train: bool,
    keys: jax.Array | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, Any]:
    """Applies a supervised model (`jaxdl.models.contract.Model`) in training or evaluation mode.

    Args:
      model: the model.
      params, batch_stats: the model's variables (batch_stats None without batch norm).
      x: [B, ...] float inputs.
      train: training mode (batch statistics, dropout).
      keys: typed key array [B], per-example dropout streams (training only).
      axis_name: mapped axis of the step (None when unmapped).

    Returns:
      (outputs [B, ...], batch_stats): in training the updated running
      averages, `pmean`ed over `axis_name`; otherwise the input batch_stats.
    """
    if train and axis_name is not None:
        model = model.clone(axis_name=axis_name)
    variables = {"params": params}
    if batch_stats is not None:
        variables["batch_stats"] = batch_stats
    keys = keys if train else None
    if train and batch_stats is not None:
        out, updates = model.apply(variables, x, train=True, example_keys=keys, mutable=["batch_stats"])
        return out, pmean(updates["batch_stats"], axis_name)
    return model.apply(variables, x, train=train, example_keys=keys), batch_stats
