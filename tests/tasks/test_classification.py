"""Classification objective: finite steps, learning, batch norm, dropout, 1 vs 8 devices."""

import jax
import numpy as np
import optax
import pytest

from jaxdl.models.mlp import MLP
from jaxdl.tasks.base import Prepared
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.training import parallel
from tests.conftest import assert_close
from tests.helpers import evaluate, evaluator, run_steps


def make_batch(n: int = 16, seed: int = 0, classes: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    return {"image": image, "label": rng.integers(0, classes, n), "index": np.arange(n, dtype=np.int32),
            "mask": np.ones(n, bool)}


def test_one_step_gives_finite_metrics_and_eval_sums():
    task = ClassificationTask(MLP(hidden_dims=(16,), num_outputs=4), num_classes=4)
    batch = make_batch()
    state, history = run_steps(task, optax.adam(1e-3), batch, parallel.select_devices(1), steps=1)
    assert set(history[0]) == {"loss", "accuracy", "grad_norm"}
    assert all(np.isfinite(v).all() for v in history[0].values())
    totals = evaluate(task, state, batch)
    assert totals["count"] == 16 and totals["confusion"].shape == (4, 4) and totals["confusion"].sum() == 16
    metrics = task.summarize_eval(totals)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


def test_padding_is_masked_out_of_the_sums():
    task = ClassificationTask(MLP(hidden_dims=(16,), num_outputs=4), num_classes=4)
    batch = make_batch(8)
    state = task.init_state(jax.random.key(0), optax.adam(1e-3), batch)
    padded = {k: np.concatenate([v, v[:8]]) for k, v in batch.items()}
    padded["mask"][8:] = False
    one = evaluate(task, state, batch)
    two = evaluate(task, state, padded)
    assert_close(two, one, rtol=1e-6)


@pytest.mark.parametrize("options", [dict(), dict(batch_norm=True), dict(dropout_rate=0.2)])
def test_fixed_batch_is_overfit(options):
    task = ClassificationTask(MLP(hidden_dims=(64,), num_outputs=4, **options), num_classes=4)
    _, history = run_steps(task, optax.adam(1e-2), make_batch(32), parallel.select_devices(1), steps=150)
    assert float(history[0]["loss"][0]) > 1.0 and float(history[-1]["loss"][0]) < 0.05, (history[0], history[-1])
    assert float(history[-1]["accuracy"][0]) == 1.0


def test_model_output_count_must_match_the_classes():
    with pytest.raises(ValueError, match="model.num_outputs=4"):
        ClassificationTask(MLP(hidden_dims=(8,), num_outputs=3), num_classes=4).init_state(
            jax.random.key(0), optax.sgd(0.1), make_batch())


@pytest.mark.parametrize("backend", ["shard_map", "pmap"])
@pytest.mark.parametrize("options", [dict(batch_norm=True), dict(dropout_rate=0.3)])
def test_one_and_eight_devices_give_the_same_parameters(backend, options):
    # Plain SGD, so a gradient N times too large cannot hide. Batch norm
    # statistics are averaged over the mapped axis; dropout masks come from
    # per-example streams: both make 8 devices compute the 1-device step.
    task = ClassificationTask(MLP(hidden_dims=(32, 16), num_outputs=4, **options), num_classes=4)
    batch = make_batch(32)
    one, h1 = run_steps(task, optax.sgd(0.1), batch, parallel.select_devices(1), steps=3, backend=backend)
    eight, h8 = run_steps(task, optax.sgd(0.1), batch, parallel.select_devices(8), steps=3, backend=backend)
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-5)
    assert_close(eight.batch_stats, one.batch_stats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h8[-1]["loss"][0], h1[-1]["loss"][0], rtol=1e-5)
    assert not np.allclose(jax.tree.leaves(one.params)[0], jax.tree.leaves(task.init_state(
        jax.random.key(0), optax.sgd(0.1), batch).params)[0])


def test_final_evaluation_reports_per_class_accuracy():
    task = ClassificationTask(MLP(hidden_dims=(16,), num_outputs=4), num_classes=4)
    batch = make_batch()
    state = task.init_state(jax.random.key(0), optax.adam(1e-3), batch)
    metrics = task.final_evaluation(evaluator(task, state, batch), state, Prepared(batch, batch))
    totals = evaluate(task, state, batch)
    per_class = [metrics[f"eval/class_{k}_accuracy"] for k in range(4)]
    counts = np.bincount(batch["label"], minlength=4)
    np.testing.assert_allclose(np.dot(per_class, counts) / 16, task.summarize_eval(totals)["accuracy"], rtol=1e-6)
    assert metrics["eval/worst_class_accuracy"] == min(per_class)


def test_dropout_masks_follow_the_example_not_its_place_in_the_batch():
    # Per-example streams: reversing the batch reverses the per-example losses and leaves the update alone.
    task = ClassificationTask(MLP(hidden_dims=(32,), num_outputs=4, dropout_rate=0.5), num_classes=4)
    batch = make_batch(8)
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    reversed_batch = {k: v[::-1] for k, v in batch.items()}
    (_, (loss, _, _)) = task.loss_fn(state.params, None, batch, jax.random.key(3))
    (_, (loss_reversed, _, _)) = task.loss_fn(state.params, None, reversed_batch, jax.random.key(3))
    np.testing.assert_allclose(loss_reversed, loss[::-1], rtol=1e-6)
    train = task.loss_fn(state.params, None, batch, jax.random.key(3))[1][0]
    plain = task.loss_fn(state.params, None, batch, jax.random.key(4))[1][0]
    assert not np.allclose(train, plain)  # another key, other masks: dropout is on
