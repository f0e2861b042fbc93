"""Train one configured experiment: `python -m experiments.run model=vae`.

Composes `conf/config.yaml` with the command-line overrides, turns the result
into plain dicts and calls `jaxdl.experiment.run`. Returns the monitored
metric, which Hydra's sweepers optimise. A run that fails writes
`failure.json` (error and traceback) into its folder; an error the user can
fix (a setting, the data, a file) is reported in one line, and Hydra's
launchers go on with a sweep's other jobs.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments import errors
from experiments.config import register
from experiments.sweeps import register_resolvers
from jaxdl.errors import SettingsError, UserError

register()
register_resolvers()
errors.install()

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
#: Groups whose option a command line may name; an experiment that sets values in one of them cannot be mixed with it.
GROUPS = ("model", "task", "data", "optimizer")
#: Top-level settings `jaxdl.experiment.run` takes.
RUN_KEYS = ("seed", "precision", "model", "task", "data", "optimizer", "trainer", "distributed", "evaluator")


def check_presets(choices: Mapping[str, Any], overrides: Sequence[str], conf_dir: pathlib.Path = CONF) -> None:
    """Refuses an experiment combined with an option of a group the experiment sets values in.

    `experiment=cifar10_cnn optimizer=adam` would merge the experiment's SGD
    values (momentum, Nesterov, weight decay) into Adam, so what trains would be
    neither; single values (`optimizer.learning_rate=...`) stay allowed.

    Raises:
      SettingsError: naming the group, the experiment's keys there, and the fix.
    """
    experiment = choices.get("experiment")
    if not experiment:
        return
    path = conf_dir / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return
    preset = OmegaConf.to_container(OmegaConf.load(path))
    named = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    for group in GROUPS:
        if group in named and isinstance(preset.get(group), dict):
            keys = ", ".join(sorted(preset[group]))
            raise SettingsError(
                f"experiment={experiment} sets {group} values ({keys}) that would be merged into your {group} option; "
                f"drop {group}=... and override single values ({group}.KEY=VALUE), or start from the model without "
                "the experiment."
            )


def train(
    settings: Mapping[str, Any],
    run_dir: str | os.PathLike,
    *,
    on_evaluation: Callable[[int, Mapping[str, float]], str | None] | None = None,
) -> dict[str, Any]:
    """Trains one run from a composed config's settings (plain dicts) into `run_dir`; returns its results.

    Sets the environment (`env`) and JAX's persistent compilation cache first.
    """
    os.environ.update({k: str(v) for k, v in (settings.get("env") or {}).items()})  # before JAX starts
    import jax

    if settings.get("compilation_cache_dir"):
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(settings["compilation_cache_dir"]))
        # Cache every program, not only those over JAX's default 1 s of compile time: a run's many small
        # ones (init, optimizer init, eval) add up to half its time to the first step (scripts/benchmark).
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from jaxdl import experiment

    return experiment.run(**{k: settings[k] for k in RUN_KEYS if k in settings}, run_dir=run_dir,
                          on_evaluation=on_evaluation)


def write_failure(run_dir: str | os.PathLike, error: BaseException) -> pathlib.Path:
    """Writes `failure.json` (error, message, traceback) atomically into `run_dir`; returns its path."""
    path = pathlib.Path(run_dir) / "failure.json"
    failure = {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(failure, indent=2) + "\n")
    os.replace(tmp, path)
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax and TFDS log every file they touch at INFO
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "Unable to initialize backend" on CPU
    hydra_config = HydraConfig.get()
    run_dir = hydra_config.runtime.output_dir
    try:
        check_presets(hydra_config.runtime.choices, hydra_config.overrides.task)
        results = train(OmegaConf.to_container(cfg, resolve=True), run_dir)
    except Exception as error:
        path = write_failure(run_dir, error)
        if isinstance(error, UserError):
            if hydra_config.mode == RunMode.RUN:  # one line; a sweep's launcher must see the exception instead
                print(f"Error: {error} (traceback: {path})", file=sys.stderr)
                sys.exit(1)
            error.args = (f"{error} (traceback: {path})",)
        raise
    return results["metrics"].get(results["best"]["metric"])


if __name__ == "__main__":
    main()
