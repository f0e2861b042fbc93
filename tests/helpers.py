"""Code the tests share: a task's steps over devices, its evaluation, configs composed and run folders written.

Tolerances live in `tests.conftest.assert_close`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxdl import backend
from jaxdl.training import parallel

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"


def _devices(devices: int | Sequence[jax.Device]) -> Sequence[jax.Device]:
    return parallel.select_devices(devices) if isinstance(devices, int) else devices


def run_steps(
    task,
    tx,
    batch: Mapping[str, np.ndarray],
    devices: int | Sequence[jax.Device],
    steps: int,
    *,
    backend: str = "shard_map",
    context: Any = None,
    state: Any = None,
) -> tuple[Any, list[dict[str, np.ndarray]]]:
    """Trains `steps` steps on one global batch, mapped over `devices` as the loop maps them.

    The state starts from `task.init_state(key(0), tx, batch, context)` unless
    given; every step uses the loop key `key(1)` (the step is folded in by the
    task); the batch's `mask` (an evaluation feature) is left out.

    Returns:
      (the final unreplicated state, each step's metrics: arrays [devices]).
    """
    devices = _devices(devices)
    if state is None:
        state = task.init_state(jax.random.key(0), tx, batch, context)
    replicated = parallel.replicate(state, devices, backend=backend)
    step = parallel.data_parallel(
        task.train_step, devices, backend=backend, donate_state=True, returns_state=True, context=context
    )
    sharded = parallel.shard({k: v for k, v in batch.items() if k != "mask"}, len(devices))
    history = []
    for _ in range(steps):
        replicated, metrics = step(replicated, sharded, jax.random.key(1))
        history.append(jax.device_get(metrics))
    return parallel.unreplicate(replicated, backend=backend), history


def eval_batch(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`arrays` as an evaluation batch: `index` 0..N-1 and `mask` all True where they are missing."""
    n = len(next(iter(arrays.values())))
    return {"index": np.arange(n, dtype=np.int32), "mask": np.ones(n, bool), **arrays}


def evaluate(
    task,
    state,
    batch: Mapping[str, np.ndarray],
    devices: int | Sequence[jax.Device] = 1,
    *,
    step_fn: Callable[..., Any] | None = None,
    context: Any = None,
) -> dict[str, np.ndarray]:
    """The summed outputs of `step_fn` (default `task.eval_step`) on one evaluation batch over `devices`
    (with the loop's eval key, `key(0)`), as numpy arrays."""
    devices = _devices(devices)
    step = parallel.data_parallel(step_fn or task.eval_step, devices, context=context)
    out = step(parallel.replicate(state, devices), parallel.shard(eval_batch(batch), len(devices)), jax.random.key(0))
    return jax.device_get(jax.tree.map(lambda x: x[0], out))


def evaluator(task, state, batch: Mapping[str, np.ndarray], context: Any = None) -> Callable[..., dict]:
    """The `evaluate(step_fn) -> totals` a task's `final_evaluation` receives, over one batch on one device."""
    return lambda step_fn: evaluate(task, state, batch, step_fn=step_fn, context=context)


def compose_with(*overrides: str):
    """The config `python -m experiments.run OVERRIDES` composes (schemas registered)."""
    from hydra import compose, initialize_config_dir

    from experiments.config import register

    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_settings(cfg) -> dict[str, Any]:
    """The plain settings `jaxdl.experiment.run` receives from a composed config."""
    from omegaconf import OmegaConf

    from experiments.jobs import RUN_KEYS

    settings = OmegaConf.to_container(cfg, resolve=True)
    return {k: settings[k] for k in RUN_KEYS if k in settings}


def build_model_and_task(settings: Mapping[str, Any], spec):
    """The model and task `jaxdl.build` makes of run settings for data described by `spec`."""
    from jaxdl import build

    model = build.build_model(settings["model"], spec, precision=settings.get("precision", "auto"))
    return model, build.build_task(settings["task"], model, spec)


def write_run(run_dir: pathlib.Path, settings: Mapping[str, Any], spec, example: Mapping[str, np.ndarray]) -> None:
    """A run folder as a finished run leaves it for `jaxdl.runs`: manifest.json (settings and what was built
    for data `spec`) and a checkpoint of the initial state at step 0."""
    from jaxdl import build, runs, settings as schema
    from jaxdl.training.checkpoint import Checkpointer

    run_dir.mkdir(parents=True)
    built = {
        "data_spec": schema.plain(dataclasses.asdict(spec)),
        "model": build.resolve_model(settings["model"], spec),
        "task": build.resolve_task(settings["task"], spec),
        "steps_per_epoch": 1,
    }
    (run_dir / "manifest.json").write_text(json.dumps({"settings": settings, "built": built}, indent=2))
    task = runs.build_task(run_dir)
    tx = build.build_optimizer(settings["optimizer"], total_steps=10**6, steps_per_epoch=1)
    checkpointer = Checkpointer(run_dir / "checkpoints")
    checkpointer.save(0, task.init_state(jax.random.key(0), tx, example), meta={}, metrics={})
    checkpointer.close()


def compilations(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn's result, how many XLA programs JAX compiled while it ran)."""
    events = []

    def count(event: str, duration_s: float, **kwargs: Any) -> None:
        if event == backend.COMPILE_EVENT:
            events.append(duration_s)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        return fn(), len(events)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
