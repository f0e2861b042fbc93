"""Checkpoints with orbax: keep the last N and the best, resume from the newest that restores.

Each checkpoint holds the unreplicated train state (so it restores onto any
device count) and a small JSON record of the loop's own position (epoch,
early-stopping counters, elapsed time). Saves are asynchronous and atomic:
orbax writes into `<step>.orbax-checkpoint-tmp` and renames it to `<step>`
when complete, so a process killed mid-save leaves the previous checkpoints
intact, and the next run removes the partial folder and restores the last
committed one.

Faults end in one `jaxdl.errors.UserError` and a process that exits:

* A save that cannot write (permission denied, read-only or full disk) raises
  a `StorageError` naming the folder, from `save` (the step folder is created
  before `save` returns) or, for a write that fails in the background, from
  the next `save`, `check` or `wait`. Its partial folder is removed.
  Orbax's default creates the step folder in a background thread whose
  failure never sends the "folder created" signal the other commit threads
  wait for; those non-daemon threads then block for orbax's coordination
  timeout (300 s each) and the interpreter waits for them at exit. Creating
  the folder synchronously (`AsyncOptions(create_directories_asynchronously=False)`)
  raises the error in the caller and starts no waiting thread.
* `restore_latest_good` restores the newest checkpoint that restores; a
  damaged newer one (truncated or garbled files) is reported in one line and
  moved to `<directory>.damaged/<step>`, never deleted, so that its step can
  be saved again. When none restores, a `CheckpointError` says which folder
  to move away.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxdl import errors
from jaxdl.training import orbax_logs
from jaxdl.training.state import TrainState

_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_DRAIN_TIMEOUT_S = 60.0  # at most this long for orbax's writer threads to end after a failed save


class Skipped(NamedTuple):
    """A checkpoint that did not restore: its step, folder, why, and where it was moved (None: left in place)."""

    step: int
    path: str
    reason: str
    moved_to: str | None = None

    def __str__(self) -> str:
        where = f"moved to {self.moved_to}" if self.moved_to else "left in place"
        return f"Checkpoint step {self.step} ({self.path}) does not restore ({self.reason}); skipped it and {where}."


class Restored(NamedTuple):
    """What `restore_latest_good` found.

    Attributes:
      state: the restored state, or the target unchanged when nothing was restored.
      meta: the checkpoint's JSON record, or None when there was no checkpoint (a new run).
      skipped: damaged newer checkpoints, newest first (each `str()` is one line to report).
    """

    state: Any
    meta: dict[str, Any] | None
    skipped: list[Skipped]


class Checkpointer:
    """Saves and restores (state, meta) pairs under `directory`.

    Args:
      directory: folder of the checkpoints (created if missing).
      keep_last: number of most recent checkpoints kept.
      best_metric: metric whose best checkpoint is also kept (e.g.
        "eval/elbo"); None keeps only the recent ones.
      mode: "min" if lower `best_metric` is better, else "max".
      read_only: only read (a finished run's checkpoints, perhaps in a folder
        that is not writable): nothing is created, probed or cleaned up.

    Raises:
      ValueError: keep_last < 1 or mode not in {"min", "max"}.
      jaxdl.errors.StorageError: `directory` cannot be created or written
        (checked with a small probe file unless `read_only`).
    """

    def __init__(
        self,
        directory: os.PathLike | str,
        *,
        keep_last: int = 2,
        best_metric: str | None = None,
        mode: str = "min",
        read_only: bool = False,
    ):
        if keep_last < 1:
            raise ValueError(f"trainer.checkpoint.keep_last={keep_last} must be at least 1.")
        if mode not in ("min", "max"):
            raise ValueError(f"Checkpoint mode {mode!r} must be 'min' or 'max'.")
        self.directory = os.path.abspath(os.fspath(directory))
        self.best_metric = best_metric
        self.read_only = read_only
        if not read_only:
            errors.check_writable(self.directory, doing="preparing the checkpoint folder")
        orbax_logs.install_log_filter()
        policies = [checkpoint_managers.LatestN(n=keep_last)]
        if best_metric is not None:
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=(mode == "min"),
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=True,
            # The step folder is made before save() returns, so a folder that cannot be written fails there
            # (the background creation hangs the process at exit instead; see the module docstring).
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,  # partial folders of killed or failed saves
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        self._pending: int | None = None  # step of the save running in the background
        self._failed = False  # a save failed (and was reported)

    def latest_step(self) -> int | None:
        """Step of the newest committed checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every checkpoint kept, oldest first."""
        return sorted(self._manager.all_steps())

    def step_path(self, step: int) -> str:
        """The folder of checkpoint `step`."""
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state: TrainState, *, meta: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Starts an asynchronous save of `state` (unreplicated) at `step`.

        `metrics` ranks the checkpoint and must then contain `best_metric`; an
        empty `metrics` (a mid-epoch save) leaves it unranked, kept only while it
        is among the `keep_last` newest. `meta` is any JSON-serialisable record.

        Raises:
          jaxdl.errors.StorageError: this save, or the previous one still
            writing in the background, could not write (full disk, no permission).
          KeyError: `metrics` lacks `best_metric`.
        """
        metrics = {k: float(v) for k, v in metrics.items()}
        if metrics and self.best_metric is not None and self.best_metric not in metrics:
            raise KeyError(f"Cannot rank checkpoint {step}: {self.best_metric!r} not in metrics {sorted(metrics)}.")
        self.wait()  # orbax would wait too; here a failure of the previous save is reported with its own step
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
        self._pending = step
        with self._reporting_failures():
            self._manager.save(step, args=args, metrics=metrics or None)

    def check(self) -> None:
        """Raises the failure of a background save that has already ended; never blocks.

        Cheap enough to call at every log interval, so a full disk stops the
        run at once rather than at the next checkpoint.

        Raises:
          jaxdl.errors.StorageError (or the original error): the save failed.
        """
        if self._pending is None:
            return
        with self._reporting_failures():
            self._manager.check_for_errors()

    def wait(self) -> None:
        """Blocks until pending saves are committed.

        Raises:
          jaxdl.errors.StorageError (or the original error): a pending save failed.
        """
        if self._pending is None:
            return
        with self._reporting_failures():
            self._manager.wait_until_finished()
        self._pending = None

    def close(self) -> None:
        """Waits for pending saves and releases the manager, also after a failed save (whose error is raised once).

        Orbax raises a failed background save again from its own `close()`,
        once per layer that stored it, before closing the rest; a failure
        already reported is not raised twice, and closing goes on until done.
        """
        try:
            self.wait()
        finally:
            for attempt in range(4):
                try:
                    self._manager.close()
                    break
                except Exception:
                    if not self._failed or attempt == 3:
                        raise

    @contextlib.contextmanager
    def _reporting_failures(self) -> Iterator[None]:
        """Turns a failed save of step `self._pending` into a StorageError; forgets it and removes its partial folder.

        An error that is not a full or unwritable disk (a bug) propagates unchanged.
        """
        try:
            yield
        except Exception as e:
            step, self._pending, self._failed = self._pending, None, True
            self._drain()  # orbax's threads may still write into the partial folder
            shutil.rmtree(self.step_path(step) + _TMP_SUFFIX, ignore_errors=True)  # never a checkpoint; frees the disk
            try:
                self._manager.reload()  # orbax listed the step when its save started
            except Exception:  # noqa: BLE001 (the save's error is the one to report)
                pass
            converted = errors.storage_error(e, self.directory, doing=f"saving checkpoint step {step}")
            if converted is None:
                raise
            raise converted from e

    def _drain(self) -> None:
        """Waits for orbax's background work to end after a failed save, ignoring the failure raised again."""
        for _ in range(4):  # each layer of orbax that stored the error raises it once
            try:
                self._manager.wait_until_finished()
                break
            except Exception:  # noqa: BLE001 (the failure is already being reported)
                continue
        # Orbax stops waiting at the first failed commit thread; the others may still be writing.
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax."):
                threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))  # orbax's join re-raises

    def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """Restores (state, meta) at `step` (default: the latest) into the structure of `target`.

        Raises:
          FileNotFoundError: there is no checkpoint to restore.
          Exception: whatever orbax or TensorStore raise for a damaged
            checkpoint (see `restore_latest_good`, which handles them).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return restored["state"], dict(restored["meta"])

    def restore_latest_good(self, target: TrainState, *, set_aside: bool = True) -> Restored:
        """Restores the newest checkpoint that restores, skipping damaged newer ones.

        Args:
          target: a state of the run's structure (shapes and dtypes are read from it).
          set_aside: move each damaged newer checkpoint to
            `<directory>.damaged/<step>` (so training can save that step again
            and the keep-last policy does not count it); False leaves it in place.

        Returns:
          `Restored(state, meta, skipped)`; `meta` is None when the folder holds
          no checkpoint (a new run), and `state` is then `target`.

        Raises:
          jaxdl.errors.CheckpointError: there are checkpoints but none
            restores; the message names each step's reason and the folder to move away.
        """
        skipped: list[Skipped] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                with orbax_logs.quiet():
                    state, meta = self.restore(target, step)
            except Exception as e:  # noqa: BLE001 (any failure to read a checkpoint makes it unusable)
                skipped.append(Skipped(step, self.step_path(step), orbax_logs.short_reason(e)))
                continue
            if set_aside and skipped:
                skipped = [s._replace(moved_to=self._set_aside(s.step)) for s in skipped]
                self._manager.reload()
            return Restored(state, meta, skipped)
        if skipped:
            reasons = "; ".join(f"step {s.step}: {s.reason}" for s in skipped)
            raise errors.CheckpointError(
                f"No checkpoint in {self.directory} restores into this run ({reasons}). If the run's settings or code "
                f"changed, rerun into a new hydra.run.dir; otherwise move {self.directory} away "
                f"(e.g. to {self.directory}.broken) to train from the start."
            )
        return Restored(target, None, [])

    def _set_aside(self, step: int) -> str:
        """Moves checkpoint `step` to `<directory>.damaged/<step>[-n]`; returns the new path."""
        store = self.directory + ".damaged"
        destination, n = os.path.join(store, str(step)), 1
        while os.path.exists(destination):
            destination, n = os.path.join(store, f"{step}-{n}"), n + 1
        try:
            os.makedirs(store, exist_ok=True)
            os.replace(self.step_path(step), destination)
        except OSError as e:
            raise (
                errors.storage_error(e, store, doing=f"setting aside the damaged checkpoint step {step}")
                or errors.CheckpointError(
                    f"Checkpoint step {step} ({self.step_path(step)}) does not restore and could not be moved to "
                    f"{destination} ({e}); move it away by hand and rerun."
                )
            ) from e
        return destination
