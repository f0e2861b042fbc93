"""Regression objective: standardization from the training split only, units, learning, devices."""

import math

import jax
import numpy as np
import optax
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from jaxdl.models.mlp import MLP
from jaxdl.tasks.base import RunFacts
from jaxdl.tasks.regression import RegressionTask
from tests.conftest import assert_close
from tests.helpers import evaluate, run_steps


def make_split(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(50.0, 10.0, (n, 3))
    y = 200.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1] + 0.05 * (x[:, 2] - 50.0) ** 2 + rng.normal(0, 5.0, n)
    return {"features": x.astype(np.float32), "target": y.astype(np.float32), "index": np.arange(n, dtype=np.int32)}


def summary(task, state, prepared, devices=1):
    totals = evaluate(task, state, prepared.eval, devices, context=prepared.context)
    return task.summarize_eval(totals, prepared.context)


def prepare(task, train, test):
    return task.prepare(train, test, RunFacts(batch_size=len(train["index"]), epochs=1))


def test_standardization_is_fitted_on_the_training_split_only():
    task = RegressionTask(MLP(hidden_dims=(8,), num_outputs=1))
    train, test = make_split(64, 0), make_split(32, 1)
    test["features"][:, 0] += 1000.0  # a shifted test split must not move the statistics
    prepared = prepare(task, train, test)
    std_train, std_test = prepared.train, prepared.eval
    np.testing.assert_allclose(std_train["features"].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std_train["target"].std(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(prepared.context.stats.x_mean, train["features"].mean(0), rtol=1e-5)
    assert std_test["features"][:, 0].mean() > 50  # the shift survives: test stats were not used
    np.testing.assert_array_equal(prepared.context.raw_eval[0], test["features"])  # the baseline's original units


def test_eval_step_reports_rmse_and_r2_in_original_units():
    task = RegressionTask(MLP(hidden_dims=(8,), num_outputs=1))
    train, test = make_split(64, 0), make_split(40, 1)
    prepared = prepare(task, train, test)
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), prepared.eval)
    pred = np.asarray(task.predict(state, prepared.eval["features"], prepared.context.stats))[:, 0]
    metrics = summary(task, state, prepared, devices=8)
    np.testing.assert_allclose(metrics["rmse"], math.sqrt(np.mean((pred - test["target"]) ** 2)), rtol=1e-4)
    np.testing.assert_allclose(metrics["r2"], r2_score(test["target"], pred), rtol=1e-4, atol=1e-5)


def test_network_learns_a_nonlinear_target_better_than_the_linear_baseline():
    task = RegressionTask(MLP(hidden_dims=(32, 32), num_outputs=1))
    train, test = make_split(256, 0), make_split(128, 1)
    prepared = prepare(task, train, test)
    state, _ = run_steps(task, optax.adam(1e-2), prepared.train, 1, 400, context=prepared.context)
    metrics = summary(task, state, prepared)
    baseline = task.final_evaluation(None, state, prepared)
    linear = LinearRegression().fit(train["features"], train["target"]).predict(test["features"])
    linear_rmse = math.sqrt(np.mean((linear - test["target"]) ** 2))
    np.testing.assert_allclose(baseline["eval/linear_rmse"], linear_rmse, rtol=1e-4)
    assert metrics["rmse"] < 0.8 * baseline["eval/linear_rmse"], (metrics, baseline)
    assert metrics["r2"] > baseline["eval/linear_r2"]


@pytest.mark.parametrize("options", [dict(batch_norm=True), dict(dropout_rate=0.2)])
def test_one_and_eight_devices_give_the_same_parameters(options):
    task = RegressionTask(MLP(hidden_dims=(16,), num_outputs=1, **options))
    train = prepare(task, make_split(32, 0), make_split(8, 1)).train
    one, h1 = run_steps(task, optax.sgd(0.05), train, 1, 3)
    eight, h8 = run_steps(task, optax.sgd(0.05), train, 8, 3)
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h8[-1]["loss"][0], h1[-1]["loss"][0], rtol=1e-5)


def test_output_width_must_match_the_targets():
    task = RegressionTask(MLP(hidden_dims=(8,), num_outputs=10))
    with pytest.raises(ValueError, match="model.num_outputs=1"):
        task.init_state(jax.random.key(0), optax.sgd(0.1), prepare(task, make_split(8, 0), make_split(8, 1)).train)
