"""Settings read from the constructors that use them: one home per hyperparameter.

A model's settings are the dataclass fields of its Flax module; a task's, an
optimizer's or a window maker's are the keyword parameters of its constructor
or function. Their names, types and defaults are read from there, so adding a
field to a module is the only edit a new hyperparameter needs: the Hydra
schemas (`experiments/config.py`) and the checks here follow.

Two kinds of constructor field are not settings:

* run-time fields (`RUNTIME_FIELDS`), which the code sets while it runs: the
  collective `axis_name`, the Transformer's `decode` cache switch, the compute
  `dtype` (chosen by the run's single `precision` setting), Flax's `parent`/`name`;
* nothing else: every other field is a setting.

Fields in `MODEL_DATA_FIELDS` / `TASK_DATA_FIELDS` default to None here, meaning
"take it from the data" (image shape, vocabulary size, context length, output
width, class names): `jaxdl.build` fills them from the prepared dataset, so
`model=vae data=cifar10` gets 32x32x3 images without a second edit.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, Union

import jax.numpy as jnp
import numpy as np

from jaxdl.errors import SettingsError

#: Constructor fields set by the code at run time, never by a setting.
RUNTIME_FIELDS = frozenset({"parent", "name", "axis_name", "decode", "dtype"})
#: Model fields that default to the data's value (see `jaxdl.build.DataSpec`).
MODEL_DATA_FIELDS = frozenset({"image_shape", "vocab_size", "max_len", "num_outputs"})
#: Task fields that default to the data's value.
TASK_DATA_FIELDS = frozenset({"num_classes", "class_names", "vocabulary", "family_names"})

REQUIRED = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its name, schema type, default (REQUIRED when none) and whether the data supplies it.

    `type` is what OmegaConf can check: bool, int, float, str, list[T],
    dict[str, Any], Optional[T] or a dataclass of further settings.
    """

    name: str
    type: Any
    default: Any = REQUIRED
    from_data: bool = False


def schema_type(hint: Any) -> Any:
    """The OmegaConf-checkable type of a constructor annotation.

    Sequence[T] and tuple[T, ...] become list[T]; Mapping becomes dict[str, Any];
    `X | None` becomes Optional[X]; a dtype (annotated Any or a dtype class) becomes str.

    Raises:
      TypeError: an annotation with no config form (e.g. a callable).
    """
    if hint in (bool, int, float, str):
        return hint
    if hint is Any or hint is None or hint is type(None):
        return Any
    if dataclasses.is_dataclass(hint):
        return hint
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and len(args) == 2:
            return Optional[schema_type(inner[0])]
        return Any
    if origin in (list, tuple, Sequence) or (origin is not None and isinstance(origin, type) and issubclass(origin, Sequence)):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return list[schema_type(args[0])]
        if args and len({*args}) == 1:
            return list[schema_type(args[0])]
        return list[Any]
    if origin in (dict, Mapping) or (origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)):
        return dict[str, Any]
    raise TypeError(f"No config form for the annotation {hint!r}.")


def plain(value: Any) -> Any:
    """A default as YAML would hold it: tuples become lists, dtypes their names."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, type) and hasattr(value, "dtype"):  # numpy and jax.numpy scalar types
        return jnp.dtype(value).name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _setting(name: str, hint: Any, default: Any, data_fields: frozenset[str]) -> Setting:
    from_data = name in data_fields
    if from_data:
        return Setting(name, Optional[schema_type(hint)] if schema_type(hint) is not Any else Any, None, True)
    if name == "param_dtype":
        return Setting(name, str, plain(default))
    return Setting(name, schema_type(hint), REQUIRED if default is REQUIRED else plain(default))


def of_module(cls: type) -> tuple[Setting, ...]:
    """Settings of a Flax module class: its dataclass fields but the run-time ones."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in RUNTIME_FIELDS or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else REQUIRED
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(_setting(f.name, hints.get(f.name, Any), default, MODEL_DATA_FIELDS))
    return tuple(out)


def of_callable(fn: Callable[..., Any], *, skip: Iterable[str] = (), data_fields: frozenset[str] = frozenset()) -> tuple[Setting, ...]:
    """Settings of a function or class constructor: its keyword parameters but `skip` (and self, *args, **kwargs)."""
    target = fn.__init__ if isinstance(fn, type) else fn
    hints = typing.get_type_hints(target)
    skip = {"self", *skip}
    out = []
    for p in inspect.signature(target).parameters.values():
        if p.name in skip or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is inspect.Parameter.empty else p.default
        out.append(_setting(p.name, hints.get(p.name, Any), default, data_fields))
    return tuple(out)


def of_task(cls: type) -> tuple[Setting, ...]:
    """Settings of a task class: its constructor's keyword parameters but `model`."""
    return of_callable(cls, skip=("model",), data_fields=TASK_DATA_FIELDS)


def of_dataclass(cls: type) -> tuple[Setting, ...]:
    """Settings of a plain settings dataclass (every init field)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else REQUIRED
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(_setting(f.name, hints.get(f.name, Any), default, frozenset()))
    return tuple(out)


def suggest(name: str, valid: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_keys(where: str, given: Iterable[str], settings: Sequence[Setting], *, also: Iterable[str] = ()) -> None:
    """Raises SettingsError naming the first unknown key of `given`, with the closest valid one.

    Args:
      where: the settings' place, e.g. "model=vae" (used in the message).
      given: the keys a caller passed.
      settings: the valid settings.
      also: further valid keys (e.g. "name").
    """
    valid = [s.name for s in settings] + list(also)
    for key in given:
        if key not in valid:
            raise SettingsError(f"{where} has no setting {key!r}{suggest(key, valid)}; valid: {', '.join(sorted(valid))}.")
