"""Hyperparameter search: one Optuna study, any number of workers, trials pruned from their evaluations.

`python -m experiments.run -m model=vae sweep=vae_optuna` goes through the
`jaxdl_search` sweeper (hydra_plugins/jaxdl_search), which checks the search
space against the composed config, creates the study, writes `search.json`
into the sweep folder and launches `hydra.sweeper.workers` identical jobs
through the configured launcher (in this process, `launcher=parallel`
processes or `launcher=slurm` jobs). Each job is a worker (`work`): it loops
ask -> train in this process -> tell until the study holds `n_trials` finished
trials (complete, pruned or failed), so any number of workers, started by one
command or by several on several machines, share the work.

* Each trial trains in `trial_NNNN/` (with `seed_S/` runs when a trial is
  scored on several seeds): the run's own files (manifest.json with the
  resolved settings, results.json with a top-level "status", checkpoints) and
  `trial.json` (its parameters, the command that reproduces it, its values).
* After every evaluation the monitored metric is reported to the trial
  (`trial.report`), and the run stops with stop_reason "pruned" when the
  study's pruner says so; the trial ends PRUNED, its checkpoints kept.
  Resource unit of the pruners: evaluations (epochs with the default
  `trainer.eval_every_epochs=1`), counted over a trial's seeds.
* A trial that raises ends FAILED with failure.json in its folder; the worker
  goes on. A worker that dies (kill -9, node lost) leaves its trial RUNNING;
  workers record a heartbeat on their trial, and a RUNNING trial whose
  heartbeat is older than `grace_s` is failed and queued again with the same
  parameters (Optuna's RetryHeartbeatStaleTrialCallback) in the same folder,
  so its run resumes from its latest checkpoint. Only trials that finished
  with a result count towards the total. Optuna records heartbeats only for
  database storages and only inside `study.optimize`, hence this small
  equivalent that works with the journal file too.
* Asking for a trial happens under a file lock in the sweep folder (Optuna's
  own NFS-safe symlink lock), so concurrent workers never start more than the
  total.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import pathlib
import shlex
import statistics
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments import jobs

log = logging.getLogger(__name__)

SPEC_FILE = "search.json"
JOURNAL_FILE = "study.journal"
ASK_LOCK = "ask"  # Optuna's lock makes "ask.lock" beside it
COUNTED = ("COMPLETE", "PRUNED")  # plus FAIL with an "error" user attribute: failures that are results


def _optuna():
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna




def distributions(params: Mapping[str, str]) -> dict[str, Any]:
    """Optuna distributions from Hydra's sweep syntax, key by key.

    `choice(a, b, ...)` (or `a,b,...`) is categorical; `range(start, stop[, step])`
    an int or float grid with Hydra's exclusive stop; `interval(low, high)` a
    uniform int or float range, `tag(log, interval(low, high))` a log-uniform one.

    Raises:
      ValueError: a value that is not one of these sweeps.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer

    optuna = _optuna()
    parser = OverridesParser.create()
    out = {}
    for key, text in params.items():
        override = parser.parse_override(f"{key}={text}")
        value = override.value()
        if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.identity))
            out[key] = optuna.distributions.CategoricalDistribution(choices)
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step
            count = max(math.ceil((stop - start) / step), 1)
            high = start + step * (count - 1)  # Hydra's stop is exclusive, Optuna's high inclusive
            if any(isinstance(x, float) for x in (start, stop, step)):
                out[key] = optuna.distributions.FloatDistribution(float(start), float(high), step=float(step))
            else:
                out[key] = optuna.distributions.IntDistribution(int(start), int(high), step=int(step))
        elif isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                out[key] = optuna.distributions.IntDistribution(value.start, value.end, log=log_scale)
            else:
                out[key] = optuna.distributions.FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:
            raise ValueError(
                f"Search parameter {key}={text} is not a sweep; use choice(...), range(...), interval(...) "
                "or tag(log, interval(...))."
            )
    return out


def apply_params(cfg: DictConfig, params: Mapping[str, Any]) -> DictConfig:
    """A copy of `cfg` with `params` ({"optimizer.learning_rate": 3e-3, ...}) set.

    The config's schema checks each value's type, as on the command line.

    Raises:
      KeyError: a key that is not in the config.
      omegaconf.ValidationError: a value of the wrong type.
    """
    cfg = copy.deepcopy(cfg)
    missing = object()
    for key, value in params.items():
        if OmegaConf.select(cfg, key, default=missing) is missing:
            raise KeyError(f"Search parameter {key!r} is not a key of the composed config.")
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def objective(cfg: DictConfig, metric: str | None = None, direction: str | None = None) -> tuple[str, str]:
    """(metric, "minimize" | "maximize") a trial is scored by.

    The metric is `metric`, else the run's `trainer.monitor`, else its task's
    default; the direction `direction`, else `trainer.mode`, else the task's.
    """
    from jaxdl.tasks import TASKS

    task = TASKS[cfg.task.name]
    metric = metric or cfg.trainer.get("monitor") or task.default_metric
    if direction is None:
        mode = cfg.trainer.get("mode") or (task.default_mode if metric == task.default_metric else None)
        if mode is None:
            raise ValueError(f"Say whether {metric} is minimised or maximised: hydra.sweeper.direction=minimize|maximize.")
        direction = {"min": "minimize", "max": "maximize"}[mode]
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"hydra.sweeper.direction={direction!r}: choose minimize or maximize.")
    return metric, direction


def train(cfg: DictConfig, run_dir: os.PathLike | str, on_evaluation: Callable | None = None) -> dict[str, Any]:
    """Trains one run of the composed `cfg` into `run_dir` exactly as the command does (`experiments.jobs.train`).

    Rerunning into the same folder resumes from its latest checkpoint.
    """
    settings = OmegaConf.to_container(cfg, resolve=True)
    if settings["distributed"]["enabled"]:
        raise ValueError("A search trains each trial in one process; distributed.enabled=true is not supported.")
    return jobs.train(settings, run_dir, on_evaluation=on_evaluation)


def read_spec(sweep_dir: os.PathLike | str) -> dict[str, Any]:
    """The search's record, `search.json` in its sweep folder."""
    return json.loads((pathlib.Path(sweep_dir) / SPEC_FILE).read_text())


def _write_json(path: pathlib.Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def open_storage(spec: Mapping[str, Any], sweep_dir: os.PathLike | str):
    """The study's storage: a database URL as given, else a journal file (relative paths: to the sweep folder).

    The journal's lock is Optuna's `JournalFileSymlinkLock` (NFSv2 and later;
    `journal_lock: open` takes `JournalFileOpenLock`, NFSv3 and later); both
    break a lock older than 30 s left by a killed process.
    """
    optuna = _optuna()
    from optuna.storages import journal

    storage = spec.get("storage") or JOURNAL_FILE
    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    path = pathlib.Path(sweep_dir) / storage
    path.parent.mkdir(parents=True, exist_ok=True)
    locks = {"symlink": journal.JournalFileSymlinkLock, "open": journal.JournalFileOpenLock}
    lock = locks[spec.get("journal_lock", "symlink")](str(path))
    return journal.JournalStorage(journal.JournalFileBackend(str(path), lock_obj=lock))


def _command_overrides(overrides: Sequence[str]) -> list[str]:
    """The command-line overrides that choose what trains: launchers, hydra.* and the seed left out."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("launcher=", "hydra.", "hydra/", "seed="))]


def prepare(
    sweep_dir: os.PathLike | str,
    cfg: DictConfig,
    *,
    overrides: Sequence[str],
    params: Mapping[str, str],
    study_name: str,
    n_trials: int,
    seeds_per_trial: int,
    metric: str | None,
    direction: str | None,
    storage: str | None,
    journal_lock: str,
) -> dict[str, Any]:
    """Checks the search against `cfg` (the config every worker composes), creates the study, writes search.json.

    A sweep folder holds one study: running the same command again continues
    it (the trial count may change), a command with other overrides, search
    space or objective is refused.

    Raises:
      ValueError / KeyError / omegaconf.ValidationError: a parameter that is
        not a sweep, not a key of the config or of the wrong type; a folder
        holding a different search.
    """
    optuna = _optuna()
    sweep_dir = pathlib.Path(sweep_dir)
    if not params:
        raise ValueError("The search has no parameters: set hydra.sweeper.params or pass key=choice(...) sweeps.")
    if n_trials < 1 or seeds_per_trial < 1:
        raise ValueError(f"hydra.sweeper.n_trials={n_trials} and seeds_per_trial={seeds_per_trial} must be >= 1.")
    space = distributions(params)
    for key, dist in space.items():  # each key exists and takes the ends of its range
        ends = dist.choices if isinstance(dist, optuna.distributions.CategoricalDistribution) else (dist.low, dist.high)
        for value in ends:
            apply_params(cfg, {key: value})
    metric, direction = objective(cfg, metric, direction)
    spec = {
        "study_name": study_name,
        "storage": storage,
        "journal_lock": journal_lock,
        "n_trials": int(n_trials),
        "seeds_per_trial": int(seeds_per_trial),
        "base_seed": int(cfg.seed),
        "metric": metric,
        "direction": direction,
        "params": dict(params),
        "overrides": _command_overrides(overrides),
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if (sweep_dir / SPEC_FILE).exists():
        old = read_spec(sweep_dir)
        changed = [k for k in ("study_name", "storage", "seeds_per_trial", "base_seed", "metric", "direction", "params",
                               "overrides") if old.get(k) != spec[k]]
        if changed:
            raise ValueError(
                f"{sweep_dir} holds the search {old['study_name']!r} with "
                + "; ".join(f"{k}={old.get(k)!r}" for k in changed)
                + ", not " + "; ".join(f"{k}={spec[k]!r}" for k in changed)
                + ". Continue it with its own settings, or start another with hydra.sweeper.study_name=NAME."
            )
    optuna.create_study(
        study_name=study_name, storage=open_storage(spec, sweep_dir), direction=direction, load_if_exists=True
    )
    _write_json(sweep_dir / SPEC_FILE, spec)
    return spec




def is_worker() -> bool:
    """True inside a job launched by the jaxdl_search sweeper."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and str(hydra_cfg.sweeper.get("_target_", "")).endswith(".SearchSweeper")


def counts(trial) -> bool:
    """Whether a finished trial counts towards the total (a killed one does not: it is run again)."""
    return trial.state.name in COUNTED or (trial.state.name == "FAIL" and "error" in trial.user_attrs)


def trial_dir(sweep_dir: os.PathLike | str, trial) -> pathlib.Path:
    """`trial_NNNN`, numbered by the trial it retries when it is a retry (so a killed run resumes in its own folder)."""
    root = trial.system_attrs.get("failed_trial", trial.number)
    return pathlib.Path(sweep_dir) / f"trial_{root:04d}"


def reproduce_command(overrides: Sequence[str], params: Mapping[str, Any], seeds: Sequence[int]) -> str:
    """The shell command that trains a trial again as single runs, one per seed.

    Several seeds become a loop rather than a multirun: with `-m`, the
    `sweep=` option among the overrides would start a search.
    """

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "null"
        return repr(v) if isinstance(v, float) else str(v)

    words = ["python", "-m", "experiments.run", *overrides, *(f"{k}={value(v)}" for k, v in params.items())]
    command = " ".join(shlex.quote(w) for w in words)
    if len(seeds) == 1:
        return f"{command} seed={seeds[0]}"
    return f"for seed in {' '.join(str(s) for s in seeds)}; do {command} seed=$seed; done"


@contextlib.contextmanager
def _locked(lock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class _Heartbeat:
    """Records the time on a running trial every `interval_s` from a thread, until stopped."""

    def __init__(self, trial, interval_s: float):
        self._trial, self._interval_s, self._stop = trial, interval_s, threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="search-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._trial.set_user_attr("heartbeat", time.time())
            except Exception as error:  # a storage hiccup must not end the trial; the next beat retries
                log.warning("heartbeat of trial %d not recorded: %s", self._trial.number, error)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class _Reporter:
    """`on_evaluation` for one seed's run: reports the metric to the trial and prunes.

    The step reported is the trial's evaluation count over its seeds so far
    (`offset` + evaluations in this run), so pruners compare trials at equal
    training; the optimizer steps between evaluations are learned from the
    trial's first evaluation and kept in its user attributes, which a retried
    trial inherits, so a resumed run reports the same steps.
    """

    def __init__(self, trial, metric: str, offset: int):
        self.trial, self.metric, self.offset, self.last = trial, metric, offset, offset

    def evaluations(self, step: int) -> int:
        per = self.trial.user_attrs.get("steps_per_evaluation")
        if per is None:
            per = step
            self.trial.set_user_attr("steps_per_evaluation", per)
        return math.ceil(step / per)

    def __call__(self, step: int, metrics: Mapping[str, float]) -> str | None:
        if self.metric not in metrics:
            raise KeyError(f"The search's metric {self.metric!r} is not among the eval metrics {sorted(metrics)}.")
        self.last = self.offset + self.evaluations(step)
        with warnings.catch_warnings():  # a resumed run may report its last evaluation again; Optuna keeps the first
            warnings.simplefilter("ignore", UserWarning)
            self.trial.report(float(metrics[self.metric]), self.last)
        return "pruned" if self.trial.should_prune() else None


def _mark_results(run_dir: pathlib.Path, status: str) -> None:
    """Adds the top-level "status" (finished | pruned) to a run's results.json."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text())
    results["status"] = status
    _write_json(path, results)


def _finished_run(run_dir: pathlib.Path) -> dict[str, Any] | None:
    """A seed's results when its run already finished (a resumed trial skips it)."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    return results if results.get("status") == "finished" else None


class Worker:
    """Takes trials of one study until it holds its total; see the module docstring."""

    def __init__(self, cfg: DictConfig, sweep_dir: os.PathLike | str, sweeper: Mapping[str, Any], worker: int):
        import numpy as np
        from hydra.utils import instantiate
        from optuna.storages import journal

        optuna = _optuna()
        self.cfg, self.sweep_dir = cfg, pathlib.Path(sweep_dir)
        self.spec = read_spec(self.sweep_dir)
        self.heartbeat_s, self.grace_s = float(sweeper["heartbeat_s"]), float(sweeper["grace_s"])
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"hydra.sweeper.grace_s={self.grace_s} must exceed heartbeat_s={self.heartbeat_s}.")
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=sweeper["max_retry"], inherit_intermediate_values=True
        )
        storage = open_storage(self.spec, self.sweep_dir)
        started = len(optuna.load_study(study_name=self.spec["study_name"], storage=storage).get_trials(deepcopy=False))
        sampler_cfg = OmegaConf.create(OmegaConf.to_container(sweeper["sampler"], resolve=True))
        extra = {}
        if sampler_cfg.get("seed") is not None:  # other workers, and a continued search, draw other start-up trials
            extra["seed"] = int(np.random.SeedSequence([int(sampler_cfg.seed), worker, started]).generate_state(1)[0])
        self.study = optuna.load_study(
            study_name=self.spec["study_name"],
            storage=storage,
            sampler=instantiate(sampler_cfg, **extra),
            pruner=instantiate(OmegaConf.to_container(sweeper["pruner"], resolve=True)),
        )
        self.space = distributions(self.spec["params"])
        self.lock = journal.JournalFileSymlinkLock(str(self.sweep_dir / ASK_LOCK))
        self.worker = worker
        self.exhausted = False

    def fail_stale(self) -> None:
        """Fails RUNNING trials whose heartbeat is older than grace_s and queues each again."""
        optuna = _optuna()
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            beat = t.user_attrs.get("heartbeat") or t.datetime_start.timestamp()
            if now - beat <= self.grace_s:
                continue
            try:
                self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished meanwhile
            failed = next(x for x in self.study.get_trials(deepcopy=False) if x.number == t.number)
            self.retry(self.study, failed)
            log.warning("trial %d: no heartbeat for %.0f s (its worker was stopped); queued again in %s",
                        t.number, now - beat, trial_dir(self.sweep_dir, failed).name)

    def next_trial(self):
        """(trial, None) to run; (None, True) to wait for running trials; (None, False) when the study is done."""
        with _locked(self.lock):
            self.fail_stale()
            trials = self.study.get_trials(deepcopy=False)
            done = sum(counts(t) for t in trials)
            running = sum(t.state.name == "RUNNING" for t in trials)
            if done + running >= self.spec["n_trials"]:
                return None, running > 0
            trial = self.study.ask(self.space)
            trial.set_user_attr("heartbeat", time.time())  # before the lock is released: not taken for stale
            return trial, None

    def run(self) -> float | None:
        """Runs trials until the study is done; returns its best value (None when no trial completed)."""
        while not self.exhausted:
            trial, wait = self.next_trial()
            if trial is not None:
                self.run_trial(trial)
            elif wait:  # other workers' trials are running: wait to take over any whose worker dies
                time.sleep(min(self.heartbeat_s, 10.0))
            else:
                break
        try:
            return self.study.best_value
        except ValueError:
            return None

    def run_trial(self, trial) -> None:
        """Trains one trial (each of its seeds), then tells the study how it ended."""
        optuna = _optuna()
        spec = self.spec
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        folder = trial_dir(self.sweep_dir, frozen)
        folder.mkdir(parents=True, exist_ok=True)
        params = dict(trial.params)
        seeds = [spec["base_seed"] + i for i in range(spec["seeds_per_trial"])]
        record = {
            "trial": trial.number,
            "retry_of": frozen.system_attrs.get("failed_trial"),
            "worker": self.worker,
            "params": params,
            "seeds": seeds,
            "metric": spec["metric"],
            "direction": spec["direction"],
            "command": reproduce_command(spec["overrides"], params, seeds),
            "status": "running",
        }
        _write_json(folder / "trial.json", record)
        trial.set_user_attr("folder", folder.name)
        log.info("trial %d (%s) in %s", trial.number, " ".join(f"{k}={v}" for k, v in params.items()), folder)
        values, epochs, cpu_s, offset, status = [], 0.0, 0.0, 0, "finished"
        run_dir = folder
        t0 = time.perf_counter()
        try:
            with _Heartbeat(trial, self.heartbeat_s):
                for seed in seeds:
                    run_dir = folder if len(seeds) == 1 else folder / f"seed_{seed}"
                    results = _finished_run(run_dir)
                    if results is None:
                        reporter = _Reporter(trial, spec["metric"], offset)
                        cpu0 = time.process_time()
                        results = train(apply_params(self.cfg, {**params, "seed": seed}), run_dir, reporter)
                        cpu_s += time.process_time() - cpu0
                        status = "pruned" if results.get("stop_reason") == "pruned" else "finished"
                        _mark_results(run_dir, status)
                        offset = reporter.last
                    else:
                        offset += _Reporter(trial, spec["metric"], 0).evaluations(results["steps"])
                    epochs += results["epochs"]
                    if status == "pruned":
                        break
                    value = results["metrics"].get(spec["metric"])
                    if value is None or not math.isfinite(value):
                        raise ValueError(f"{spec['metric']} of seed {seed} is {value!r}.")
                    values.append(float(value))
        except KeyboardInterrupt:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)  # queued again: a rerun resumes it at once
            self.retry(self.study, next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number))
            raise
        except Exception as error:
            status = "failed"
            failure = {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc(),
                       "status": "failed"}
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(run_dir / "failure.json", failure)
            record["error"] = f"{type(error).__name__}: {error}"
            log.error("trial %d failed: %s", trial.number, record["error"])
        record.update(status=status, epochs=epochs, cpu_s=cpu_s, wall_s=time.perf_counter() - t0)
        for key in ("epochs", "cpu_s"):
            trial.set_user_attr(key, record[key])
        if status == "finished":
            record["value"] = statistics.fmean(values)
            record["values"] = values
            if len(values) > 1:
                record["std"] = statistics.stdev(values)
                trial.set_user_attr("values", values)
                trial.set_user_attr("std", record["std"])
            _write_json(folder / "trial.json", record)
            self.tell(trial, record["value"])
        elif status == "pruned":
            _write_json(folder / "trial.json", record)
            self.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            _write_json(folder / "trial.json", record)
            trial.set_user_attr("error", record["error"][:2000])
            self.tell(trial, state=optuna.trial.TrialState.FAIL)

    def tell(self, trial, value: float | None = None, state=None) -> None:
        """`study.tell`; a sampler with no new points left (BruteForceSampler) ends this worker."""
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError as error:  # Study.stop() outside optimize(); the trial is stored before it is raised
            if "Study.stop" not in str(error):
                raise
            log.info("the sampler has tried every point of the space: worker %d stops", self.worker)
            self.exhausted = True


def work(cfg: DictConfig) -> float | None:
    """The body of a search worker job (see `Worker`); returns the study's best value."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    return Worker(cfg, hydra_cfg.sweep.dir, hydra_cfg.sweeper, int(hydra_cfg.job.num)).run()
