"""The training state every task carries through its steps."""

from __future__ import annotations

from typing import Any

from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState (`step`, `params`, `opt_state`, `apply_fn`, `tx`) plus `batch_stats`.

    `batch_stats` holds the running statistics of batch-norm layers (a pytree
    of float32 arrays) and is None for models without them. `step` is the
    number of optimizer updates applied so far (int32 scalar); tasks fold it
    into their PRNG key so that each step draws fresh randomness and a
    resumed run draws the same randomness as an uninterrupted one.
    """

    batch_stats: Any = None
