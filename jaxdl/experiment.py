"""Train one run from plain settings: the library's entry point.

`run(...)` takes plain dicts (what `experiments/run.py` makes of the Hydra
config, and what `manifest.json` records), so the library never depends on
Hydra. Every setting is forwarded to the constructor that owns it
(`jaxdl.build`); an unknown one fails with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxdl import backend, build, errors, records, run_folder, settings as schema
from jaxdl.data import sequences, sources
from jaxdl.data.pipeline import ArrayLoader
from jaxdl.data.streaming import StreamingLoader
from jaxdl.errors import SettingsError
from jaxdl.evaluators.fid import FID
from jaxdl.metrics.writers import MetricWriter
from jaxdl.provenance import environment, manifest
from jaxdl.tasks.base import RunFacts, Task, initial_state
from jaxdl.training import parallel
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.config import CheckpointSettings, TrainerSettings
from jaxdl.training.loop import fit


#: Final evaluators a run can choose by name (`evaluator=fid`); each is built from its constructor's settings.
EVALUATORS: dict[str, type] = {"fid": FID}


def trainer_settings(trainer: Mapping[str, Any]) -> TrainerSettings:
    """The `trainer` settings as a checked `TrainerSettings`.

    Raises:
      SettingsError: an unknown key (with the closest valid one) or a value the loop refuses.
    """
    trainer = dict(trainer)
    checkpoint = dict(trainer.pop("checkpoint", None) or {})
    schema.check_keys("trainer", trainer, schema.of_dataclass(TrainerSettings))
    schema.check_keys("trainer.checkpoint", checkpoint, schema.of_dataclass(CheckpointSettings))
    try:
        return TrainerSettings(**trainer, checkpoint=CheckpointSettings(**checkpoint))
    except ValueError as error:
        raise SettingsError(str(error)) from error


def data_settings(data: Mapping[str, Any]) -> tuple[sources.DataSettings, dict[str, Any]]:
    """Splits the `data` settings into the common ones and the window maker's (e.g. seq_len).

    Raises:
      SettingsError: unknown dataset or key.
    """
    data = dict(data)
    if data.get("name") not in sources.BUILDERS:
        raise SettingsError(f"Unknown dataset {data.get('name')!r}; choose one of {sorted(sources.BUILDERS)}.")
    common = {f.name for f in dataclasses.fields(sources.DataSettings)}
    maker = sequences.EXAMPLES.get(data["name"])
    windows = schema.of_callable(maker, skip=("train", "eval", "train_limit", "eval_limit")) if maker else ()
    schema.check_keys(f"data={data['name']}", data, [*schema.of_dataclass(sources.DataSettings), *windows])
    return sources.DataSettings(**{k: v for k, v in data.items() if k in common}), {
        k: v for k, v in data.items() if k not in common
    }


def _streaming_loader(
    data: sources.DataSettings, builder: Any, task: Task, batch_size: int, seed: int, process: Mapping[str, int]
) -> StreamingLoader | None:
    """The training split as a `StreamingLoader` when `data.streaming` is set, else None.

    Only the training split streams; the evaluation split is read into memory.

    Raises:
      SettingsError: the dataset is cut into windows in memory, or the task
        prepares the whole training split in memory; both need data.streaming=false.
    """
    if not data.streaming:
        return None
    if data.name in sequences.EXAMPLES:
        raise SettingsError(
            f"data.streaming=true reads records as they are stored, but {data.name} is cut into windows in memory "
            "(jaxdl.data.sequences); set data.streaming=false."
        )
    if not task.streams:
        raise SettingsError(
            f"Task {type(task).__name__} prepares the whole training split in memory; set data.streaming=false."
        )
    return StreamingLoader(
        builder.as_data_source(split=data.train_split),
        batch_size,
        shuffle=True,
        seed=seed,
        drop_remainder=True,
        limit=data.train_limit,
        num_workers=data.num_workers,
        prefetch_batches=data.prefetch_batches,
        **process,
    )


def run(
    *,
    seed: int,
    model: Mapping[str, Any],
    task: Mapping[str, Any],
    data: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    trainer: Mapping[str, Any],
    run_dir: os.PathLike | str,
    precision: str = "auto",
    distributed: Mapping[str, Any] | None = None,
    evaluator: Mapping[str, Any] | None = None,
    allow_changed: Sequence[str] = (),
    on_evaluation: Callable[[int, Mapping[str, float]], str | None] | None = None,
) -> dict[str, Any]:
    """Prepares data, builds model, task and optimizer, trains, and writes results.json.

    Args:
      seed: seeds parameter init, data order and every random stream.
      model: {"name": registered model, **its settings}; settings that
        describe the data (image shape, vocabulary size) are taken from it when unset.
      task: {"name": registered task, **its settings}.
      data: `jaxdl.data.sources.DataSettings` fields and, for windowed
        datasets, the window maker's (seq_len, ...).
      optimizer: name, learning_rate, the optimizer's own settings,
        grad_clip_norm and schedule {name, ...} (see `jaxdl.build.build_optimizer`).
      trainer: `jaxdl.training.config.TrainerSettings` fields (batch sizes,
        run length, evaluation and checkpoint cadence, ...).
      run_dir: output folder (created); rerunning into the same folder resumes.
        With several processes it must be the same folder on every host.
      precision: compute precision, "auto" (bfloat16 on GPU/TPU, float32 on
        CPU), "float32" or "bfloat16"; recorded in manifest.json as resolved.
      distributed: {"enabled", "coordinator_address", "num_processes",
        "process_id"}: when enabled, `jax.distributed.initialize` joins this
        process to a multi-host run (None values are detected, e.g. under
        SLURM). Each process then reads its own slice of every global batch,
        steps run under `jax.pmap` across all processes, and only process 0
        writes logs, pictures and results.
      evaluator: {"name": a key of `EVALUATORS`, **its settings} run on the
        final state (e.g. FID), or None.
      allow_changed: settings (dotted keys or patterns) that may differ from
        those recorded in an existing `run_dir` (see `jaxdl.run_folder.check`);
        any other difference refuses to run before the folder is touched.
      on_evaluation: passed to `jaxdl.training.loop.fit`: sees each
        evaluation's metrics and may stop the run (a search's pruner).

    Returns:
      The results dict also written to `run_dir/results.json`.

    Raises:
      SettingsError: a setting is unknown or does not fit the others or the data.
      RunFolderError: `run_dir` holds a run with other settings.
      UserError: other faults of the data or the folders (`jaxdl.errors`).
    """
    t_start = time.perf_counter()
    distributed_settings = distributed
    distributed = dict(distributed or {})
    if distributed.pop("enabled", False):
        jax.distributed.initialize(**{k: v for k, v in distributed.items() if v is not None})
    run_dir = pathlib.Path(run_dir)
    recorded = dict(seed=seed, precision=precision, model=model, task=task, data=data, optimizer=optimizer,
                    trainer=trainer, distributed=distributed_settings, evaluator=evaluator)
    decision = run_folder.check(recorded, run_dir, allow_changed=allow_changed)  # before anything is written
    for change in decision.allowed:
        print(f"continuing {run_dir} with {change}", file=sys.stderr)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise (errors.storage_error(error, run_dir, doing="creating the run folder") or error) from error
    is_main = jax.process_index() == 0
    loop_settings = trainer_settings(trainer)
    data_common, windows = data_settings(data)
    compute = build.compute_dtype(precision)

    builder = sources.prepare(data_common.name, data_dir=data_common.data_dir, manual_dir=data_common.manual_dir)
    spec = build.data_spec(builder, data)
    module = build.build_model(model, spec, precision=precision)
    objective = build.build_task(task, module, spec)
    final_evaluator = _evaluator(evaluator)

    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    batch_size = loop_settings.batch_size
    streamed = _streaming_loader(data_common, builder, objective, batch_size, seed, process)
    if streamed is not None:
        train_arrays = streamed.example()  # one record: shapes for init; batches are read while training
    else:
        train_arrays = sources.load_arrays(builder, data_common.train_split, limit=data_common.train_limit, role="train")
    eval_arrays = sources.load_arrays(builder, data_common.eval_split, limit=data_common.eval_limit, role="eval")
    dataset = sources.describe(builder)
    train_arrays, eval_arrays = sequences.make_examples(
        {"name": data_common.name, "train_limit": data_common.train_limit, "eval_limit": data_common.eval_limit,
         **windows}, train_arrays, eval_arrays,
    )  # text/traces -> windows
    _check_features(objective, train_arrays, task, data_common.name)
    raw_eval = eval_arrays
    facts = RunFacts(batch_size=batch_size, epochs=loop_settings.epochs, max_steps=loop_settings.max_steps)
    prepared = objective.prepare(train_arrays, eval_arrays, facts)
    if is_main:
        built = {
            "data_spec": schema.plain(dataclasses.asdict(spec)),
            "model": build.resolve_model(model, spec),
            "task": build.resolve_task(task, spec),
            "compute_dtype": compute.name,
            "backend": {"platform": jax.default_backend(), **backend.describe()},
            "batch_size": batch_size,
            "steps_per_epoch": facts.steps_per_epoch(len(next(iter(prepared.train.values())))) if streamed is None
            else None,
        }
        record, diff = manifest(settings=recorded, built=built, dataset=dataset)
        records.write_json(run_dir / "manifest.json", run_folder.updated_manifest(decision.recorded, record, decision))
        if diff:
            (run_dir / "git.diff").write_text(diff)
    devices = parallel.select_devices(loop_settings.num_devices)
    train_loader = streamed or ArrayLoader(
        prepared.train, batch_size, shuffle=True, seed=seed, drop_remainder=True, **process
    )
    eval_loader = ArrayLoader(
        prepared.eval, loop_settings.eval_batch_size or batch_size, shuffle=False, drop_remainder=False, **process
    )
    local = train_loader.batch_size // process["process_count"]
    if local % len(devices) or eval_loader.batch_size // process["process_count"] % len(devices):
        raise SettingsError(
            f"trainer.batch_size={train_loader.batch_size} and trainer.eval_batch_size={eval_loader.batch_size} must "
            f"split evenly over {len(devices)} devices x {process['process_count']} processes."
        )

    loop_config = loop_settings.loop_config(monitor=objective.default_metric, mode=objective.default_mode)
    if jax.process_count() > 1:  # pmap maps over every process's local devices natively
        loop_config = dataclasses.replace(loop_config, backend="pmap", progress=loop_config.progress and is_main)
    steps_per_epoch = train_loader.steps_per_epoch
    tx = build.build_optimizer(
        optimizer, total_steps=loop_config.total_steps(steps_per_epoch), steps_per_epoch=steps_per_epoch
    )
    init_key = jax.random.fold_in(jax.random.key(seed), 0)
    example = {k: v[:1] for k, v in train_arrays.items()}
    state = initial_state(objective, init_key, tx, example, prepared.context)

    checkpointer = Checkpointer(
        run_dir / "checkpoints", keep_last=loop_settings.checkpoint.keep_last, best_metric=loop_config.monitor,
        mode=loop_config.mode,
    )
    writer = MetricWriter(run_dir, tensorboard=loop_settings.tensorboard) if is_main else None
    setup_s = time.perf_counter() - t_start
    try:
        results = fit(
            objective,
            state,
            prepared=prepared,
            config=loop_config,
            train_loader=train_loader,
            eval_loader=eval_loader,
            run_dir=run_dir,
            seed=seed,
            devices=devices,
            checkpointer=checkpointer,
            writer=writer,
            on_evaluation=on_evaluation,
            evaluate_final=None if final_evaluator is None else (lambda final: final_evaluator(objective, final, raw_eval)),
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
        results["status"] = "pruned" if results.get("stop_reason") == "pruned" else "finished"
        results = run_folder.merge_results(records.read_record(run_dir / "results.json")[0], results)
        records.write_json(run_dir / "results.json", results)
    return results


def _check_features(task: Task, arrays: Mapping[str, np.ndarray], settings: Mapping[str, Any], data: str) -> None:
    """Raises SettingsError when the task reads batch keys the data does not give."""
    missing = [k for k in task.required_features() if k not in arrays]
    if missing:
        raise SettingsError(
            f"task={settings['name']} reads {missing} but data={data} gives {sorted(arrays)}; choose data with "
            f"{', '.join(missing)} or another task."
        )


def _evaluator(settings: Mapping[str, Any] | None) -> Callable[..., dict[str, float]] | None:
    """The configured final evaluator, built from its settings (None: none)."""
    if not settings:
        return None
    settings = dict(settings)
    name = settings.pop("name")
    if name not in EVALUATORS:
        raise SettingsError(f"Unknown evaluator {name!r}; choose one of {sorted(EVALUATORS)}.")
    cls = EVALUATORS[name]
    schema.check_keys(f"evaluator={name}", settings, schema.of_callable(cls))
    return cls(**settings)


