"""From settings to a model, its task and its optimizer: the one place a run is built.

Training (`jaxdl.experiment`), reading a finished run back (`jaxdl.runs`) and
the benchmark (`scripts.benchmark`) all build through here, from the same
plain settings that `manifest.json` records:

  spec = data_spec(builder, data)                 # facts of the prepared dataset
  model = build_model(settings["model"], spec, precision=...)
  task = build_task(settings["task"], model, spec)
  tx = build_optimizer(settings["optimizer"], total_steps=..., steps_per_epoch=...)

Settings that describe the data (image shape, vocabulary size, context
length, output width, class names; `jaxdl.settings.MODEL_DATA_FIELDS` and
`TASK_DATA_FIELDS`) are taken from the dataset when left unset, and checked
against it when set, so a model and a dataset that do not fit fail here, in
one line, before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxdl import settings as schema
from jaxdl.errors import SettingsError
from jaxdl.models import MODELS
from jaxdl.tasks import TASKS, Task
from jaxdl.training import optim

PRECISIONS = ("auto", "float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Facts of a prepared dataset that models and tasks take as settings.

    Attributes:
      name: the dataset.
      image_shape: (H, W, C) of its `image` feature, or None.
      num_classes, class_names: of its `label` feature when that is a class label.
      num_outputs: the width of a supervised model's output: the classes, or
        the number of regression targets.
      vocab_size, vocabulary: token count and table of a token dataset.
      seq_len: T, tokens per window of a windowed dataset.
      family_names: attack family names of a trace dataset.
    """

    name: str
    image_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    num_outputs: int | None = None
    vocab_size: int | None = None
    vocabulary: str | None = None
    seq_len: int | None = None
    family_names: tuple[str, ...] | None = None

    def get(self, field: str) -> Any:
        """The fact a model or task field of this name takes (max_len is the context, seq_len)."""
        return self.seq_len if field == "max_len" else getattr(self, field, None)


def spec_from_record(record: Mapping[str, Any]) -> DataSpec:
    """A `DataSpec` from its plain record (manifest.json "built"/"data_spec"): lists become tuples."""
    return DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


def data_spec(builder: Any, data: Mapping[str, Any]) -> DataSpec:
    """Reads the facts of a prepared TFDS builder and of the run's data settings.

    Args:
      builder: a prepared `tfds.core.DatasetBuilder` (its `info.features` are read).
      data: the run's data settings (a windowed dataset's `seq_len`,
        `vocabulary` or `vocab_size` live there).
    """
    import tensorflow_datasets as tfds

    features = builder.info.features
    facts: dict[str, Any] = {"name": data["name"]}
    if "image" in features:
        facts["image_shape"] = tuple(int(d) for d in features["image"].shape)
    label = features["label"] if "label" in features else None
    if isinstance(label, tfds.features.ClassLabel):
        facts["num_classes"] = facts["num_outputs"] = int(label.num_classes)
        facts["class_names"] = tuple(label.names)
    if "target" in features:
        shape = tuple(features["target"].shape)
        facts["num_outputs"] = int(shape[0]) if shape else 1
    if "family" in features and isinstance(features["family"], tfds.features.ClassLabel):
        facts["family_names"] = tuple(features["family"].names)
    if data.get("vocabulary") is not None:
        facts["vocabulary"] = str(data["vocabulary"])
        facts["vocab_size"] = len(facts["vocabulary"])
    elif data.get("vocab_size") is not None:
        facts["vocab_size"] = int(data["vocab_size"])
    if data.get("seq_len") is not None:
        facts["seq_len"] = int(data["seq_len"])
    return DataSpec(**facts)


def compute_dtype(precision: str, platform: str | None = None) -> jnp.dtype:
    """The compute dtype of `precision` on `platform`.

    "auto" is bfloat16 on GPU and TPU, float32 on CPU (where bfloat16 is slower
    and less exact); "float32" and "bfloat16" are themselves. Parameters stay in
    their `param_dtype` (float32 by default) either way.

    Raises:
      SettingsError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise SettingsError(f"precision={precision!r}; choose one of {PRECISIONS}.")
    if precision == "auto":
        platform = platform or jax.default_backend()
        return jnp.dtype(jnp.bfloat16 if platform in ("gpu", "cuda", "rocm", "tpu") else jnp.float32)
    return jnp.dtype(precision)


def _value(setting: schema.Setting, value: Any) -> Any:
    """A plain setting value as the constructor takes it: tuples for lists, dtypes, nested dataclasses."""
    if value is None:
        return None
    target = setting.type
    if typing.get_origin(target) is typing.Union:
        target = next(a for a in typing.get_args(target) if a is not type(None))
    if dataclasses.is_dataclass(target) and isinstance(value, Mapping):
        nested = {s.name: s for s in schema.of_dataclass(target)}
        schema.check_keys(setting.name, value, list(nested.values()))
        return target(**{k: _value(nested[k], v) for k, v in value.items()})
    if setting.name == "param_dtype":
        return jnp.dtype(value)
    if isinstance(value, list):
        return tuple(_value(dataclasses.replace(setting, type=Any), v) for v in value)
    return value


def _from_data(where: str, field: str, value: Any, spec: DataSpec) -> Any:
    """The value of a data-derived field: the data's when unset, the given one when it agrees with the data."""
    fact = spec.get(field)
    if value is None:
        return fact
    if fact is None:
        return value
    given = tuple(value) if isinstance(value, (list, tuple)) else value
    if field == "max_len" and given >= fact:
        return given  # a context longer than the windows is allowed
    if given != fact:
        raise SettingsError(
            f"{where}.{field}={list(given) if isinstance(given, tuple) else given} does not fit data={spec.name}, "
            f"which gives {field}={list(fact) if isinstance(fact, tuple) else fact}; leave {where}.{field} unset to "
            f"take the data's value, or choose other data."
        )
    return given


def resolve_model(settings: Mapping[str, Any], spec: DataSpec) -> dict[str, Any]:
    """The model settings with the data's facts filled in: plain values, what `manifest.json` records as built.

    Raises:
      SettingsError: unknown model or setting, or a model that does not fit the data.
    """
    settings = dict(settings)
    name = settings.pop("name")
    if name not in MODELS:
        raise SettingsError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    fields = {s.name: s for s in schema.of_module(MODELS[name])}
    schema.check_keys(f"model={name}", settings, list(fields.values()))
    for field, setting in fields.items():
        if setting.from_data:
            value = _from_data("model", field, settings.get(field), spec)
            if value is None:
                needs = {"image_shape": "images", "vocab_size": "tokens", "max_len": "windows of tokens"}
                raise SettingsError(
                    f"model={name} needs {needs.get(field, field)} ({field}) but data={spec.name} has none; "
                    f"choose data that has them, or set model.{field}."
                )
            settings[field] = schema.plain(value)
    return {"name": name, **settings}


def build_model(settings: Mapping[str, Any], spec: DataSpec, *, precision: str = "auto") -> nn.Module:
    """Returns `MODELS[name](**settings)` with the data's facts filled in and the compute dtype of `precision`.

    Args:
      settings: {"name": a key of MODELS, **the module's settings}.
      spec: the data the model will see (`DataSpec(name)` alone when every
        data-derived setting is given, as in a resolved record).
      precision: "auto", "float32" or "bfloat16" (see `compute_dtype`); for models with a `dtype` field.

    Raises:
      SettingsError: unknown model or setting, a model that does not fit the
        data, or settings the model refuses.
    """
    settings = resolve_model(settings, spec)
    name = settings.pop("name")
    cls = MODELS[name]
    fields = {s.name: s for s in schema.of_module(cls)}
    kwargs = {k: _value(fields[k], v) for k, v in settings.items()}
    if any(f.name == "dtype" for f in dataclasses.fields(cls)):
        kwargs["dtype"] = compute_dtype(precision)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise SettingsError(f"model={name}: {error}") from error


def resolve_task(settings: Mapping[str, Any], spec: DataSpec) -> dict[str, Any]:
    """The task settings with the data's facts (classes, vocabulary) filled in, as plain values.

    Raises:
      SettingsError: unknown task or setting, or a setting that disagrees with the data.
    """
    settings = dict(settings)
    name = settings.pop("name")
    if name not in TASKS:
        raise SettingsError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}.")
    fields = {s.name: s for s in schema.of_task(TASKS[name])}
    schema.check_keys(f"task={name}", settings, list(fields.values()))
    for field, setting in fields.items():
        if setting.from_data:
            value = _from_data("task", field, settings.get(field), spec)
            if value is None:
                settings.pop(field, None)  # the data has no such fact: the constructor's default
            else:
                settings[field] = schema.plain(value)
    return {"name": name, **settings}


def build_task(settings: Mapping[str, Any], model: nn.Module, spec: DataSpec) -> Task:
    """Returns `TASKS[name](model, **settings)` with the data's facts (classes, vocabulary) filled in.

    Raises:
      SettingsError: unknown task or setting, or settings the task refuses.
    """
    settings = resolve_task(settings, spec)
    name = settings.pop("name")
    cls = TASKS[name]
    fields = {s.name: s for s in schema.of_task(cls)}
    kwargs = {k: _value(fields[k], v) for k, v in settings.items()}
    try:
        return cls(model, **kwargs)
    except (ValueError, TypeError, KeyError) as error:
        raise SettingsError(f"task={name}: {error}") from error


def optimizer_settings(name: str) -> tuple[schema.Setting, ...]:
    """The settings of optimizer `name`: learning rate, its builder's keywords, clipping and the schedule."""
    if name not in optim.OPTIMIZERS:
        raise SettingsError(f"Unknown optimizer {name!r}; choose one of {sorted(optim.OPTIMIZERS)}.")
    return (
        schema.Setting("learning_rate", float, optim.DEFAULT_LEARNING_RATES[name]),
        *schema.of_callable(optim.OPTIMIZERS[name], skip=("schedule",)),
        schema.Setting("grad_clip_norm", typing.Optional[float], None),
    )


def schedule_settings() -> tuple[schema.Setting, ...]:
    """The settings of a learning-rate schedule (`optim.make_schedule`'s keywords, and its `name`)."""
    return (
        schema.Setting("name", str, "constant"),
        *schema.of_callable(optim.make_schedule, skip=("name", "learning_rate", "total_steps", "steps_per_epoch")),
    )


def build_optimizer(
    settings: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Returns the optax optimizer of `settings` with its learning-rate schedule over the run.

    Args:
      settings: {"name", "learning_rate", the optimizer's own settings,
        "grad_clip_norm", "schedule": {"name", ...}} (see `optimizer_settings`).
      total_steps, steps_per_epoch: the run's length, optimizer steps.

    Raises:
      SettingsError: unknown optimizer, schedule or setting.
    """
    settings = dict(settings)
    name = settings.pop("name")
    schedule = dict(settings.pop("schedule", None) or {})
    schema.check_keys(f"optimizer={name}", settings, optimizer_settings(name))
    schema.check_keys("optimizer.schedule", schedule, schedule_settings())
    learning_rate = settings.pop("learning_rate", optim.DEFAULT_LEARNING_RATES[name])
    schedule_name = schedule.pop("name", "constant")
    schedule = {k: tuple(v) if isinstance(v, list) else v for k, v in schedule.items()}
    try:
        lr = optim.make_schedule(
            schedule_name, learning_rate, total_steps=total_steps, steps_per_epoch=steps_per_epoch, **schedule
        )
    except ValueError as error:
        raise SettingsError(f"optimizer.schedule: {error}") from error
    return optim.make_optimizer(name, lr, **settings)
