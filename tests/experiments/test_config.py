"""conf/ composes into exactly what trains: schemas from the constructors, honest groups, shapes from the data.

Building here needs no prepared data: a dataset's facts (`jaxdl.build.DataSpec`)
are read from its TFDS builder's declared features.
"""

import dataclasses
import functools
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config import register
from experiments.run import check_presets
from jaxdl import build, settings as schema
from jaxdl.data import sources
from jaxdl.errors import SettingsError
from jaxdl.models import MODELS
from jaxdl.tasks import TASKS
from tests.conftest import assert_close

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf"
register()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def choices(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    return dict(cfg.hydra.runtime.choices)


_DATA_DIR = tempfile.mkdtemp(prefix="jaxdl-unprepared-")


def spec_of(cfg) -> build.DataSpec:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return build.data_spec(sources.get_builder(data["name"], data_dir=_DATA_DIR), data)


def build_all(cfg):
    """Model, task and optimizer exactly as a run builds them (no data read, nothing compiled)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    spec = spec_of(cfg)
    model = build.build_model(settings["model"], spec, precision=settings["precision"])
    task = build.build_task(settings["task"], model, spec)
    tx = build.build_optimizer(settings["optimizer"], total_steps=1000, steps_per_epoch=50)
    return model, task, tx


#: A model that fits each data and task option (the default model, the VAE, needs images).
PARTNERS = {
    "data=tiny_shakespeare": ["model=transformer"], "data=adfa_ld": ["model=lstm"],
    "data=diabetes": ["model=mlp", "task=regression"], "task=airbench": ["model=airbench94"],
    "task=autoencoder": ["model=autoencoder"], "task=rbm": ["model=rbm"], "task=gan": ["model=gan"],
    "task=language_model": ["model=lstm"], "task=trace_classification": ["experiment=adfa_ld_supervised"],
    "task=regression": ["experiment=diabetes_mlp_regression"], "task=classification": ["model=mlp"],
    "evaluator=fid": ["model=gan", "evaluator.classifier=RUN"],
}


@pytest.mark.parametrize("group", ["model", "data", "optimizer", "trainer", "task", "debug", "experiment", "launcher",
                                   "sweep", "evaluator"])
def test_every_option_composes_and_builds(group):
    names = options(group)
    assert names, f"conf/{group} has no options"
    for name in names:
        option = f"{group}={name}"
        cfg = compose_with(*PARTNERS.get(option, []), option)
        model, task, tx = build_all(cfg)
        assert type(model) is MODELS[cfg.model.name] and type(task) is TASKS[cfg.task.name]
        assert isinstance(tx, optax.GradientTransformation)


def test_schemas_are_read_from_the_constructors():
    cfg = compose_with("model=vae")
    assert set(cfg.model) == {"name"} | {s.name for s in schema.of_module(MODELS["vae"])}
    assert set(cfg.task) == {"name"} | {s.name for s in schema.of_task(TASKS["vae"])}
    assert "dtype" not in cfg.model and "axis_name" not in cfg.model  # run-time fields are not settings
    assert cfg.model.latent_dim == MODELS["vae"].latent_dim  # the default is the module's, written once
    assert set(compose_with("optimizer=sgd").optimizer) == {"name", "learning_rate", "momentum", "nesterov",
                                                             "weight_decay", "grad_clip_norm", "schedule"}


def _yaml_values(path: pathlib.Path, node: str | None) -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    values = raw.get(node, {}) if node else raw
    return {k: v for k, v in values.items() if k != "defaults"}


def _defaults(group: str, name: str) -> dict:
    if group == "model":
        return {s.name: s.default for s in schema.of_module(MODELS[name])}
    if group == "task":
        return {s.name: s.default for s in schema.of_task(TASKS[name])}
    if group == "optimizer":
        settings = {s.name: s.default for s in build.optimizer_settings(name)}
        settings["schedule"] = {s.name: s.default for s in build.schedule_settings()}
        return settings
    common = {s.name: s.default for s in schema.of_dataclass(sources.DataSettings)}
    return common


def _repeats(values: dict, defaults: dict, where: str) -> list[str]:
    found = []
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("${"):
            continue  # an interpolation is not a copy
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            found += _repeats(value, defaults[key], f"{where}.{key}")
        elif key in defaults and value == defaults[key]:
            found.append(f"{where}.{key}={value}")
    return found


def test_yaml_sets_only_values_that_differ_from_the_code():
    repeats = []
    for path in sorted((CONF / "model").glob("*.yaml")):
        name = compose_with(f"model={path.stem}").model.name
        repeats += _repeats(_yaml_values(path, "model"), _defaults("model", name), f"conf/model/{path.name}")
    for group in ("task", "optimizer", "data"):
        for path in sorted((CONF / group).glob("*.yaml")):
            name = compose_with(f"{group}={path.stem}")[group].name
            repeats += _repeats(_yaml_values(path, None), _defaults(group, name), f"conf/{group}/{path.name}")
    assert not repeats, f"YAML repeats the code's defaults: {repeats}"


def test_model_options_set_only_model_trainer_and_expected_values():
    for path in sorted((CONF / "model").glob("*.yaml")):
        keys = set(OmegaConf.load(path)) - {"defaults"}
        assert keys <= {"model", "trainer", "expected"}, f"{path.name} sets {sorted(keys)}"


def _reference_schedule(s: dict, lr: float, total: int):
    """The learning rate of each step, written out independently of jaxdl.training.optim."""
    warm, offset = s["warmup_steps"], s["warmup_offset"]

    def rate(t):
        if s["name"] == "triangular":
            if t < warm:
                return lr * (s["start_factor"] + (1 - s["start_factor"]) * t / warm)
            return lr * (1 + (s["end_factor"] - 1) * (t - warm) / (total - warm))
        if warm and t < warm:
            return lr * (t + offset) / (warm + offset) if offset or t else 0.0
        if s["name"] == "cosine":
            progress = (t - warm) / max(total - warm, 1)
            return lr * (s["end_factor"] + (1 - s["end_factor"]) * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))
        if s["name"] == "piecewise":
            return lr * s["decay_factor"] ** sum(t >= b * 5 for b in s["boundaries_epochs"])
        return lr

    return rate


def _reference_tx(o: dict, total: int) -> optax.GradientTransformation:
    lr = _reference_schedule(o["schedule"], o["learning_rate"], total)
    if o["name"] == "adam":
        tx = optax.adam(lr, b1=o["b1"], b2=o["b2"], eps=o["eps"])
    elif o["name"] == "adamw":
        mask = lambda p: jax.tree.map(lambda x: x.ndim >= o["decay_min_ndim"], p)  # noqa: E731
        tx = optax.adamw(lr, b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=o["weight_decay"], mask=mask)
    elif o["name"] == "sgd":
        tx = optax.chain(optax.add_decayed_weights(o["weight_decay"]),
                         optax.sgd(lr, momentum=o["momentum"] or None, nesterov=o["nesterov"]))
    else:
        raise AssertionError(f"no reference for {o['name']}")
    return optax.chain(optax.clip_by_global_norm(o["grad_clip_norm"]), tx) if o["grad_clip_norm"] else tx


TOTAL = 1000  # optimizer steps of the run the schedules are built for


@functools.cache
def _optimizer_alone(option: str):
    """The optimizer node of `optimizer=option` with the default model: that option's values and nothing else."""
    return compose_with(f"optimizer={option}").optimizer


@pytest.mark.parametrize("option", options("optimizer"))
def test_each_optimizer_options_schedule_matches_its_record(option):
    from jaxdl.training import optim

    recorded = OmegaConf.to_container(compose_with(f"optimizer={option}").optimizer, resolve=True)
    schedule = dict(recorded["schedule"])
    name = schedule.pop("name")
    built = optim.make_schedule(name, recorded["learning_rate"], total_steps=TOTAL, steps_per_epoch=5, **schedule)
    reference = _reference_schedule(recorded["schedule"], recorded["learning_rate"], TOTAL)
    for t in (0, 1, 50, 99, 100, 101, 250, 500, 999, 1000):
        np.testing.assert_allclose(float(built(t)), reference(t), rtol=1e-5, atol=1e-12, err_msg=f"{option} step {t}")


@pytest.mark.parametrize("model", options("model"))
def test_the_optimizer_named_on_the_command_line_is_recorded_whole(model):
    for option in options("optimizer"):
        cfg = compose_with(f"model={model}", f"optimizer={option}")
        assert cfg.optimizer == _optimizer_alone(option), f"model={model} leaks values into optimizer={option}"


@pytest.mark.parametrize("option", options("optimizer"))
def test_the_built_optimizer_is_the_recorded_one(option):
    """What trains follows the record alone (checked whole per model above), so one record per option suffices."""
    params = {"kernel": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "bias": jnp.linspace(0.5, 1.0, 4)}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)) * 3.0, params) for k in range(4)]
    recorded = OmegaConf.to_container(_optimizer_alone(option), resolve=True)
    built = build.build_optimizer(recorded, total_steps=TOTAL, steps_per_epoch=5)
    reference = _reference_tx(recorded, TOTAL)
    state_a, state_b, p_a, p_b = built.init(params), reference.init(params), params, params
    for g in grads:
        u_a, state_a = built.update(g, state_a, p_a)
        u_b, state_b = reference.update(g, state_b, p_b)
        p_a, p_b = optax.apply_updates(p_a, u_a), optax.apply_updates(p_b, u_b)
    assert_close(p_a, p_b, rtol=1e-5, atol=1e-7)


def test_a_model_names_its_options_and_the_command_line_replaces_them():
    assert choices("model=transformer")["optimizer"] == "adamw_nanogpt"
    assert choices("model=transformer", "optimizer=sgd")["optimizer"] == "sgd"  # what .hydra/hydra.yaml records
    cfg = compose_with("model=transformer", "optimizer=sgd")
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.weight_decay == 0.0 and cfg.optimizer.grad_clip_norm is None
    assert cfg.trainer.max_steps == 5000  # the model's run length stays
    assert compose_with("model=gan", "data=fashion_mnist").trainer.batch_size == 64  # the recipe's batch stays
    assert compose_with("model=rbm", "optimizer=adam").optimizer.name == "adam"


def test_vae_main_job_is_the_tuned_recipe():
    cfg = compose_with("model=vae")
    assert cfg.data.name == "mnist" and cfg.task.name == "vae" and cfg.trainer.epochs == 150
    assert cfg.optimizer.schedule.name == "cosine" and cfg.optimizer.schedule.end_factor == 0.1
    assert cfg.expected.metric == "eval/nll" and cfg.expected.value == 92.0
    assert compose_with("model=vae", "trainer.epochs=3").trainer.epochs == 3


def test_experiment_overrides_the_defaults():
    cfg = compose_with("experiment=mnist_vae_burda2015")
    assert cfg.trainer.batch_size == 20 and cfg.task.iw_samples == 5000 and cfg.optimizer.eps == 1e-4
    assert cfg.optimizer.schedule.name == "piecewise"


def test_an_experiment_that_sets_a_groups_values_refuses_another_option_of_that_group():
    check_presets({"experiment": "cifar10_cnn"}, ["experiment=cifar10_cnn", "optimizer.learning_rate=0.1"])
    with pytest.raises(SettingsError, match=r"experiment=cifar10_cnn sets optimizer values .*\(optimizer.KEY=VALUE\)"):
        check_presets({"experiment": "cifar10_cnn"}, ["experiment=cifar10_cnn", "optimizer=sgd_cosine"])
    check_presets({"experiment": "shakespeare_char"}, ["experiment=shakespeare_char", "optimizer=sgd"])


@pytest.mark.parametrize(
    "model, data, shape",
    [("vae", "cifar10", (32, 32, 3)), ("vae", "fashion_mnist", (28, 28, 1)), ("gan", "cifar10", (32, 32, 3)),
     ("autoencoder", "cifar10", (32, 32, 3))],
)
def test_image_models_take_their_shape_from_the_data(model, data, shape):
    built, _, _ = build_all(compose_with(f"model={model}", f"data={data}"))
    assert tuple(built.image_shape) == shape


def test_output_width_vocabulary_and_context_come_from_the_data():
    mlp, task, _ = build_all(compose_with("model=mlp", "data=cifar10"))
    assert mlp.num_outputs == 10 and task.class_names[0] == "airplane"
    regressor, _, _ = build_all(compose_with("experiment=diabetes_mlp_regression"))
    assert regressor.num_outputs == 1
    gpt, lm, _ = build_all(compose_with("experiment=shakespeare_char_cpu"))
    assert gpt.vocab_size == 65 and gpt.max_len == 64 and len(lm.vocabulary) == 65


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=transformer", "data=mnist"], "model=transformer needs tokens .* data=mnist has none"),
        (["model=vae", "data=tiny_shakespeare"], "model=vae needs images .* data=tiny_shakespeare has none"),
        (["model=vae", "data=cifar10", "model.image_shape=[28,28,1]"], r"model.image_shape=\[28, 28, 1\] does not fit"),
    ],
)
def test_a_model_that_does_not_fit_the_data_fails_in_one_line_at_build_time(overrides, message):
    with pytest.raises(SettingsError, match=message) as error:
        build_all(compose_with(*overrides))
    assert "\n" not in str(error.value)


def test_schemas_are_not_options_of_the_groups():
    assert "vae_schema" not in options("model")
    with pytest.raises(Exception, match="vae_schema"):
        compose_with("model=vae_schema")


def test_library_checks_suggest_the_closest_setting():
    spec = build.DataSpec("mnist", image_shape=(28, 28, 1))
    with pytest.raises(SettingsError, match="did you mean latent_dim"):
        build.build_model({"name": "vae", "latnt_dim": 3}, spec)
    with pytest.raises(SettingsError, match="did you mean end_factor"):
        build.build_optimizer({"name": "adam", "schedule": {"name": "cosine", "end_factr": 0.1}}, total_steps=10,
                              steps_per_epoch=1)


def test_precision_auto_is_float32_on_cpu_and_bfloat16_on_accelerators():
    assert build.compute_dtype("auto", "cpu") == jnp.float32
    assert build.compute_dtype("auto", "gpu") == jnp.bfloat16 and build.compute_dtype("auto", "tpu") == jnp.bfloat16
    model = build.build_model({"name": "transformer"}, build.DataSpec("t", vocab_size=5, seq_len=8),
                              precision="bfloat16")
    assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32
    with pytest.raises(SettingsError, match="precision='half'"):
        build.compute_dtype("half")


def test_every_trainer_setting_is_a_field_of_the_loop_or_the_run():
    from jaxdl.training.config import TrainerSettings

    assert set(compose_with().trainer) == {f.name for f in dataclasses.fields(TrainerSettings)}
