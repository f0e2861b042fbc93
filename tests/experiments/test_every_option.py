"""Every experiment and every model trains two steps on real data, and the optimizer that trained is the recorded one.

Slow (minutes): `python -m pytest -m slow tests/experiments/test_every_option.py`. Runs in process through
`experiments.run.train`, the function the command calls, with `debug=smoke` and the run length cut to two steps;
the most expensive final evaluations are shrunk (fewer importance samples, AIS distributions).
"""

import json
import pathlib

import jax
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config import register
from experiments.jobs import train
from jaxdl import runs

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf"
register()
pytestmark = pytest.mark.slow

#: Final evaluations made cheap; keyed by task.
SHRINK = {"vae": ["task.iw_samples=50"], "rbm": ["task.ais_betas=100", "task.ais_runs=10",
                                                  "task.feature_classifier_train_examples=200"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import os

    if not os.environ.get("JAXDL_MANUAL_DIR"):
        pytest.skip("real datasets not available: set JAXDL_MANUAL_DIR to the folder of raw files")
    return tmp_path_factory.mktemp("tfds")


def two_steps(run_dir: pathlib.Path, data_dir: pathlib.Path, *overrides: str) -> dict:
    common = ["debug=smoke", "trainer.max_steps=2", "trainer.progress=false", f"data.data_dir={data_dir}",
              "compilation_cache_dir=null"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, *common])
        cfg = compose(config_name="config", overrides=[*overrides, *common, *SHRINK.get(cfg.task.name, [])])
    results = train(OmegaConf.to_container(cfg, resolve=True), run_dir)
    assert results["steps"] == 2
    for key, value in results["metrics"].items():
        if isinstance(value, float):
            assert np.isfinite(value), f"{key}={value}"
    return results


def optimizer_kinds(opt_state) -> set[str]:
    """Names of the optax state types in an optimizer state (ScaleByAdamState, TraceState, ...)."""
    leaves = jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "_fields"))
    return {type(leaf).__name__ for leaf in leaves if hasattr(leaf, "_fields")}


@pytest.mark.parametrize("model", options("model"))
def test_every_model_trains_two_steps_with_its_default_task_and_data(tmp_path, data_dir, model):
    two_steps(tmp_path / "run", data_dir, f"model={model}")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["settings"]["model"]["name"] == manifest["built"]["model"]["name"]


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_trains_two_steps(tmp_path, data_dir, experiment):
    two_steps(tmp_path / "run", data_dir, f"experiment={experiment}")


@pytest.mark.parametrize("optimizer, kind", [("sgd", "TraceState"), ("adam_dcgan", "ScaleByAdamState")])
def test_the_transformer_trains_with_the_optimizer_the_command_line_names(tmp_path, data_dir, optimizer, kind):
    run_dir = tmp_path / "run"
    two_steps(run_dir, data_dir, "model=transformer", f"optimizer={optimizer}", "model.num_layers=1",
              "model.embed_dim=32", "model.num_heads=2", "data.seq_len=16")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["settings"]["optimizer"]["name"] == optimizer.split("_")[0]
    restored = runs.restore(run_dir, {"tokens": np.zeros((1, 16), np.int32)})
    kinds = optimizer_kinds(restored.state.opt_state)
    assert kind in kinds, kinds
    assert ("ScaleByAdamState" in kinds) == (kind == "ScaleByAdamState")
    assert manifest["settings"]["optimizer"]["grad_clip_norm"] is None  # the model's adamw_nanogpt clips; these do not
    assert isinstance(restored.state.tx, optax.GradientTransformation)
