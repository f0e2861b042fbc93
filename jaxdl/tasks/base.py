"""The contract between a task (an objective) and the training loop.

A task owns the objective and nothing else: it builds the initial state,
defines one training step and one evaluation step as pure functions of
`(state, batch, key)`, and may write artifacts (images, plots) between
epochs. The loop owns devices, data order, logging and checkpoints.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

from jaxdl.training.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Task:
    """Base class of every objective; subclasses implement the steps.

    Hyperparameters that change the compiled program (loss weights, sample
    counts) are fields set in `__init__`; the step methods read them from
    `self`, which the loop treats as static when it compiles them.

    Step contract:
      train_step(state, batch, key, *, axis_name=None) -> (state, metrics):
        metrics is a flat dict of float32 scalars averaged over the global
        batch (already `pmean`ed over `axis_name`).
      eval_step(state, batch, key, *, axis_name=None) -> sums:
        a dict of arrays summed over the valid (mask == True) examples of the
        global batch, with "count" the number of valid examples; the loop adds
        them over batches and `summarize_eval` turns the totals into metrics.
    """

    #: Metric the checkpoint manager and early stopping watch by default.
    default_metric: str = "eval/loss"
    #: "min" when lower is better.
    default_mode: str = "min"
    #: Train/eval metric shown on the progress bar and in `curves.png`, and its unit.
    progress_metric: str = "loss"
    progress_unit: str = ""

    def init_state(self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch) -> TrainState:
        raise NotImplementedError

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        raise NotImplementedError

    def eval_step(self, state: TrainState, batch: Batch, key: jax.Array, *, axis_name: str | None = None) -> Metrics:
        raise NotImplementedError

    def prepare_train_split(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host-side, once per run and before `prepare_eval_split` and `init_state`.

        A task may fit statistics on the training split here (standardization,
        data marginals for initial biases), keep what its final evaluation needs
        (a k-NN or linear baseline fitted on training data), or select examples
        (only the normal class for anomaly detection). Must be deterministic so
        that a resumed run sees the same data.
        """
        return arrays

    def prepare_eval_split(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host-side, once per run: fixes any randomness of the evaluation data."""
        return arrays

    def summarize_eval(self, totals: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Turns summed eval outputs into metrics: each `X_sum` becomes `X = X_sum / count`."""
        count = float(totals["count"])
        return {k.removesuffix("_sum"): float(v) / count for k, v in totals.items() if k.endswith("_sum")}

    def final_evaluation(self, evaluate: Any, state: TrainState) -> dict[str, float]:
        """Extra, more expensive metrics computed once after training (none by default).

        Args:
          evaluate: callable `(step_fn, **static) -> totals` that runs a step of
            this task over the whole evaluation split on every device and
            returns the summed outputs as numpy arrays.
          state: the unreplicated final state.
        """
        del evaluate, state
        return {}

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, eval_arrays: Mapping[str, np.ndarray]
    ) -> None:
        """Writes per-epoch pictures into `run_dir` (nothing by default). Host-side, process 0 only."""
        del state, epoch, run_dir, eval_arrays
