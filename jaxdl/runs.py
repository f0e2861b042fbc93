"""Reading a finished run back: its settings, its task and a trained state from its checkpoints.

Used by commands that are not training runs (`scripts.sample`, `scripts.detect`,
`scripts.fid`) and by the FID evaluator: they rebuild exactly the model and task
the run trained through `jaxdl.build`, from the run's `manifest.json` (its
settings and what was built from them, with the data's facts filled in, so no
data is needed), and restore a checkpoint into them.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxdl import build
from jaxdl.errors import UserError
from jaxdl.tasks.base import Task, initial_state
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.state import TrainState


class Restored(NamedTuple):
    """A run read back: `settings` (as given to the run), `task`, `state`, its `step` and `checkpoint` folder."""

    settings: dict[str, Any]
    task: Task
    state: TrainState
    step: int
    checkpoint: str


class NotARunError(UserError, FileNotFoundError):
    """A folder is not the folder of a finished run, or holds no checkpoint."""


def load_manifest(run_dir: os.PathLike | str) -> dict[str, Any]:
    """The run's manifest.json: "settings" (as given), "built" (model and task as built), "dataset", ...

    Raises:
      NotARunError: `run_dir` has no manifest.json (not a run folder).
    """
    path = pathlib.Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise NotARunError(f"{path} not found: --run must be the folder of an `experiments.run` run.")
    return json.loads(path.read_text())


def load_settings(run_dir: os.PathLike | str) -> dict[str, Any]:
    """The settings the run was given (manifest.json "settings")."""
    return load_manifest(run_dir)["settings"]


def build_task(run_dir: os.PathLike | str) -> Task:
    """The run's task and model, rebuilt from its manifest (no data needed)."""
    record = load_manifest(run_dir)
    built, settings = record["built"], record["settings"]
    spec = build.spec_from_record(built.get("data_spec") or {"name": settings["data"]["name"]})
    model = build.build_model(built["model"], spec, precision=settings.get("precision", "auto"))
    return build.build_task(built["task"], model, spec)


def restore(
    run_dir: os.PathLike | str,
    example_batch: Mapping[str, np.ndarray],
    *,
    step: int | None = None,
    context: Any = None,
) -> Restored:
    """Rebuilds the run's task and restores a checkpoint into it.

    Args:
      run_dir: the run's output folder.
      example_batch: arrays shaped like one training batch (the task's
        `init_state` reads their shapes), e.g. {"tokens": int32 [1, T]}.
      step: the checkpoint to restore (None: the latest).
      context: the task's prepared context, for tasks whose `init_state` needs one.

    Raises:
      NotARunError: no manifest or no checkpoint in `run_dir`.
    """
    record = load_manifest(run_dir)
    settings = record["settings"]
    task = build_task(run_dir)
    steps_per_epoch = record["built"].get("steps_per_epoch") or 1
    total = settings["trainer"].get("max_steps") or 10**9  # only the schedule's values depend on it, not the state
    tx = build.build_optimizer(settings["optimizer"], total_steps=total, steps_per_epoch=steps_per_epoch)
    target = initial_state(task, jax.random.key(0), tx, example_batch, context)
    checkpointer = Checkpointer(pathlib.Path(run_dir) / "checkpoints", read_only=True)
    try:
        if checkpointer.latest_step() is None and step is None:
            raise NotARunError(f"{checkpointer.directory} holds no checkpoint to restore.")
        state, _ = checkpointer.restore(target, step)
    finally:
        checkpointer.close()
    folder = str(pathlib.Path(checkpointer.directory, str(int(state.step))).resolve())
    return Restored(settings, task, state, int(state.step), folder)


class Classifier(NamedTuple):
    """A trained jaxdl classifier used as a feature extractor (the FID evaluator's).

    Attributes:
      run_dir: its run folder; checkpoint: the restored checkpoint's folder; step: its step.
      test_accuracy: `eval/accuracy` recorded in the run's results.json (None if absent).
      dataset: the dataset it was trained on (`data.name`).
      task: its ClassificationTask; state: its restored TrainState.
    """

    run_dir: str
    checkpoint: str
    step: int
    test_accuracy: float | None
    dataset: str
    task: Any
    state: Any


def load_classifier(run_dir: os.PathLike | str) -> Classifier:
    """Restores the latest checkpoint of a finished classification run.

    Raises:
      NotARunError: not a run folder, or no checkpoint.
      UserError: the run is not a classifier.
    """
    record = load_manifest(run_dir)
    built = record["built"]
    if built["task"]["name"] != "classification":
        raise UserError(f"{run_dir} trained task {built['task']['name']!r}; the classifier must be a classification run.")
    shape = (built.get("data_spec") or {}).get("image_shape") or built["model"].get("image_shape") or (28, 28, 1)
    example = {"image": np.zeros((1, *shape), np.uint8), "label": np.zeros((1,), np.int32)}
    restored = restore(run_dir, example)
    results = pathlib.Path(run_dir) / "results.json"
    accuracy = json.loads(results.read_text())["metrics"].get("eval/accuracy") if results.is_file() else None
    return Classifier(
        str(run_dir), restored.checkpoint, restored.step, accuracy, record["settings"]["data"]["name"], restored.task,
        restored.state,
    )
