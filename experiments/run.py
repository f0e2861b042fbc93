"""Train one configured experiment: `python -m experiments.run model=vae`.

Composes `conf/config.yaml` with the command-line overrides, turns the result
into plain dicts and calls `jaxdl.experiment.run`. Returns the monitored
metric, which Hydra's sweepers (Optuna) optimise.
"""

from __future__ import annotations

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments.config import register

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax and TFDS log every file they touch at INFO
    settings = OmegaConf.to_container(cfg, resolve=True)
    if settings["compilation_cache_dir"]:
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(settings["compilation_cache_dir"]))
    from jaxdl import experiment  # after the cache is configured

    results = experiment.run(
        seed=settings["seed"],
        model=settings["model"],
        task=settings["task"],
        data=settings["data"],
        optimizer=settings["optimizer"],
        trainer=settings["trainer"],
        run_dir=HydraConfig.get().runtime.output_dir,
    )
    return results["metrics"].get(results["best"]["metric"])


if __name__ == "__main__":
    main()
