"""Train one configured experiment: `python -m experiments.run model=vae`.

Composes `conf/config.yaml` with the command-line overrides, turns the result
into plain dicts and calls `jaxdl.experiment.run`. Returns the monitored
metric. Under a search (`-m ... sweep=NAME`) each job is instead a worker of
the study (experiments/search.py). A run that fails writes
`failure.json` (error and traceback) into its folder before the error
propagates, so a sweep's summary can list it; Hydra's launchers go on with
the sweep's other jobs.
"""

from __future__ import annotations

import json
import logging
import os
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from experiments import search
from experiments.config import register

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax and TFDS log every file they touch at INFO
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "Unable to initialize backend" on CPU
    settings = OmegaConf.to_container(cfg, resolve=True)
    run_dir = HydraConfig.get().runtime.output_dir
    os.environ.update({k: str(v) for k, v in (settings.get("env") or {}).items()})  # before JAX starts
    try:
        import jax

        if settings["compilation_cache_dir"]:
            jax.config.update("jax_compilation_cache_dir", os.path.expanduser(settings["compilation_cache_dir"]))
            # Cache every program, not only those over JAX's default 1 s of compile time: a run's many small
            # ones (init, optimizer init, eval) add up to half its time to the first step (scripts/benchmark).
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        if search.is_worker():  # sweep=... with -m: this job trains trials until the study has its total
            return search.work(cfg)
        from jaxdl import experiment

        results = experiment.run(
            seed=settings["seed"],
            model=settings["model"],
            task=settings["task"],
            data=settings["data"],
            optimizer=settings["optimizer"],
            trainer=settings["trainer"],
            distributed=settings["distributed"],
            run_dir=run_dir,
        )
    except Exception as error:
        failure = {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
        with open(os.path.join(run_dir, "failure.json"), "w", encoding="utf-8") as f:
            json.dump(failure, f, indent=2)
        raise
    return results["metrics"].get(results["best"]["metric"])


if __name__ == "__main__":
    main()
