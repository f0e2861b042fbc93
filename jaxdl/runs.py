"""Reading a finished run back: its settings, its task and a trained state from its checkpoints.

Used by commands that are not training runs (`scripts.sample`, `scripts.detect`):
they rebuild exactly the model and task the run trained, from the resolved
config Hydra saved with the run (`RUN_DIR/.hydra/config.yaml`), and restore a
checkpoint into them. The config is read with OmegaConf (no Hydra), resolving
`${oc.env:...}` against the current environment.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from omegaconf import OmegaConf

from jaxdl.experiment import build_model, build_task
from jaxdl.tasks.base import Task
from jaxdl.training import optim
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.state import TrainState


class Restored(NamedTuple):
    """A run read back: `settings` (the resolved config as dicts), `task`, `state` and its `step`."""

    settings: dict[str, Any]
    task: Task
    state: TrainState
    step: int


def load_settings(run_dir: os.PathLike | str) -> dict[str, Any]:
    """The run's resolved config as plain dicts.

    Raises:
      FileNotFoundError: `run_dir` has no `.hydra/config.yaml` (not a run folder).
    """
    path = pathlib.Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --run must be the folder of a finished `experiments.run` run.")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def restore(
    run_dir: os.PathLike | str, example_batch: Mapping[str, np.ndarray], *, step: int | None = None
) -> Restored:
    """Rebuilds the run's task and restores a checkpoint into it.

    Args:
      run_dir: the run's output folder.
      example_batch: arrays shaped like one training batch (the task's
        `init_state` reads their shapes), e.g. {"tokens": int32 [1, T]}.
      step: the checkpoint to restore (None: the latest).

    Raises:
      FileNotFoundError: no config or no checkpoint in `run_dir`.
    """
    settings = load_settings(run_dir)
    model_settings, task_settings = dict(settings["model"]), dict(settings["task"])
    module = build_model(model_settings.pop("name"), **model_settings)
    task = build_task(task_settings.pop("name"), module, **task_settings)
    optimizer = dict(settings["optimizer"])
    schedule_settings = dict(optimizer.pop("schedule", None) or {"name": "constant"})
    total = settings["trainer"].get("max_steps") or 10**9  # only the schedule's values depend on it, not the state
    schedule = optim.make_schedule(
        schedule_settings.pop("name"), optimizer.pop("learning_rate"), total_steps=total, steps_per_epoch=1,
        **{k: v for k, v in schedule_settings.items() if k != "boundaries_epochs"},
    )
    tx = optim.make_optimizer(optimizer.pop("name"), schedule, **optimizer)
    target = task.init_state(jax.random.key(0), tx, example_batch)
    checkpointer = Checkpointer(pathlib.Path(run_dir) / "checkpoints")
    try:
        state, _ = checkpointer.restore(target, step)
    finally:
        checkpointer.close()
    return Restored(settings, task, state, int(state.step))
