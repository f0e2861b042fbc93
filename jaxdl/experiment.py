"""Build a run from plain settings and train it: the library's entry point.

`run(...)` takes plain dicts (what `experiments/run.py` makes of the Hydra
config) so that the library never depends on Hydra; every key is forwarded to
the constructor it names, and an unknown key fails with the list of valid ones.
"""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data import sequences, sources
from jaxdl.data.pipeline import ArrayLoader
from jaxdl.data.streaming import StreamingLoader
from jaxdl.metrics.writers import MetricWriter
from jaxdl.models import MODELS
from jaxdl.provenance import environment, manifest
from jaxdl.tasks import TASKS, Task
from jaxdl.training import optim, parallel
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.loop import LoopConfig, fit

def _construct(kind: str, cls: type, settings: Mapping[str, Any], *args: Any) -> Any:
    """`cls(*args, **settings)` with a clear error naming unknown settings."""
    params = inspect.signature(cls).parameters
    unknown = sorted(set(settings) - set(params))
    if unknown:
        valid = sorted(p for p in params if p not in ("parent", "name") and params[p].kind is not inspect.Parameter.VAR_POSITIONAL)
        raise TypeError(f"{kind} {cls.__name__} has no setting(s) {unknown}; valid settings: {valid}.")
    return cls(*args, **settings)


def build_model(name: str, **settings: Any) -> nn.Module:
    """Returns `MODELS[name](**settings)`; dtype names ("bfloat16") become dtypes.

    Raises:
      ValueError: unknown model name (the message lists the known ones).
      TypeError: a setting the model does not have.
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    for key in ("dtype", "param_dtype"):
        if isinstance(settings.get(key), str):
            settings[key] = jnp.dtype(settings[key])
    for key, value in settings.items():
        if isinstance(value, list):
            settings[key] = tuple(value)
    return _construct("Model", MODELS[name], settings)


def build_task(name: str, model: nn.Module, **settings: Any) -> Task:
    """Returns `TASKS[name](model, **settings)`.

    Raises:
      ValueError: unknown task name. TypeError: a setting the task does not have.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}.")
    return _construct("Task", TASKS[name], settings, model)


def _streaming_loader(
    data: Mapping[str, Any], builder: Any, objective: Task, seed: int, process: Mapping[str, int]
) -> StreamingLoader | None:
    """The training split as a `StreamingLoader` when `data.streaming` is set, else None.

    Only the training split streams; the evaluation split is read into memory
    (tasks draw their pictures from it).

    Raises:
      ValueError: the dataset is cut into windows in memory, or the task
        prepares the whole training split in memory; both need data.streaming=false.
    """
    if not data.get("streaming"):
        return None
    if data["name"] in sequences.EXAMPLES:
        raise ValueError(
            f"data.streaming=true reads records as they are stored, but {data['name']} is cut into windows in memory "
            "(jaxdl.data.sequences); set data.streaming=false."
        )
    if type(objective).prepare_train_split is not Task.prepare_train_split:
        raise ValueError(
            f"Task {type(objective).__name__} prepares the whole training split in memory (prepare_train_split); "
            "set data.streaming=false."
        )
    return StreamingLoader(
        builder.as_data_source(split=data.get("train_split", "train")),
        data["batch_size"],
        shuffle=True,
        seed=seed,
        drop_remainder=True,
        limit=data.get("train_limit"),
        num_workers=data.get("num_workers", 0),
        prefetch_batches=data.get("prefetch_batches", 2),
        **process,
    )


def write_json(path: pathlib.Path, payload: Mapping[str, Any]) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def run(
    *,
    seed: int,
    model: Mapping[str, Any],
    task: Mapping[str, Any],
    data: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    trainer: Mapping[str, Any],
    run_dir: os.PathLike | str,
    distributed: Mapping[str, Any] | None = None,
    on_evaluation: Callable[[int, Mapping[str, float]], str | None] | None = None,
) -> dict[str, Any]:
    """Prepares data, builds model, task and optimizer, trains, and writes results.json.

    Args:
      seed: seeds parameter init, data order and every random stream.
      model: {"name": registered model, **constructor settings}.
      task: {"name": registered task, **constructor settings}.
      data: name, batch_size, eval_batch_size, data_dir, manual_dir,
        train_split, eval_split, train_limit, eval_limit.
      optimizer: name, learning_rate, schedule {name, ...} and the
        optimizer's own settings (see `jaxdl.training.optim`).
      trainer: LoopConfig fields plus num_devices, tensorboard and checkpoint
        {keep_last}; `monitor`/`mode` default to the task's.
      run_dir: output folder (created); rerunning into the same folder resumes.
        With several processes it must be the same folder on every host.
      distributed: {"enabled", "coordinator_address", "num_processes",
        "process_id"}: when enabled, `jax.distributed.initialize` joins this
        process to a multi-host run (None values are detected, e.g. under
        SLURM). Each process then reads its own slice of every global batch,
        steps run under `jax.pmap` across all processes, and only process 0
        writes logs, pictures and results.
      on_evaluation: passed to `jaxdl.training.loop.fit`: sees each
        evaluation's metrics and may stop the run (a search's pruner).

    Returns:
      The results dict also written to `run_dir/results.json`.
    """
    t_start = time.perf_counter()
    distributed = dict(distributed or {})
    if distributed.pop("enabled", False):
        jax.distributed.initialize(**{k: v for k, v in distributed.items() if v is not None})
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    model_settings, task_settings = dict(model), dict(task)
    data, trainer, optimizer = dict(data), dict(trainer), dict(optimizer)

    module = build_model(model_settings.pop("name"), **model_settings)
    objective = build_task(task_settings.pop("name"), module, **task_settings)

    builder = sources.prepare(data["name"], data_dir=data.get("data_dir"), manual_dir=data.get("manual_dir"))
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    streamed = _streaming_loader(data, builder, objective, seed, process)  # None: the split is read into memory
    if streamed is not None:
        train_arrays = streamed.example()  # one record: shapes for init; batches are read while training
    else:
        train_arrays = sources.load_arrays(builder, data.get("train_split", "train"), limit=data.get("train_limit"))
    eval_arrays = sources.load_arrays(builder, data.get("eval_split", "test"), limit=data.get("eval_limit"))
    dataset = sources.describe(builder)
    if is_main:
        record, diff = manifest(
            settings=dict(seed=seed, model=model, task=task, data=data, optimizer=optimizer, trainer=trainer),
            dataset=dataset,
        )
        write_json(run_dir / "manifest.json", record)
        if diff:
            (run_dir / "git.diff").write_text(diff)
    train_arrays, eval_arrays = sequences.make_examples(data, train_arrays, eval_arrays)  # text/traces -> windows
    train_arrays = objective.prepare_train_split(train_arrays)
    eval_arrays = objective.prepare_eval_split(eval_arrays)
    devices = parallel.select_devices(trainer.pop("num_devices", None))
    train_loader = streamed or ArrayLoader(
        train_arrays, data["batch_size"], shuffle=True, seed=seed, drop_remainder=True, **process
    )
    eval_loader = ArrayLoader(
        eval_arrays, data.get("eval_batch_size") or data["batch_size"], shuffle=False, drop_remainder=False, **process
    )
    local = train_loader.batch_size // process["process_count"]
    if local % len(devices) or eval_loader.batch_size // process["process_count"] % len(devices):
        raise ValueError(
            f"data.batch_size={train_loader.batch_size} and data.eval_batch_size={eval_loader.batch_size} must split "
            f"evenly over {len(devices)} devices x {process['process_count']} processes."
        )

    checkpoint = dict(trainer.pop("checkpoint", None) or {})
    tensorboard = trainer.pop("tensorboard", True)
    if trainer.get("monitor") is None:
        trainer["monitor"] = objective.default_metric
    if trainer.get("mode") is None:
        trainer["mode"] = objective.default_mode
    if jax.process_count() > 1:
        trainer["backend"] = "pmap"  # pmap maps over every process's local devices natively
        trainer["progress"] = trainer.get("progress", True) and is_main
    loop_config = _construct("Trainer setting", LoopConfig, trainer)

    schedule_settings = dict(optimizer.pop("schedule", None) or {"name": "constant"})
    schedule = optim.make_schedule(
        schedule_settings.pop("name"),
        optimizer.pop("learning_rate"),
        total_steps=loop_config.total_steps(train_loader.steps_per_epoch),
        steps_per_epoch=train_loader.steps_per_epoch,
        **schedule_settings,
    )
    tx = optim.make_optimizer(optimizer.pop("name"), schedule, **optimizer)

    init_key = jax.random.fold_in(jax.random.key(seed), 0)
    example = {k: v[:1] for k, v in train_arrays.items()}
    state = objective.init_state(init_key, tx, example)

    checkpointer = Checkpointer(
        run_dir / "checkpoints", keep_last=checkpoint.get("keep_last", 2), best_metric=loop_config.monitor, mode=loop_config.mode
    )
    writer = MetricWriter(run_dir, tensorboard=tensorboard) if is_main else None
    setup_s = time.perf_counter() - t_start
    try:
        results = fit(
            objective,
            state,
            config=loop_config,
            train_loader=train_loader,
            eval_loader=eval_loader,
            run_dir=run_dir,
            seed=seed,
            devices=devices,
            checkpointer=checkpointer,
            writer=writer,
            on_evaluation=on_evaluation,
        )
    finally:
        checkpointer.close()
        if writer is not None:
            writer.close()
    results.update(
        setup_s=setup_s,
        parameters=int(sum(np.size(x) for x in jax.tree.leaves(state.params))),
        dataset={**dataset, "train_examples": train_loader.size, "eval_examples": eval_loader.size},
        environment=environment(),
    )
    if is_main:
        write_json(run_dir / "results.json", results)
    return results
