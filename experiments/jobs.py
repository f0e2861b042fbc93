"""One job of `python -m experiments.run`: composed settings in, a trained run folder out.

Used by the command itself (`experiments/run.py`) and by every trial of a
search (`experiments/search.py`), so a trial trains exactly as the command does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

#: Top-level settings `jaxdl.experiment.run` takes.
RUN_KEYS = ("seed", "precision", "model", "task", "data", "optimizer", "trainer", "distributed", "evaluator",
            "allow_changed")
#: Of those, the settings that make a run's identity (what manifest.json records and a rerun must match).
IDENTITY_KEYS = RUN_KEYS[:-1]


def identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings `jaxdl.experiment.run` records for a run (its identity in the run folder)."""
    return {k: settings.get(k) for k in IDENTITY_KEYS}


def train(
    settings: Mapping[str, Any],
    run_dir: str | os.PathLike,
    *,
    on_evaluation: Callable[[int, Mapping[str, float]], str | None] | None = None,
) -> dict[str, Any]:
    """Trains one run from a composed config's settings (plain dicts) into `run_dir`; returns its results.

    Sets the environment (`env`), jaxdl's XLA CPU settings (`jaxdl.backend`) and JAX's persistent
    compilation cache first.
    """
    os.environ.update({k: str(v) for k, v in (settings.get("env") or {}).items()})  # before JAX starts
    from jaxdl import backend

    backend.configure()
    import jax

    if settings.get("compilation_cache_dir"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(settings["compilation_cache_dir"]))
        # Cache every program, not only those over JAX's default 1 s of compile time: a run's many small
        # ones (init, optimizer init, eval) add up to half its time to the first step (scripts/benchmark).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from jaxdl import experiment

    return experiment.run(**{k: settings[k] for k in RUN_KEYS if k in settings}, run_dir=run_dir,
                          on_evaluation=on_evaluation)
