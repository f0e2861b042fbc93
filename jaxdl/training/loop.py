"""The training loop: epochs of compiled steps, evaluation, checkpoints, logs.

The loop is the only place that knows about devices, wall time and files. It
drives a `Task`'s pure steps over a data-parallel device mesh, fetches metrics
from the devices every `log_every_steps` steps (never every step), evaluates
each epoch, saves checkpoints, stops early or on a non-finite metric, and
resumes from the latest checkpoint so that a resumed run ends with exactly the
numbers of an uninterrupted one: data order comes from (seed, epoch), and all
step randomness from (seed, step, example index).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
import tqdm

from jaxdl.data.pipeline import ArrayLoader
from jaxdl.metrics.writers import MetricWriter, read_metrics
from jaxdl.tasks.base import Prepared, Task
from jaxdl.training import parallel
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.config import CheckpointSettings, LoopConfig, TrainerSettings
from jaxdl.training.progress import NonFiniteMetricError, Progress, check_finite, checkpoint_meta
from jaxdl.training.state import TrainState
from jaxdl.viz.curves import plot_curves

__all__ = ["CheckpointSettings", "LoopConfig", "NonFiniteMetricError", "TrainerSettings", "fit"]


def fit(
    task: Task,
    state: TrainState,
    *,
    prepared: Prepared,
    config: LoopConfig,
    train_loader: ArrayLoader,
    eval_loader: ArrayLoader,
    run_dir: pathlib.Path,
    seed: int,
    devices: list[jax.Device],
    checkpointer: Checkpointer | None = None,
    writer: MetricWriter | None = None,
    on_evaluation: Callable[[int, Mapping[str, float]], str | None] | None = None,
    evaluate_final: Callable[[TrainState], Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Trains `state` with `task` and returns the run's results.

    Resumes from `checkpointer`'s newest checkpoint that restores; damaged
    newer ones are reported on stderr (one line each), set aside and listed in
    the results' "skipped_checkpoints".

    Args:
      task: the objective.
      state: the freshly initialised, unreplicated state (used as the restore
        target when resuming).
      prepared: what `task.prepare` returned; its context reaches every step.
      config: loop settings.
      train_loader, eval_loader: batches of `prepared.train` and `prepared.eval`
        (or a streaming loader of the training split).
      run_dir: the run's output folder (pictures, curves).
      seed: the run's seed; the train and eval random streams derive from it.
      devices: local devices to map the steps over.
      checkpointer, writer: where checkpoints and metrics go (None: nowhere,
        e.g. on processes other than 0).
      on_evaluation: called as `on_evaluation(step, eval_metrics)` after each
        evaluation, once its checkpoint is saved (e.g. to report the monitored
        metric to a hyperparameter search). Returning a string stops training
        there, like early stopping, with that string as `stop_reason` (a search
        returns "pruned"); returning None goes on.
      evaluate_final: more final metrics of the final (unreplicated) state,
        after the task's `final_evaluation` (e.g. a configured FID evaluator).

    Returns:
      dict with "metrics" (last eval, on the whole split when
      `config.eval_batches` made the others estimates, plus the task's final
      evaluation), "best" (monitor value and step, as the evaluations during
      training measured it), "steps", "epochs", "stopped_early",
      "stop_reason" (None, "early_stopping" or what `on_evaluation` returned),
      "wall_time_s" (training and evaluation, summed over resumed segments),
      "train_examples_per_s", "train_time_s" (seconds in training steps after the
      first, this segment; no evaluation), "first_step_s" (compile plus one step),
      "phase_s" (seconds of this segment outside the training steps, by phase:
      "evaluation" (the periodic ones and the whole-split one), "artifacts" (pictures, samples,
      curves), "checkpoints" (the blocking part of saving), "final_evaluation"),
      "resumed_from" (step or None) and "skipped_checkpoints" (damaged ones set
      aside on resuming: step, path, reason, moved_to).

    Raises:
      NonFiniteMetricError: a metric, or a metric of the task's final
        evaluation, became NaN/Inf (with `nan_guard`); the checkpoints are kept.
      jaxdl.errors.CheckpointError: there are checkpoints but none restores.
      jaxdl.errors.StorageError: a checkpoint could not be written.
    """
    t0 = time.perf_counter()
    root = jax.random.key(seed)
    train_key, eval_key = jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)

    progress_state = Progress()
    resumed_from = None
    skipped = []  # damaged newer checkpoints, set aside (checkpoint.Skipped)
    if checkpointer is not None:
        state, meta, skipped = checkpointer.restore_latest_good(state)
        for damaged in skipped:
            print(damaged, file=sys.stderr)
            if writer is not None:
                writer.write(damaged.step, {"event": "skipped_damaged_checkpoint", "moved_to": damaged.moved_to})
        if meta is not None:
            progress_state = Progress(**meta["progress"])
            resumed_from = int(state.step)
            if writer is not None:
                writer.write(resumed_from, {"event": "resumed"})

    dp = parallel.DataParallel(devices, config.backend)
    replicated = dp.replicate(state)
    context = prepared.context
    train_step = dp.map(task.train_step, donate_state=True, returns_state=True, context=context)
    eval_step = dp.map(task.eval_step, context=context)
    diagnose = None  # compiled separately, so the train step is the same program with diagnostics off
    if config.diagnostics_every_steps:
        if not hasattr(task, "diagnostics"):
            raise ValueError(f"{type(task).__name__} has no diagnostics step; set trainer.diagnostics_every_steps=0.")
        diagnose = dp.map(task.diagnostics, context=context)
    # at most this many steps dispatched and unfinished (0: no bound): the setting, or fewer where the devices need it
    in_flight = min((k for k in (config.max_steps_in_flight, dp.max_in_flight) if k), default=0)
    # evaluations during training read this many batches (None: all), and the final state then the whole split
    subset = config.eval_batches if config.eval_batches and config.eval_batches < eval_loader.steps_per_epoch else None
    steps_per_epoch = train_loader.steps_per_epoch
    total_steps = config.total_steps(steps_per_epoch)
    step = int(state.step)
    first_epoch, offset = divmod(step, steps_per_epoch)
    if progress_state.stopped_early or step >= total_steps:  # a finished run started again: evaluate only
        first_epoch = math.ceil(total_steps / steps_per_epoch)
    first_step_s = None
    examples, train_time = 0, 0.0
    phase_s = dict.fromkeys(PHASES, 0.0)

    interactive = sys.stderr.isatty()
    bar = tqdm.tqdm(
        total=total_steps,
        initial=step,
        unit="step",
        disable=not config.progress,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0.5 if interactive else 60.0,  # a log file gets a line a minute, not thousands
    )

    def on_host() -> TrainState:
        """Device 0's copy of the current state as numpy arrays (what checkpoints store)."""
        return dp.to_host(replicated)

    def log_train(pending: list, window_start: float) -> float:
        """Fetches the pending step metrics, logs their mean; returns the time after the fetch."""
        nonlocal examples, train_time
        if not pending:
            return time.perf_counter()
        fetched = parallel.fetch_steps(pending)  # the loop's only host sync between evaluations; {k: [S, N]}
        now = time.perf_counter()
        examples += len(pending) * train_loader.batch_size
        train_time += now - window_start
        record = {f"train/{k}": float(np.mean(np.ascontiguousarray(v[:, 0]))) for k, v in fetched.items()}
        record["train/examples_per_s"] = len(pending) * train_loader.batch_size / max(now - window_start, 1e-9)
        if writer is not None:
            writer.write(step, record)
        if config.nan_guard:
            check_finite(record, step, checkpointer)
        if checkpointer is not None:
            checkpointer.check()  # a save that failed in the background stops the run here, not at the next one
        shown = record.get(f"train/{task.progress_metric}", float("nan"))
        postfix = {task.progress_metric: f"{shown:.4g}", "ex/s": f"{record['train/examples_per_s']:.0f}"}
        bar.set_postfix(postfix, refresh=False)
        return now

    def evaluate(max_batches: int | None = None) -> tuple[dict[str, float], Mapping[str, np.ndarray]]:
        """The eval metrics ("eval/..." -> value) of the current state and the summed totals they come from."""
        with _timed(phase_s, "evaluation"):
            totals = jax.device_get(_run_eval(eval_step, replicated, eval_loader, eval_key, dp, max_batches))
        return {f"eval/{k}": v for k, v in task.summarize_eval(totals, context).items()}, totals

    def evaluate_and_save(epoch: float) -> None:
        """Evaluates, updates best/early stopping, writes pictures, saves a ranked checkpoint."""
        last_eval, totals = evaluate(subset)
        if writer is not None:
            writer.write(step, {"epoch": epoch, **last_eval})
        if config.nan_guard:
            check_finite(last_eval, step, checkpointer)
        read = f" (first {subset} of {eval_loader.steps_per_epoch} eval batches)" if subset else ""
        bar.write(f"epoch {epoch:g} step {step}: {_shown(last_eval)}{read}")
        value = last_eval.get(config.monitor)
        if value is None:
            raise KeyError(f"trainer.monitor={config.monitor!r} is not among the eval metrics {sorted(last_eval)}.")
        progress_state.last_eval = last_eval
        if progress_state.improved(value, config.mode, config.min_delta):
            progress_state.best, progress_state.best_step, progress_state.evals_since_best = value, step, 0
        else:
            progress_state.evals_since_best += 1
        if config.patience is not None and progress_state.evals_since_best > config.patience:
            progress_state.stopped_early, progress_state.stop_reason = True, "early_stopping"
        if writer is not None and config.artifacts:
            with _timed(phase_s, "artifacts"):
                device_state = dp.unreplicate(replicated)
                task.write_artifacts(device_state, round(epoch), run_dir, prepared, totals)
                records = list(read_metrics(writer.path))
                plot_curves(
                    records,
                    run_dir / "curves.png",
                    metrics=[f"train/{task.progress_metric}", f"eval/{task.progress_metric}"],
                    title=f"{task.progress_metric} against steps",
                    ylabel=task.progress_unit,
                )
                for name, metrics in task.curves.items():
                    plot_curves(
                        records, run_dir / name, metrics=list(metrics), title=" and ".join(metrics) + " against steps"
                    )
        if on_evaluation is not None and not progress_state.stopped_early:
            reason = on_evaluation(step, dict(last_eval))
            if reason:
                progress_state.stopped_early, progress_state.stop_reason = True, str(reason)
                bar.write(f"Stopped at step {step}: {reason}.")
        if checkpointer is not None:
            with _timed(phase_s, "checkpoints"):
                checkpointer.save(
                    step, on_host(), meta=checkpoint_meta(progress_state, t0), metrics={config.monitor: value}
                )
        if progress_state.stop_reason == "early_stopping":
            bar.write(
                f"Early stop: {config.monitor} has not improved for {config.patience + 1} evaluations "
                f"(best {progress_state.best:.4f} at step {progress_state.best_step})."
            )

    try:
        for epoch in range(first_epoch, math.ceil(total_steps / steps_per_epoch)):
            pending: list = []
            window_start = time.perf_counter()
            evaluated = False
            batches = (dp.shard(b) for b in train_loader.epoch(epoch, start_step=offset))
            for batch in dp.prefetch(batches, config.prefetch_to_device):
                if diagnose is not None and step % config.diagnostics_every_steps == 0:
                    values = jax.device_get(diagnose(replicated, batch, train_key))  # before the donating step
                    if writer is not None:
                        writer.write(step, {k: float(v[0]) for k, v in values.items()})
                replicated, metrics = train_step(replicated, batch, train_key)
                step += 1
                bar.update(1)
                if first_step_s is None:  # compilation; kept out of the throughput figures
                    jax.block_until_ready(metrics)
                    first_step_s = time.perf_counter() - t0
                    window_start = time.perf_counter()
                else:
                    pending.append(metrics)
                    if in_flight and len(pending) >= in_flight:
                        jax.block_until_ready(pending[-in_flight])  # a wait, no copy to the host
                finished = step >= total_steps
                evaluated = finished or bool(config.eval_every_steps and step % config.eval_every_steps == 0)
                if step % config.log_every_steps == 0 or evaluated:
                    window_start = log_train(pending, window_start)
                    pending = []
                if evaluated:
                    evaluate_and_save(step / steps_per_epoch)
                    window_start = time.perf_counter()
                    if finished or progress_state.stopped_early:
                        break
                elif (checkpointer is not None and config.checkpoint_every_steps
                      and step % config.checkpoint_every_steps == 0):
                    window_start = log_train(pending, window_start)  # the NaN guard sees every step it saves
                    pending = []
                    with _timed(phase_s, "checkpoints"):
                        checkpointer.save(step, on_host(), meta=checkpoint_meta(progress_state, t0), metrics={})
                    window_start = time.perf_counter()  # the save is not training time
            log_train(pending, window_start)
            offset = 0
            if progress_state.stopped_early or step >= total_steps:
                break
            if not evaluated and config.eval_every_steps is None and (epoch + 1) % config.eval_every_epochs == 0:
                evaluate_and_save(epoch + 1)
                if progress_state.stopped_early:
                    break
    finally:
        bar.close()
        if checkpointer is not None:
            with _timed(phase_s, "checkpoints"):
                checkpointer.wait()

    def report_after_training(line: str, metrics: dict[str, float], record: dict[str, Any], failed: str) -> None:
        """An evaluation after training: into the final metrics, onto the console and into metrics.jsonl, checked."""
        final_metrics.update(metrics)
        bar.write(line)
        if writer is not None:
            writer.write(step, record)
        if config.nan_guard:
            check_finite(metrics, step, checkpointer, when=failed)

    final_metrics = dict(progress_state.last_eval)
    if subset:  # the estimates ranked the checkpoints; the final metrics are exact
        whole, _ = evaluate()
        line = f"final state on the whole eval split ({eval_loader.steps_per_epoch} batches): {_shown(whole)}"
        record = {"event": "whole_split_evaluation", **whole}
        report_after_training(line, whole, record, "the whole-split evaluation failed")
    host_state = dp.unreplicate(replicated)

    def evaluate_with(step_fn):
        return jax.device_get(_run_eval(dp.map(step_fn, context=context), replicated, eval_loader, eval_key, dp))

    with _timed(phase_s, "final_evaluation"):
        extra = task.final_evaluation(evaluate_with, host_state, prepared)
        if evaluate_final is not None:
            extra = {**extra, **evaluate_final(host_state)}
    if extra:
        report_after_training(f"final evaluation: {_shown(extra)}", extra, extra, "the final evaluation failed")
    segment_s = time.perf_counter() - t0
    wall_time_s = progress_state.elapsed_s + segment_s
    if config.progress or writer is not None:
        print(_time_summary(wall_time_s, segment_s, train_time, first_step_s or 0.0, phase_s), file=sys.stderr)
    return {
        "metrics": final_metrics,
        "best": {"metric": config.monitor, "value": progress_state.best, "step": progress_state.best_step},
        "steps": step,
        "epochs": step / steps_per_epoch,
        "stopped_early": progress_state.stopped_early,
        "stop_reason": progress_state.stop_reason,
        "wall_time_s": wall_time_s,
        "phase_s": phase_s,
        "train_examples_per_s": examples / train_time if train_time > 0 else None,
        "train_time_s": train_time,
        "first_step_s": first_step_s,
        "resumed_from": resumed_from,
        "skipped_checkpoints": [damaged._asdict() for damaged in skipped],
    }


#: Where a segment's time outside the training steps goes (`fit`'s "phase_s").
PHASES = ("evaluation", "artifacts", "checkpoints", "final_evaluation")


@contextlib.contextmanager
def _timed(phase_s: dict[str, float], phase: str) -> Iterator[None]:
    """Adds the seconds the block takes to `phase_s[phase]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        phase_s[phase] += time.perf_counter() - start


def _shown(metrics: Mapping[str, float]) -> str:
    """Metrics as the console shows them: "name value" pairs, 4 decimals, two spaces apart."""
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _time_summary(wall_s: float, segment_s: float, train_s: float, first_step_s: float, phase_s: dict) -> str:
    """The run's closing line: where this segment's seconds went (the rest: data, logging, restoring)."""
    rest = segment_s - train_s - first_step_s - sum(phase_s.values())
    phases = ", ".join(f"{name.replace('_', ' ')} {seconds:.1f} s" for name, seconds in phase_s.items())
    return (
        f"wall time {wall_s:.1f} s: training steps {train_s:.1f} s after a first step (with compilation) of "
        f"{first_step_s:.1f} s; {phases}; the rest {rest:.1f} s"
    )


def _run_eval(
    mapped_step,
    replicated: TrainState,
    loader: ArrayLoader,
    key: jax.Array,
    dp: parallel.DataParallel,
    max_batches: int | None = None,
):
    """Sums the mapped eval step's outputs over every batch (or the first `max_batches`), on device.

    Each batch dispatches two programs (the step and the running sum), so the
    host waits for the sum of the batch `dp.max_in_flight // 2` back, where
    the devices need a bound.
    """
    totals, unfinished, ahead = None, collections.deque(), dp.max_in_flight // 2
    for batch in itertools.islice(loader.epoch(0), max_batches):
        out = mapped_step(replicated, dp.shard(batch), key)
        totals = out if totals is None else parallel.add(totals, out)
        if ahead:
            unfinished.append(totals)
            if len(unfinished) >= ahead:
                jax.block_until_ready(unfinished.popleft())
    return jax.tree.map(lambda x: x[0], totals)

