"""Train one configured experiment: `python -m experiments.run model=vae`.

Composes `conf/config.yaml` with the command-line overrides, turns the result
into plain dicts and calls `jaxdl.experiment.run`. Returns the monitored
metric. Under a search (`-m ... sweep=NAME`) each job is instead a worker of
the study (`experiments/search.py`), which trains trials through `train`. A run
that fails writes `failure.json` (error and traceback) into its folder; an
error the user can fix (a setting, the data, a file) is reported in one line,
and Hydra's launchers go on with a sweep's other jobs.
"""

from __future__ import annotations

import logging
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments import errors, search
from experiments.config import register
from experiments.jobs import train, write_failure
from jaxdl.errors import SettingsError, UserError

register()
errors.install()

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
#: Groups whose option a command line may name; an experiment that sets values in one of them cannot be mixed with it.
GROUPS = ("model", "task", "data", "optimizer")


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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax and TFDS log every file they touch at INFO
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "Unable to initialize backend" on CPU
    hydra_config = HydraConfig.get()
    run_dir = hydra_config.runtime.output_dir
    try:
        check_presets(hydra_config.runtime.choices, hydra_config.overrides.task)
        if search.is_worker():  # sweep=... with -m: this job trains trials until the study has its total
            return search.work(cfg)
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
