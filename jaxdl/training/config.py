"""The `trainer` settings: how the loop runs (`LoopConfig`) and how a run feeds it (`TrainerSettings`).

Plain frozen dataclasses, checked when built; `experiments.config` derives the
`trainer` group's Hydra schema from `TrainerSettings`, so a field added here is
a setting on the command line.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How the loop runs; every field has a unit or a meaning, none changes the maths.

    Attributes:
      epochs: passes over the training split.
      max_steps: when set, the run's length in optimizer steps, replacing
        `epochs` (it may end mid-epoch); iteration-based recipes (nanoGPT) use it.
      log_every_steps: steps between fetches of the running train metrics.
      eval_every_epochs: epochs between evaluations (the last step always evaluates).
      eval_every_steps: evaluate every this many steps instead (None: by epochs).
      eval_batches: evaluations during training read only the first this many
        batches of the evaluation split, the same ones each time: an estimate,
        as nanoGPT's `eval_iters`, that ranks checkpoints and drives early
        stopping. The final state is then evaluated on the whole split once
        more after training, and that exact evaluation is what the run's
        final metrics hold (None: every evaluation reads the whole split).
      checkpoint_every_steps: extra checkpoints inside epochs (None: at epoch ends only).
      monitor: metric that ranks checkpoints and drives early stopping (e.g. "eval/elbo").
      mode: "min" if lower `monitor` is better, else "max".
      patience: evaluations without improvement of at least `min_delta`
        before stopping; None disables early stopping.
      min_delta: smallest change of `monitor` that counts as improvement.
      nan_guard: stop with `NonFiniteMetricError` when a metric is NaN/Inf.
      progress: show a progress bar on the console.
      artifacts: let the task write its pictures each evaluation.
      backend: "shard_map" or "pmap" (see `jaxdl.training.parallel`).
      prefetch_to_device: batches copied to the devices ahead of the step
        that uses them (0: each batch is copied when its step starts).
      max_steps_in_flight: steps dispatched to the devices and not finished, at
        most (0: no bound; the host runs ahead until it fetches the metrics every
        `log_every_steps`). 1 makes the host wait for each step before it
        dispatches the next. Each step being executed holds its own block of
        temporaries, so a bound caps that memory; on the CPU Transformer of
        `experiment=shakespeare_char_cpu`, 1 saved 5-10 MB of a 600 MB peak and
        cost about 5 % of the step time (benchmarks/RESULTS.md, "End to end").
        On more than one CPU device the loop keeps at most 16 whatever this
        says (`jaxdl.training.parallel.CPU_MAX_IN_FLIGHT`): with 33 or more,
        XLA's CPU client stopped the process in an all-reduce.
      diagnostics_every_steps: every N steps, before the update, run the
        task's `diagnostics` step (per-layer gradient norms, dead units; see
        `jaxdl.training.diagnostics`) on that step's batch and log its
        "diag/..." values (0: off; the train step is the same program either way).
    """

    epochs: int = 10
    max_steps: int | None = None
    log_every_steps: int = 100
    eval_every_epochs: int = 1
    eval_every_steps: int | None = None
    eval_batches: int | None = None
    checkpoint_every_steps: int | None = None
    monitor: str = "eval/loss"
    mode: str = "min"
    patience: int | None = None
    min_delta: float = 0.0
    nan_guard: bool = True
    progress: bool = True
    artifacts: bool = True
    backend: str = "shard_map"
    prefetch_to_device: int = 0
    max_steps_in_flight: int = 0
    diagnostics_every_steps: int = 0

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        return self.max_steps if self.max_steps is not None else self.epochs * steps_per_epoch

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"trainer.epochs={self.epochs} must be at least 1.")
        if self.log_every_steps < 1 or self.eval_every_epochs < 1:
            raise ValueError("trainer.log_every_steps and trainer.eval_every_epochs must be at least 1.")
        for name in ("max_steps", "eval_every_steps", "eval_batches", "checkpoint_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"trainer.{name}={value} must be at least 1 (or null).")
        for name in ("prefetch_to_device", "max_steps_in_flight", "diagnostics_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"trainer.{name}={getattr(self, name)} must be >= 0 (0: off).")
        if self.mode not in ("min", "max"):
            raise ValueError(f"trainer.mode={self.mode!r} must be 'min' or 'max'.")


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    """Attributes: keep_last: the most recent checkpoints kept, besides the best by the monitored metric."""

    keep_last: int = 2


@dataclasses.dataclass(frozen=True)
class TrainerSettings(LoopConfig):
    """The `trainer` settings of a run: the loop's (`LoopConfig`) and how a run feeds it.

    Attributes (besides `LoopConfig`'s):
      batch_size: the global training batch: examples per optimizer step over
        all devices and processes. Part of a model's recipe (it changes the maths).
      eval_batch_size: the global evaluation batch (None: `batch_size`); it
        does not change the metrics (the last batch is padded and masked).
      num_devices: local devices to map the steps over (None: all).
      tensorboard: also write TensorBoard event files.
      checkpoint: how many checkpoints are kept.
      monitor, mode: as `LoopConfig`'s; None takes the task's.
    """

    monitor: str | None = None
    mode: str | None = None
    batch_size: int = 100
    eval_batch_size: int | None = None
    num_devices: int | None = None
    tensorboard: bool = True
    checkpoint: CheckpointSettings = CheckpointSettings()

    def __post_init__(self):
        if self.batch_size < 1 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise ValueError(f"trainer.batch_size={self.batch_size} and trainer.eval_batch_size must be at least 1.")
        if self.mode is not None and self.mode not in ("min", "max"):
            raise ValueError(f"trainer.mode={self.mode!r} must be 'min' or 'max' (or null: the task's).")
        if self.checkpoint.keep_last < 1:
            raise ValueError(f"trainer.checkpoint.keep_last={self.checkpoint.keep_last} must be at least 1.")
        self.loop_config(monitor="eval/loss", mode="min")  # LoopConfig checks its own fields

    def loop_config(self, *, monitor: str, mode: str) -> LoopConfig:
        """The loop's settings, with the task's `monitor` and `mode` where these are None."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(LoopConfig)}
        return LoopConfig(**{**fields, "monitor": self.monitor or monitor, "mode": self.mode or mode})
