"""Train one configured experiment: `python -m experiments.run model=vae`.

Composes `conf/config.yaml` with the command-line overrides, turns the result
into plain dicts and calls `jaxdl.experiment.run`. Returns the monitored
metric. Under a search (`-m ... sweep=NAME`) each job is instead a worker of
the study (`experiments/search.py`), which trains trials through `train`. A run
that fails writes `failure.json` (error and traceback) into its folder; an
error the user can fix (a setting, the data, a file) is reported in one line,
and Hydra's launchers go on with a sweep's other jobs.
"""

# The command restarts itself with glibc's huge-page tunable before the heavy imports below.
# ruff: noqa: E402
from __future__ import annotations

import logging
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from jaxdl import backend

if __name__ == "__main__":  # first: glibc reads its tunables when a process starts (jaxdl.backend)
    backend.restart_with_huge_pages()

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from experiments import errors, jobs, search
from experiments.config import register
from experiments.jobs import train
from jaxdl import records, run_folder
from jaxdl.errors import RunFolderError, SettingsError, UserError

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


def save_record(cfg: DictConfig, hydra_config: DictConfig, run_dir: pathlib.Path) -> None:
    """Writes `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`, as Hydra would, once the folder is checked.

    Hydra's own copy (`hydra.output_subdir`) is turned off in conf/config.yaml: it would rewrite the record of
    a run already in the folder before jaxdl could refuse a different command.
    """
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_config)}), folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_config.overrides.task)), folder / "overrides.yaml")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax and TFDS log every file they touch at INFO
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "Unable to initialize backend" on CPU
    hydra_config = HydraConfig.get()
    run_dir = pathlib.Path(hydra_config.runtime.output_dir)
    try:
        check_presets(hydra_config.runtime.choices, hydra_config.overrides.task)
        settings = OmegaConf.to_container(cfg, resolve=True)
        worker = search.is_worker()  # sweep=... with -m: this job trains trials until the study has its total
        if not worker:
            run_folder.check(jobs.identity(settings), run_dir, allow_changed=settings.get("allow_changed") or [])
        save_record(cfg, hydra_config, run_dir)
        if worker:
            return search.work(cfg)
        results = train(settings, run_dir)
    except Exception as error:
        # A folder holding another run is left as it is; any other failure is recorded in the run's own folder.
        path = None if isinstance(error, RunFolderError) else records.write_failure(run_dir, error)
        if isinstance(error, UserError):
            where = f" (traceback: {path})" if path else ""
            if hydra_config.mode == RunMode.RUN:  # one line; a sweep's launcher must see the exception instead
                print(f"Error: {error}{where}", file=sys.stderr)
                sys.exit(1)
            error.args = (f"{error}{where}",)
        raise
    (run_dir / "failure.json").unlink(missing_ok=True)  # an earlier attempt's failure no longer describes the run
    return results["metrics"].get(results["best"]["metric"])


if __name__ == "__main__":
    main()
