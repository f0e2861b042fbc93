"""Typed schemas of `conf/`, derived from the constructors that use the settings.

Nothing here is written by hand per model or task: each model's schema is the
dataclass fields of its Flax module, each task's the keyword parameters of
its constructor, each optimizer's those of its builder, each dataset's the
common data settings plus its window maker's (`jaxdl.settings`). They are
stored in Hydra's ConfigStore under the `schema/` groups, which option files
extend (`- /schema/model/vae@model`), so a misspelled key, a value of the
wrong type (`model.latent_dim=abc`) or an unknown option fails when Hydra
composes the config, before any JAX work starts. Schemas are not options of
the groups a command line picks from (`model=vae_schema` does not exist).
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from jaxdl import build, settings as schema
from jaxdl.data import sequences, sources
from jaxdl.experiment import EVALUATORS
from jaxdl.models import MODELS
from jaxdl.tasks import TASKS
from jaxdl.training.config import TrainerSettings
from jaxdl.training.optim import OPTIMIZERS


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def dataclass_of(name: str, settings: tuple[schema.Setting, ...], *, first: tuple[schema.Setting, ...] = ()) -> type:
    """A config dataclass with one typed field per setting (nested dataclasses become nested schemas)."""
    fields = []
    for s in (*first, *settings):
        kind, default = s.type, s.default
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        inner = args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind
        if dataclasses.is_dataclass(inner):
            nested = dataclass_of(f"{name}{_camel(s.name)}", schema.of_dataclass(inner))
            kind = Optional[nested] if inner is not kind else nested
            value = schema.plain(default) if default not in (None, schema.REQUIRED) else default
            if value is None:
                fields.append((s.name, kind, field(default=None)))
            else:
                fields.append((s.name, kind, field(default_factory=lambda n=nested, v=value: n(**v))))
            continue
        if default is schema.REQUIRED:
            fields.append((s.name, kind, field(default=MISSING)))
        elif isinstance(default, (list, dict)):
            fields.append((s.name, kind, field(default_factory=lambda v=default: copy.deepcopy(v))))
        else:
            fields.append((s.name, kind, field(default=default)))
    return dataclasses.make_dataclass(name, fields)


def _named(name: str) -> tuple[schema.Setting, ...]:
    return (schema.Setting("name", str, name),)


def model_schema(name: str) -> type:
    return dataclass_of(f"{_camel(name)}Model", schema.of_module(MODELS[name]), first=_named(name))


def task_schema(name: str) -> type:
    return dataclass_of(f"{_camel(name)}Task", schema.of_task(TASKS[name]), first=_named(name))


def optimizer_schema(name: str) -> type:
    schedule = dataclass_of("Schedule", build.schedule_settings())
    settings = build.optimizer_settings(name)
    cls = dataclass_of(f"{_camel(name)}Optimizer", settings, first=_named(name))
    return dataclasses.make_dataclass(
        f"{_camel(name)}OptimizerWithSchedule", [("schedule", schedule, field(default_factory=schedule))], bases=(cls,)
    )


def data_schema(name: str) -> type:
    common = [s for s in schema.of_dataclass(sources.DataSettings) if s.name != "name"]
    maker = sequences.EXAMPLES.get(name)
    windows = schema.of_callable(maker, skip=("train", "eval", "train_limit", "eval_limit")) if maker else ()
    return dataclass_of(f"{_camel(name)}Data", (*common, *windows), first=_named(name))


def evaluator_schema(name: str) -> type:
    return dataclass_of(f"{_camel(name)}Evaluator", schema.of_callable(EVALUATORS[name]), first=_named(name))


TrainerConfig = dataclass_of("Trainer", schema.of_dataclass(TrainerSettings))


@dataclass
class DistributedConfig:
    enabled: bool = False  # call jax.distributed.initialize before anything else
    coordinator_address: Optional[str] = None  # "host:port" of process 0 (None: detected, e.g. under SLURM)
    num_processes: Optional[int] = None  # None: detected
    process_id: Optional[int] = None  # None: detected


@dataclass
class ExpectedConfig:
    metric: str = MISSING  # e.g. eval/nll
    value: float = MISSING  # the published (or targeted) number, in the metric's unit
    comparison: str = "within"  # within (|measured - value| <= tolerance) | at_most | at_least
    tolerance: float = 0.0
    source: str = ""  # where the number comes from


@dataclass
class Config:
    seed: int = 0
    precision: str = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16
    compilation_cache_dir: Optional[str] = None  # persistent XLA cache (None: off)
    env: dict[str, str] = field(default_factory=dict)  # environment variables set before JAX starts
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    expected: Optional[ExpectedConfig] = None  # what scripts.reproduce checks a finished run against
    model: Any = MISSING
    task: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: Any = None  # a final evaluator (evaluator=fid) or none
    allow_changed: list[str] = field(default_factory=list)  # settings that may differ from a run already in the folder


def register() -> None:
    """Stores `config_schema` and one `schema/<group>/<name>` node per model, task, optimizer, dataset, evaluator."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name in MODELS:
        cs.store(group="schema/model", name=name, node=model_schema(name))
    for name in TASKS:
        cs.store(group="schema/task", name=name, node=task_schema(name))
    for name in OPTIMIZERS:
        cs.store(group="schema/optimizer", name=name, node=optimizer_schema(name))
    for name in sources.BUILDERS:
        cs.store(group="schema/data", name=name, node=data_schema(name))
    for name in EVALUATORS:
        cs.store(group="schema/evaluator", name=name, node=evaluator_schema(name))
