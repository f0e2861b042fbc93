"""Language-model objective: steps, device invariance, exact eval sums, trace scores as anomaly metrics."""

import json

import jax
import numpy as np
import optax
import pytest

from jaxdl.data.sequences import ATTACK, HOLDOUT, TEST_NORMAL, trace_windows
from jaxdl.models.rnn import RNNLM
from jaxdl.models.transformer import Transformer
from jaxdl.tasks.base import RunFacts
from jaxdl.tasks.language_model import LanguageModelTask
from tests.conftest import assert_close
from tests.helpers import eval_batch, run_steps

SMALL = dict(vocab_size=11, max_len=16, num_layers=2, num_heads=2, embed_dim=16, dropout_rate=0.0)


def make_batch(n=16, length=16, seed=0, ragged=False):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 11, (n, length + 1)).astype(np.int32)
    mask = np.ones((n, length), bool)
    if ragged:  # later examples end early: uneven valid counts per device shard
        for i in range(n):
            mask[i, length - i % length :] = False
    return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "token_mask": mask, "index": np.arange(n, dtype=np.int32)}


@pytest.mark.parametrize("model", [Transformer(**SMALL), RNNLM(vocab_size=11, hidden_dim=16, embed_dim=8)])
def test_one_step_gives_finite_metrics(model):
    _, history = run_steps(LanguageModelTask(model), optax.adam(1e-3), make_batch(), 1, 1)
    assert set(history[0]) == {"loss", "accuracy", "grad_norm"}
    assert all(np.isfinite(v).all() for v in history[0].values())
    assert abs(float(history[0]["loss"][0]) - np.log(11)) < 0.3  # near uniform at init


def test_fixed_batch_is_overfit():
    task = LanguageModelTask(Transformer(**SMALL))
    _, history = run_steps(task, optax.adam(3e-3), make_batch(8), 1, 150)
    first, last = float(history[0]["loss"][0]), float(history[-1]["loss"][0])
    assert first > 2.0 and last < 0.3, (first, last)  # random tokens: ln 11 = 2.40 nats until memorised


@pytest.mark.parametrize("model", [Transformer(**{**SMALL, "dropout_rate": 0.1}),
                                   RNNLM(vocab_size=11, hidden_dim=16, embed_dim=8, num_layers=2, dropout_rate=0.2)])
def test_one_and_eight_devices_give_the_same_parameters(model):
    # SGD (Adam would hide a wrongly scaled gradient), dropout drawn per example, uneven padding per shard.
    task = LanguageModelTask(model)
    batch = make_batch(16, ragged=True)
    one, h1 = run_steps(task, optax.sgd(0.5), batch, 1, 3)
    eight, h8 = run_steps(task, optax.sgd(0.5), batch, 8, 3)
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h8[-1]["loss"][0], h1[-1]["loss"][0], rtol=1e-5)
    assert np.unique(h8[-1]["loss"]).size == 1


def test_training_draws_dropout_and_evaluation_does_not():
    task = LanguageModelTask(Transformer(**{**SMALL, "dropout_rate": 0.5}))
    batch = make_batch(4)
    params = task.init_state(jax.random.key(0), optax.sgd(0.1), batch).params
    keys = jax.random.split(jax.random.key(1), 4)
    train = task.logits(params, batch["tokens"], train=True, keys=keys)
    assert not np.allclose(train, task.logits(params, batch["tokens"], train=False))
    np.testing.assert_array_equal(train, task.logits(params, batch["tokens"], train=True, keys=keys))
    # each example's masks come from its own key: the first row does not depend on the others
    alone = task.logits(params, batch["tokens"][:1], train=True, keys=keys[:1])
    assert_close(alone, train[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="per-example keys"):
        task.logits(params, batch["tokens"], train=True)


def test_eval_sums_are_exact_over_valid_positions_of_valid_examples():
    task = LanguageModelTask(Transformer(**SMALL))
    batch = make_batch(4, ragged=True)
    batch["mask"] = np.array([True, True, True, False])  # the last example is loader padding
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    sums = jax.device_get(task.eval_step(state, batch, jax.random.key(0)))
    logits = task.model.apply({"params": state.params}, batch["tokens"], train=False)
    log_probs = jax.nn.log_softmax(logits)
    nll = -np.take_along_axis(np.asarray(log_probs), batch["targets"][..., None], -1)[..., 0]
    weights = batch["token_mask"] & batch["mask"][:, None]
    np.testing.assert_allclose(sums["nll_sum"], nll[weights].sum(), rtol=1e-5)
    assert sums["count"] == weights.sum()
    metrics = task.summarize_eval(sums)
    np.testing.assert_allclose(metrics["loss"], nll[weights].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["bpc"], metrics["loss"] / np.log(2), rtol=1e-6)


def test_text_samples_are_written_at_each_evaluation(tmp_path):
    vocabulary = "\nabcdefghij"
    task = LanguageModelTask(Transformer(**SMALL), vocabulary=vocabulary, sample_prompt="ab", sample_tokens=20)
    batch = make_batch(4)
    prepared = task.prepare(batch, batch, RunFacts(batch_size=4, epochs=1))
    assert prepared.context is None  # text needs no context
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    task.write_artifacts(state, 1, tmp_path, prepared, {})
    text = (tmp_path / "samples" / "step_000000.txt").read_text()
    assert len(text) == 22 and text.startswith("ab") and set(text) <= set(vocabulary)


def test_trace_split_reports_anomaly_metrics_and_counts_only_holdout_in_the_loss(tmp_path):
    rng = np.random.default_rng(0)
    normal = [np.tile([1, 2, 3, 4], 6) for _ in range(6)]
    attack = [rng.integers(5, 11, 20) for _ in range(3)]
    groups = np.array([HOLDOUT] * 3 + [TEST_NORMAL] * 3 + [ATTACK] * 3)
    windows = trace_windows(normal + attack, seq_len=8, context=2)
    windows["group"] = groups[windows["trace"]]
    windows["family"] = np.where(windows["group"] == ATTACK, 1, 0).astype(np.int32)
    windows["name"] = np.array([f"trace{t}" for t in windows["trace"]], object)
    task = LanguageModelTask(RNNLM(vocab_size=11, hidden_dim=16, embed_dim=8), family_names=["normal", "attack"])
    train = trace_windows(normal, seq_len=8)
    train["index"] = np.arange(len(train["tokens"]), dtype=np.int32)
    train = {k: v for k, v in train.items() if k != "trace"}
    prepared = task.prepare(train, windows, RunFacts(batch_size=8, epochs=1))
    assert "name" not in prepared.eval and list(prepared.context.names[:2]) == ["trace0", "trace1"]
    state, _ = run_steps(task, optax.adam(1e-2), train, 1, 60, context=prepared.context)
    batch = eval_batch(prepared.eval)
    sums = jax.device_get(task.eval_step(state, batch, jax.random.key(0), context=prepared.context))
    metrics = task.summarize_eval(sums, prepared.context)
    holdout_calls = sum(len(t) for t in normal[:3])
    assert metrics["loss"] < 0.5  # the periodic pattern is learnt; the loss sees held-out normal calls only
    assert metrics["auc"] == 1.0 and metrics["family_detection/attack"] == 1.0
    assert metrics["false_alarm_at_threshold"] == 0.0 and "auc_max_window" in metrics
    assert float(sums["count"]) == holdout_calls
    task.write_artifacts(state, 1, tmp_path, prepared, sums)
    assert json.loads((tmp_path / "anomaly.json").read_text())["score"] == "mean"
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "scores.csv").read_text().count("\n") == 10
