"""Every YAML option composes and builds; bad settings fail at composition time."""

import pathlib

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from experiments.config import register
from jaxdl.experiment import build_model, build_task
from jaxdl.models import MODELS
from jaxdl.tasks import TASKS

CONF = pathlib.Path(__file__).resolve().parents[1] / "conf"
register()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def build(cfg) -> None:
    settings = OmegaConf.to_container(cfg, resolve=True)
    model, task = dict(settings["model"]), dict(settings["task"])
    module = build_model(model.pop("name"), **model)
    build_task(task.pop("name"), module, **task)


@pytest.mark.parametrize(
    "group", ["model", "data", "optimizer", "trainer", "task", "debug", "experiment", "launcher", "sweep", "recipe"]
)
def test_every_option_composes(group):
    names = options(group)
    assert names, f"conf/{group} has no options"
    for name in names:
        cfg = compose_with(f"{group}={name}")
        build(cfg)


@pytest.mark.parametrize("model", options("model"))
def test_each_model_picks_its_task_and_dataset(model):
    cfg = compose_with(f"model={model}")
    assert cfg.task.name and cfg.data.name
    assert cfg.model.name in MODELS and cfg.task.name in TASKS


def test_vae_default_recipe_and_command_line_precedence():
    cfg = compose_with("model=vae")
    assert cfg.data.name == "mnist" and cfg.task.name == "vae"
    assert compose_with("model=vae", "trainer.epochs=3").trainer.epochs == 3
    assert compose_with("model=vae", "data=fashion_mnist").data.name == "fashion_mnist"


def test_experiment_overrides_the_defaults():
    cfg = compose_with("experiment=mnist_vae_burda2015")
    assert cfg.data.batch_size == 20 and cfg.task.iw_samples == 5000
    assert cfg.optimizer.schedule.name == "piecewise"


def test_unknown_option_fails_with_hydras_message():
    with pytest.raises(MissingConfigException, match="nope"):
        compose_with("model=nope")


def test_wrongly_typed_value_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose_with("optimizer.learning_rate=abc")


def test_misspelled_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="epochz"):
        compose_with("trainer.epochz=3")


def test_airbench94_experiment_carries_the_scripts_hyperparameters():
    cfg = compose_with("experiment=cifar10_airbench94")
    assert cfg.model.name == "airbench94" and cfg.task.name == "airbench" and cfg.data.name == "cifar10"
    assert cfg.data.batch_size == 1024 and cfg.task.batch_size == 1024
    assert cfg.trainer.max_steps == cfg.task.total_steps == 476  # ceil(50000 // 1024 * 9.9)
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.nesterov and cfg.optimizer.momentum == 0.85
    assert abs(cfg.optimizer.learning_rate - 11.5 / (1024 * (1 + 1 / (1 - 0.85)))) < 1e-12
    assert cfg.optimizer.schedule.name == "triangular" and cfg.optimizer.schedule.warmup_steps == int(0.23 * 476)
