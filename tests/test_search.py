"""Optuna searches through the real command on a real MNIST subset: pruning, workers, kills, failures, reports."""

import json
import shlex
import signal
import subprocess
import sys
import time

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import ValidationError

from experiments import search
from experiments.config import register
from scripts.summarize import summarize
from tests.conftest import REPO
from tests.test_run import SMOKE, environment

register()
SEARCH_SMOKE = [a for a in SMOKE if not a.startswith("task.iw_samples")] + ["task.iw_samples=0"]


def command(sweep_dir, data_dir, *extra, pruner="none"):
    """A smoke-sized VAE search into `sweep_dir`: trials of two 8-step epochs, one worker in this process."""
    return [sys.executable, "-m", "experiments.run", "-m", *SEARCH_SMOKE, "sweep=vae_optuna", f"data.data_dir={data_dir}",
            f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.workers=1",
            f"hydra/sweeper/pruner={pruner}", *extra]


def run(args, env, timeout=600):
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def study_of(sweep_dir):
    spec = search.read_spec(sweep_dir)
    return optuna.load_study(study_name=spec["study_name"], storage=search.open_storage(spec, sweep_dir))


def compose_job(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_search_space_settings_and_record(tmp_path):
    space = search.distributions({"a": "tag(log, interval(1e-4, 1e-2))", "b": "choice(10, 20, 50)", "c": "range(1, 7, 2)",
                                  "d": "interval(0.0, 0.5)"})
    assert space["a"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert space["b"] == optuna.distributions.CategoricalDistribution([10, 20, 50])
    assert space["c"] == optuna.distributions.IntDistribution(1, 5, step=2)  # Hydra's stop is exclusive
    assert space["d"] == optuna.distributions.FloatDistribution(0.0, 0.5)
    with pytest.raises(ValueError, match="not a sweep"):
        search.distributions({"a": "3"})

    cfg = compose_job("model=vae", "sweep=vae_optuna")
    trial = search.apply_params(cfg, {"optimizer.learning_rate": 3e-3, "model.latent_dim": 20})
    assert trial.optimizer.learning_rate == 3e-3 and trial.model.latent_dim == 20 and cfg.model.latent_dim == 50
    with pytest.raises(ValidationError):
        search.apply_params(cfg, {"model.latent_dim": "wide"})
    with pytest.raises(KeyError, match="not a key"):
        search.apply_params(cfg, {"model.latent_width": 20})
    assert search.objective(cfg) == ("eval/elbo", "minimize")  # the task's monitored metric
    assert search.objective(compose_job("model=mlp")) == ("eval/accuracy", "maximize")

    settings = dict(params={"optimizer.learning_rate": "tag(log, interval(1e-4, 1e-2))"}, study_name="s", n_trials=4,
                    seeds_per_trial=1, metric=None, direction=None, storage=None, journal_lock="symlink")
    spec = search.prepare(tmp_path, cfg, overrides=["model=vae", "sweep=vae_optuna", "launcher=parallel", "seed=3"],
                          **settings)
    assert spec["overrides"] == ["model=vae", "sweep=vae_optuna"] and spec["base_seed"] == 0
    assert search.prepare(tmp_path, cfg, overrides=["model=vae", "sweep=vae_optuna"], **{**settings, "n_trials": 8})
    with pytest.raises(ValueError, match="hydra.sweeper.study_name"):  # a folder holds one search
        search.prepare(tmp_path, cfg, overrides=["model=vae", "sweep=vae_optuna", "trainer.epochs=3"], **settings)
    with pytest.raises(KeyError, match="not a key"):
        search.prepare(tmp_path / "other", cfg, overrides=[], **{**settings, "params": {"model.width": "choice(1, 2)"}})
    assert search.reproduce_command(["model=vae"], {"optimizer.learning_rate": 0.1 + 0.2}, [0]) == (
        "python -m experiments.run model=vae optimizer.learning_rate=0.30000000000000004 seed=0")
    assert search.reproduce_command(["model=vae", "sweep=vae_optuna"], {"model.latent_dim": 20}, [0, 1]) == (
        "for seed in 0 1; do python -m experiments.run model=vae sweep=vae_optuna model.latent_dim=20 seed=$seed; done")


@pytest.mark.slow  # a search through the real command
def test_a_pruned_trial_stops_cleanly_and_is_summarized(tmp_path, mnist_data_dir, mnist_raw_dir):
    sweep = tmp_path / "sweep"
    # ThresholdPruner with upper=0 prunes every trial at its first evaluation (eval/elbo is positive).
    run(command(sweep, mnist_data_dir, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner.upper=0", pruner="threshold"),
        environment(mnist_raw_dir))
    trials = study_of(sweep).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert list(trials[0].intermediate_values) == [1]  # one evaluation, reported as step 1
    results = json.loads((sweep / "trial_0000" / "results.json").read_text())
    assert results["status"] == "pruned" and results["stop_reason"] == "pruned" and results["stopped_early"]
    assert results["steps"] == 8 and results["epochs"] == 1  # of 2 epochs of 8 steps
    assert "eval/elbo" in results["metrics"]
    assert (sweep / "trial_0000" / "checkpoints" / "8").is_dir()  # the checkpoint of the pruning evaluation is kept
    assert json.loads((sweep / "trial_0000" / "trial.json").read_text())["status"] == "pruned"
    text = summarize(sweep)
    assert "2 of 2 trials finished (2 pruned)" in text and "| 0 | pruned |" in text
    assert "Compute: 2.0 epochs" in text and "No trial has completed yet" in text


@pytest.mark.slow  # two worker processes, then the best trial again: 80 s of CPU, minutes on a shared machine
def test_two_workers_share_one_study_and_the_best_trial_reproduces(tmp_path, mnist_data_dir, mnist_raw_dir):
    sweep = tmp_path / "sweep"
    env = environment(mnist_raw_dir)
    done = run(command(sweep, mnist_data_dir, "launcher=parallel", "hydra.sweeper.workers=2",
                       "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=2"), env)
    trials = study_of(sweep).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4  # exactly the total
    assert sorted(t.user_attrs["folder"] for t in trials) == [f"trial_000{i}" for i in range(4)]
    assert len({t.params["optimizer.learning_rate"] for t in trials}) == 4  # no trial ran twice
    assert (sweep / "worker_0").is_dir() and (sweep / "worker_1").is_dir()
    for t in trials:  # each trial trained with its own parameters
        settings = json.loads((sweep / t.user_attrs["folder"] / "manifest.json").read_text())["settings"]
        assert settings["optimizer"]["learning_rate"] == t.params["optimizer.learning_rate"]
        assert settings["model"]["latent_dim"] == t.params["model.latent_dim"]
    assert "4 of 4 trials finished (4 complete)" in done.stdout
    for name in ("search_history.png", "search_intermediate_values.png", "search_importances.png",
                 "search_parallel_coordinate.png", "search_slice.png"):
        assert (sweep / name).stat().st_size > 10_000, name

    best = study_of(sweep).best_trial
    record = json.loads((sweep / best.user_attrs["folder"] / "trial.json").read_text())
    assert f"Train it again: `{record['command']}`" in (sweep / "summary.md").read_text()
    again = tmp_path / "again"
    words = shlex.split(record["command"])
    assert words[:3] == ["python", "-m", "experiments.run"] and "-m" not in words[3:] and words[-1] == "seed=0"
    run([sys.executable, *words[1:], f"hydra.run.dir={again}"], env)
    assert json.loads((again / "results.json").read_text())["metrics"]["eval/elbo"] == best.value


@pytest.mark.slow  # a search killed, then run again after its trial's heartbeat goes stale: about 60 s of CPU
def test_a_killed_worker_is_resumed_by_the_rerun(tmp_path, mnist_data_dir, mnist_raw_dir):
    sweep = tmp_path / "sweep"
    env = environment(mnist_raw_dir)
    args = command(sweep, mnist_data_dir, "hydra.sweeper.n_trials=2", "trainer.epochs=4",
                   "trainer.checkpoint_every_steps=2", "hydra.sweeper.heartbeat_s=1", "hydra.sweeper.grace_s=4")
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = sweep / "trial_0001" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail("the search finished before it could be killed")
    process.send_signal(signal.SIGKILL)  # mid-trial 1, after one of its checkpoints
    process.wait()
    assert not (sweep / "trial_0001" / "results.json").exists()

    run(args, env)  # the same command: trial 1 goes stale, is queued again in its folder and resumes there
    trials = study_of(sweep).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    retry = trials[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == trials[1].params
    assert sorted(p.name for p in sweep.glob("trial_*")) == ["trial_0000", "trial_0001"]
    results = json.loads((sweep / "trial_0001" / "results.json").read_text())
    assert results["resumed_from"] is not None and results["status"] == "finished" and results["epochs"] == 4
    text = summarize(sweep)
    assert "2 of 2 trials finished (2 complete, 1 killed)" in text
    assert "| 1 | killed |" in text and "run again as trial 2" in text


@pytest.mark.slow  # a search through the real command
def test_a_failing_trial_does_not_stop_the_others(tmp_path, mnist_data_dir, mnist_raw_dir):
    sweep = tmp_path / "sweep"
    # The space given on the command line (no sweep= file); a batch of 300 is more than the 256 examples.
    run([sys.executable, "-m", "experiments.run", "-m", *SEARCH_SMOKE, f"data.data_dir={mnist_data_dir}",
         "hydra/sweeper=jaxdl_search", "hydra/sweeper/sampler=brute_force",
         "hydra.sweeper.n_trials=2", "trainer.batch_size=choice(32, 300)", f"hydra.sweep.dir={sweep}"],
        environment(mnist_raw_dir))
    trials = {t.params["trainer.batch_size"]: t for t in study_of(sweep).get_trials()}
    assert trials[32].state.name == "COMPLETE" and trials[300].state.name == "FAIL"
    folder = sweep / trials[300].user_attrs["folder"]
    assert "fewer than one batch of 300" in json.loads((folder / "failure.json").read_text())["message"]
    text = summarize(sweep)
    assert "2 of 2 trials finished (1 complete, 1 failed)" in text and "fewer than one batch of 300" in text


@pytest.mark.slow  # a search through the real command
def test_a_trial_scored_on_several_seeds(tmp_path, mnist_data_dir, mnist_raw_dir):
    sweep = tmp_path / "sweep"
    run(command(sweep, mnist_data_dir, "hydra.sweeper.n_trials=1", "hydra.sweeper.seeds_per_trial=2", "seed=5"),
        environment(mnist_raw_dir))
    trial = study_of(sweep).get_trials()[0]
    values = [json.loads((sweep / "trial_0000" / f"seed_{s}" / "results.json").read_text())["metrics"]["eval/elbo"]
              for s in (5, 6)]
    assert trial.user_attrs["values"] == values and values[0] != values[1]
    assert trial.value == pytest.approx(sum(values) / 2) and trial.user_attrs["std"] > 0
    assert list(trial.intermediate_values) == [1, 2, 3, 4]  # two evaluations per seed, counted over the seeds
    assert trial.user_attrs["epochs"] == 4
    text = summarize(sweep)
    assert "mean over 2 seeds" in text and f"{trial.user_attrs['std']:.4g}" in text
    assert "for seed in 5 6; do python -m experiments.run" in text
