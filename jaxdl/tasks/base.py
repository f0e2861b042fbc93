"""The contract between a task (an objective) and the training loop.

A task owns the objective and nothing else. Once per run, on the host, it
`prepare`s the data: it may transform the splits and fit what its objective
needs (whitening filters, standardisation statistics, a trace table), and
returns all of it as one immutable `Prepared` value; nothing is stored on the
task. The loop then passes `prepared.context` to every step, so the steps are
pure functions of `(state, batch, key)` and that context:

  init_state(key, tx, example_batch, context) -> state
  train_step(state, batch, key, *, context, axis_name) -> (state, metrics)
  eval_step(state, batch, key, *, context, axis_name) -> sums
  summarize_eval(totals, context) -> metrics

The loop owns devices, data order, logging and checkpoints. What a run is
(batch size, steps per epoch, total steps) reaches the task explicitly as
`RunFacts`, never by reading trainer settings. Evaluation reports beyond the
per-epoch metrics (FID, AIS, anomaly reports, codes against PCA) are
evaluators in `jaxdl.evaluators`, which tasks call from `final_evaluation`
and `write_artifacts`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from jaxdl.training.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
Arrays = dict[str, np.ndarray]
#: `evaluate(step_fn) -> totals`: runs a step of the task over the whole eval split on every device, sums its outputs.
Evaluate = Callable[[Callable[..., Any]], Mapping[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What a task may know about the run it belongs to.

    Attributes:
      batch_size: the global training batch, examples per optimizer step.
      epochs: passes over the training split (when `max_steps` is None).
      max_steps: the run's length in optimizer steps, replacing `epochs`.
    """

    batch_size: int
    epochs: int
    max_steps: int | None = None

    def steps_per_epoch(self, num_examples: int) -> int:
        """Optimizer steps of one pass over `num_examples` (the last partial batch is dropped)."""
        return num_examples // self.batch_size

    def total_steps(self, num_examples: int) -> int:
        """Optimizer steps of the whole run over a training split of `num_examples`."""
        return self.max_steps if self.max_steps is not None else self.epochs * self.steps_per_epoch(num_examples)


class Prepared(NamedTuple):
    """The data of a run as its task prepared it.

    Attributes:
      train: the training split the loader batches (feature -> [N, ...]).
      eval: the evaluation split the loader batches.
      context: the task's own immutable value (None when it needs none),
        passed to `init_state`, every step and `summarize_eval`.
    """

    train: Arrays
    eval: Arrays
    context: Any = None


class Task:
    """Base class of every objective; subclasses implement the steps.

    Hyperparameters that change the compiled program (loss weights, sample
    counts) are constructor arguments kept on the task, which is immutable
    after `__init__`; the loop treats the step methods as static when it
    compiles them. Steps that need no context ignore it.

    Step contract:
      train_step(state, batch, key, *, context=None, axis_name=None) -> (state, metrics):
        metrics is a flat dict of float32 scalars averaged over the global
        batch (already `pmean`ed over `axis_name`).
      eval_step(state, batch, key, *, context=None, axis_name=None) -> sums:
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
    #: False when `prepare` needs the whole training split in memory (no streaming).
    streams: bool = True
    #: Further pictures the loop redraws after each evaluation: file name -> logged metrics against steps.
    curves: Mapping[str, tuple[str, ...]] = {}

    def required_features(self) -> tuple[str, ...]:
        """Batch keys the steps read (checked against the data before anything is compiled)."""
        return ()

    def prepare(self, train: Arrays, eval: Arrays, facts: RunFacts) -> Prepared:  # noqa: A002 (the split's role)
        """Host-side, once per run: the splits as the steps see them, and the task's context.

        Must be deterministic, so that a resumed run sees the same data.
        """
        del facts
        return Prepared(train, eval)

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> TrainState:
        raise NotImplementedError

    def train_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[TrainState, Metrics]:
        raise NotImplementedError

    def eval_step(
        self, state: TrainState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        raise NotImplementedError

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: Any = None) -> dict[str, float]:
        """Turns summed eval outputs into metrics: each `X_sum` becomes `X = X_sum / count`."""
        del context
        count = float(totals["count"])
        return {k.removesuffix("_sum"): float(v) / count for k, v in totals.items() if k.endswith("_sum")}

    def final_evaluation(self, evaluate: Evaluate, state: TrainState, prepared: Prepared) -> dict[str, float]:
        """Extra, more expensive metrics computed once after training (none by default).

        Args:
          evaluate: callable `(step_fn) -> totals` that runs a step of this
            task (same signature as `eval_step`) over the whole evaluation
            split on every device and returns the summed outputs as numpy arrays.
          state: the unreplicated final state.
          prepared: what `prepare` returned.

        Returns:
          metrics named "eval/..." (floats).
        """
        del evaluate, state, prepared
        return {}

    def write_artifacts(
        self, state: TrainState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Writes per-evaluation pictures and reports into `run_dir` (nothing by default).

        Host-side, process 0 only; `totals` are the summed outputs of the
        evaluation just made (what `summarize_eval` received).
        """
        del state, epoch, run_dir, prepared, totals


def initial_state(
    task: Task, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
) -> Any:
    """`task.init_state(key, tx, example_batch, context)` compiled as one program.

    Run op by op, initialisation compiles one small program per operation and
    parameter shape (about 80 for a 4-layer Transformer), and each compiled
    program stays in JAX's cache for the life of the process, about 1.5 MB
    apiece on the CPU backend. One program holds the same state in a fraction
    of that memory and time. Values may differ from the op-by-op ones in the
    last bit of a float32 (XLA fuses the initialisers' arithmetic); a run is
    reproducible from its seed either way.

    Args:
      task: the objective whose `init_state` runs.
      key: the initialisation key.
      tx: the optimizer (static: it becomes part of the state's structure).
      example_batch: arrays whose shapes `init_state` reads (traced; their values are not baked in).
      context: the task's prepared context (closed over as constants).

    Returns:
      The task's state, as `init_state` returns it, on the default device.
    """
    return jax.jit(lambda key, example: task.init_state(key, tx, example, context))(key, dict(example_batch))
