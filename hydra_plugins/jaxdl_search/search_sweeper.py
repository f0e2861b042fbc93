"""The `jaxdl_search` Hydra sweeper: launches workers that share one Optuna study.

`sweep(arguments)` splits the command-line overrides into the search space
(sweeps such as `key=choice(1,2)`, added to `params` from the YAML) and the
fixed overrides every trial trains with; checks the space against the composed
config; creates the study and `search.json` (experiments.search.prepare);
launches `workers` identical jobs with the configured Hydra launcher, each
running experiments.search.work; and summarises the study when they end.
This module is imported whenever Hydra starts, so it imports nothing heavy
at module level, and no `from __future__ import annotations`: Hydra loads it outside
sys.modules, where dataclasses cannot resolve string annotations.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class SearchSweeperConf:
    _target_: str = "hydra_plugins.jaxdl_search.search_sweeper.SearchSweeper"
    _recursive_: bool = False  # sampler and pruner reach the workers as configs, not objects
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}])
    study_name: str = "search"
    n_trials: int = 16  # trials with a result (complete, pruned or failed) before the search ends
    workers: int = 1  # jobs launched, each training trial after trial (launcher=parallel: processes; slurm: jobs)
    seeds_per_trial: int = 1  # K: a trial's value is the mean over seeds seed, seed+1, ..., seed+K-1
    metric: Optional[str] = None  # None: trainer.monitor, else the task's default
    direction: Optional[str] = None  # minimize | maximize (None: trainer.mode, else the task's)
    storage: Optional[str] = None  # journal file (relative to the sweep folder) or database URL; None: study.journal
    journal_lock: str = "symlink"  # symlink (NFSv2+) | open (NFSv3+): Optuna's file locks
    heartbeat_s: float = 30.0  # a running trial records the time this often, seconds
    grace_s: float = 180.0  # a running trial silent this long is taken as killed and queued again, seconds
    max_retry: int = 2  # times a killed trial is queued again
    sampler: Any = None  # hydra/sweeper/sampler option: an optuna.samplers class and its arguments
    pruner: Any = None  # hydra/sweeper/pruner option: an optuna.pruners class and its arguments
    params: Dict[str, str] = field(default_factory=dict)  # key: Hydra sweep, e.g. tag(log, interval(1e-4, 1e-2))


ConfigStore.instance().store(group="hydra/sweeper", name="jaxdl_search", node=SearchSweeperConf, provider="jaxdl")


class SearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from experiments import search, search_report

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        s = self.settings
        parsed = OverridesParser.create(config_loader=self.hydra_context.config_loader).parse_overrides(arguments)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        params = {str(k): str(v) for k, v in (s["params"] or {}).items()}
        params.update({o.get_key_element(): o.input_line.partition("=")[2] for o in parsed if o.is_sweep_override()})
        job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(fixed))
        with open_dict(job_cfg):
            del job_cfg["hydra"]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        spec = search.prepare(
            sweep_dir,
            job_cfg,
            overrides=fixed,
            params=params,
            study_name=s["study_name"],
            n_trials=s["n_trials"],
            seeds_per_trial=s["seeds_per_trial"],
            metric=s["metric"],
            direction=s["direction"],
            storage=s["storage"],
            journal_lock=s["journal_lock"],
        )
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("Search %r in %s: %d trials, %s %s over %s, %d worker(s)", spec["study_name"], sweep_dir,
                 spec["n_trials"], spec["direction"], spec["metric"], ", ".join(params), s["workers"])
        try:
            returns = self.launcher.launch([list(fixed)] * int(s["workers"]), initial_job_idx=0)
        finally:  # also when a worker was killed: where the study stands (the same command continues it)
            print(search_report.summarize(sweep_dir), flush=True)
        for r in returns:
            _ = r.return_value  # raises a worker's own error (not a trial's: trials fail on their own)
        return returns
