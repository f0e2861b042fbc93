"""Checkpoints with orbax: keep the last N and the best, restore the latest.

Each checkpoint holds the unreplicated train state (so it restores onto any
device count) and a small JSON record of the loop's own position (epoch,
early-stopping counters, elapsed time). Saves are asynchronous and atomic:
orbax writes into a temporary folder and renames it when complete, so a
process killed mid-save leaves the previous checkpoints intact and the next
run restores the last committed one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from jaxdl.training.state import TrainState


class Checkpointer:
    """Saves and restores (state, meta) pairs under `directory`.

    Args:
      directory: folder of the checkpoints (created if missing).
      keep_last: number of most recent checkpoints kept.
      best_metric: metric whose best checkpoint is also kept (e.g.
        "eval/elbo"); None keeps only the recent ones.
      mode: "min" if lower `best_metric` is better, else "max".

    Raises:
      ValueError: keep_last < 1 or mode not in {"min", "max"}.
    """

    def __init__(self, directory: os.PathLike | str, *, keep_last: int = 2, best_metric: str | None = None, mode: str = "min"):
        if keep_last < 1:
            raise ValueError(f"trainer.checkpoint.keep_last={keep_last} must be at least 1.")
        if mode not in ("min", "max"):
            raise ValueError(f"Checkpoint mode {mode!r} must be 'min' or 'max'.")
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
            create=True,
        )
        self.directory = os.path.abspath(os.fspath(directory))
        self.best_metric = best_metric
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        """Step of the newest committed checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every checkpoint kept, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: TrainState, *, meta: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Starts an asynchronous save of `state` (unreplicated) at `step`.

        `metrics` ranks the checkpoint and must then contain `best_metric`; an
        empty `metrics` (a mid-epoch save) leaves it unranked, kept only while it
        is among the `keep_last` newest. `meta` is any JSON-serialisable record.
        """
        metrics = {k: float(v) for k, v in metrics.items()}
        if metrics and self.best_metric is not None and self.best_metric not in metrics:
            raise KeyError(f"Cannot rank checkpoint {step}: {self.best_metric!r} not in metrics {sorted(metrics)}.")
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta)))
        self._manager.save(step, args=args, metrics=metrics or None)

    def restore(self, target: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """Restores (state, meta) at `step` (default: the latest) into the structure of `target`.

        Raises:
          FileNotFoundError: there is no checkpoint to restore.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint in {self.directory}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return restored["state"], dict(restored["meta"])

    def wait(self) -> None:
        """Blocks until pending saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
