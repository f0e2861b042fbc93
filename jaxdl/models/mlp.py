"""Multilayer perceptron (dense network) for classification and regression.

Dense layers with an optional batch norm (Ioffe & Szegedy 2015,
arXiv:1502.03167) before each nonlinearity and an optional dropout
(Srivastava et al. 2014, JMLR 15) after it; a linear output layer gives logits
(classification) or predictions (regression). Any input shape is flattened.

Dropout draws its mask from one PRNG stream per example (`example_keys`, see
`jaxdl.training.parallel.example_keys`), so a step drops the same units
whether the batch sits on one device or is split over eight. Batch norm
averages its batch statistics over `axis_name` when set, so the statistics are
those of the global batch.

Shapes:
  B batch, D = product of the input's trailing axes, O outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import require_positive
from jaxdl.models.layers import Dropout, activation_fn, batch_norm

Dtype = Any


class MLP(nn.Module):
    """Dense network: [Dense -> (BatchNorm) -> activation -> (Dropout)] x L -> Dense.

    Attributes:
      hidden_dims: widths of the hidden layers (L = len(hidden_dims)).
      num_outputs: O, classes for classification or targets for regression.
      activation: hidden nonlinearity name (see `jaxdl.models.layers.ACTIVATIONS`).
      dropout_rate: dropout probability after every hidden activation (0: none).
      batch_norm: batch-normalise every hidden pre-activation (the dense layer
        then has no bias; the norm's shift replaces it).
      batch_norm_momentum: running-average decay of the batch statistics.
      axis_name: mapped axis over which batch statistics are averaged (None:
        the local batch). Tasks set it with `clone(axis_name=...)` inside a
        mapped step; the model never assumes one.
      dtype: compute dtype; param_dtype: storage dtype of the parameters.
    """

    hidden_dims: Sequence[int] = (512, 512)
    num_outputs: int = 10
    activation: str = "relu"
    dropout_rate: float = 0.0
    batch_norm: bool = False
    batch_norm_momentum: float = 0.9
    axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        require_positive("model", hidden_dims=self.hidden_dims, num_outputs=self.num_outputs)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, example_keys: jax.Array | None = None) -> jax.Array:
        """Maps inputs to outputs.

        Args:
          x: [B, ...] float inputs (images are flattened to [B, D]).
          train: use batch statistics (and update their running averages, which
            needs `mutable=["batch_stats"]`) and apply dropout; evaluation uses
            the running averages and no dropout, and is deterministic.
          example_keys: typed key array [B], the dropout stream of each example
            (needed only when training with dropout_rate > 0).

        Returns:
          [B, O] float32 logits or predictions.
        """
        act = activation_fn(self.activation)
        h = x.reshape(x.shape[0], -1).astype(self.dtype)  # [B, D]
        for i, width in enumerate(self.hidden_dims):
            h = nn.Dense(width, use_bias=not self.batch_norm, dtype=self.dtype, param_dtype=self.param_dtype)(h)
            if self.batch_norm:
                h = batch_norm(
                    train=train, momentum=self.batch_norm_momentum, axis_name=self.axis_name,
                    dtype=self.dtype, param_dtype=self.param_dtype,
                )(h)
            h = act(h)
            self.sow("intermediates", "activations", h)  # [B, width]; kept only if "intermediates" is mutable
            if self.dropout_rate > 0.0:  # sites numbered by layer
                h = Dropout(self.dropout_rate, site=i)(h, example_keys, deterministic=not train)
        out = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=self.param_dtype, name="output")(h)  # [B, O]
        return out.astype(jnp.float32)
