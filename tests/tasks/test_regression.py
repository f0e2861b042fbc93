"""Regression objective: standardization from the training split only, units, learning, devices."""

import math

import jax
import numpy as np
import optax
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from jaxdl.models.mlp import MLP
from jaxdl.tasks.regression import RegressionTask
from jaxdl.training import parallel
from tests.conftest import assert_close


def make_split(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 10.0, (n, 3))
    y = 200.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1] + 0.05 * (x[:, 2] - 50.0) ** 2 + rng.normal(0, 5.0, n)
    return {"features": x.astype(np.float32), "target": y.astype(np.float32), "index": np.arange(n, dtype=np.int32)}


def evaluate(task, state, arrays, devices=1):
    devices = parallel.select_devices(devices)
    batch = {**arrays, "mask": np.ones(len(arrays["index"]), bool)}
    step = parallel.data_parallel(task.eval_step, devices)
    out = step(parallel.replicate(state, devices), parallel.shard(batch, len(devices)), jax.random.key(0))
    return task.summarize_eval(jax.device_get(jax.tree.map(lambda v: v[0], out)))


def fit(task, train, steps, lr=1e-2, devices=1, tx=None):
    devices = parallel.select_devices(devices)
    state = task.init_state(jax.random.key(0), tx or optax.adam(lr), train)
    replicated = parallel.replicate(state, devices)
    step = parallel.data_parallel(task.train_step, devices, donate_state=True)
    batch = parallel.shard(train, len(devices))
    for _ in range(steps):
        replicated, metrics = step(replicated, batch, jax.random.key(1))
    return parallel.unreplicate(replicated), jax.device_get(metrics)


def test_standardization_is_fitted_on_the_training_split_only():
    task = RegressionTask(MLP(hidden_dims=(8,), num_outputs=1))
    train, test = make_split(64, 0), make_split(32, 1)
    test["features"][:, 0] += 1000.0  # a shifted test split must not move the statistics
    std_train = task.prepare_train_split(train)
    std_test = task.prepare_eval_split(test)
    np.testing.assert_allclose(std_train["features"].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std_train["target"].std(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(task.x_mean, train["features"].mean(0), rtol=1e-5)
    assert std_test["features"][:, 0].mean() > 50  # the shift survives: test stats were not used


def test_eval_step_reports_rmse_and_r2_in_original_units():
    task = RegressionTask(MLP(hidden_dims=(8,), num_outputs=1))
    train, test = make_split(64, 0), make_split(40, 1)
    task.prepare_train_split(train)
    test_std = task.prepare_eval_split(test)
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), test_std)
    pred = np.asarray(task.predict(state, test_std["features"]))[:, 0]
    metrics = evaluate(task, state, test_std, devices=8)
    np.testing.assert_allclose(metrics["rmse"], math.sqrt(np.mean((pred - test["target"]) ** 2)), rtol=1e-4)
    np.testing.assert_allclose(metrics["r2"], r2_score(test["target"], pred), rtol=1e-4, atol=1e-5)


def test_network_learns_a_nonlinear_target_better_than_the_linear_baseline():
    task = RegressionTask(MLP(hidden_dims=(32, 32), num_outputs=1))
    train, test = make_split(256, 0), make_split(128, 1)
    train_std, test_std = task.prepare_train_split(train), task.prepare_eval_split(test)
    state, _ = fit(task, train_std, steps=400)
    metrics = evaluate(task, state, test_std)
    baseline = task.final_evaluation(None, state)
    linear = LinearRegression().fit(train["features"], train["target"]).predict(test["features"])
    linear_rmse = math.sqrt(np.mean((linear - test["target"]) ** 2))
    np.testing.assert_allclose(baseline["eval/linear_rmse"], linear_rmse, rtol=1e-4)
    assert metrics["rmse"] < 0.8 * baseline["eval/linear_rmse"], (metrics, baseline)
    assert metrics["r2"] > baseline["eval/linear_r2"]


@pytest.mark.parametrize("options", [dict(batch_norm=True), dict(dropout_rate=0.2)])
def test_one_and_eight_devices_give_the_same_parameters(options):
    task = RegressionTask(MLP(hidden_dims=(16,), num_outputs=1, **options))
    train = task.prepare_train_split(make_split(32, 0))
    one, m1 = fit(task, train, steps=3, devices=1, tx=optax.sgd(0.05))
    eight, m8 = fit(task, train, steps=3, devices=8, tx=optax.sgd(0.05))
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m8["loss"][0], m1["loss"][0], rtol=1e-5)


def test_output_width_must_match_the_targets():
    task = RegressionTask(MLP(hidden_dims=(8,), num_outputs=10))
    with pytest.raises(ValueError, match="model.num_outputs=1"):
        task.init_state(jax.random.key(0), optax.sgd(0.1), task.prepare_train_split(make_split(8, 0)))
