"""Supervised trace classifier: finite steps, device invariance, scores evaluated as anomalies."""

import jax
import numpy as np
import optax
import pytest

from jaxdl.data.sequences import ATTACK, HOLDOUT, TEST_NORMAL, trace_windows
from jaxdl.models.rnn import RNNLM
from jaxdl.tasks.base import RunFacts
from jaxdl.tasks.trace_classification import TraceClassificationTask
from tests.conftest import assert_close
from tests.helpers import eval_batch, run_steps

MODEL = RNNLM(vocab_size=11, hidden_dim=8, embed_dim=4, num_classes=2)


def windows(normal, attack, groups=None):
    w = trace_windows(normal + attack, seq_len=6, context=1)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(attack))].astype(np.int32)
    w["label"] = labels[w["trace"]]
    w["index"] = np.arange(len(w["tokens"]), dtype=np.int32)
    if groups is not None:
        w["group"] = np.asarray(groups, np.int32)[w["trace"]]
        w["family"] = w["label"].copy()
    return w


def data(seed=0):
    rng = np.random.default_rng(seed)
    normal = [rng.integers(1, 5, rng.integers(4, 15)) for _ in range(6)]
    attack = [rng.integers(6, 11, rng.integers(4, 15)) for _ in range(4)]
    return normal, attack


def train_batch(n=16):
    w = windows(*data())
    return {k: v[:n] for k, v in w.items() if k != "trace"}


def test_the_constructor_takes_the_report_settings_only():
    with pytest.raises(TypeError, match="sample_tokens"):
        TraceClassificationTask(MODEL, sample_tokens=10)
    with pytest.raises(ValueError, match="task.score"):
        TraceClassificationTask(MODEL, score="median")


@pytest.mark.parametrize("dropout_rate", [0.0, 0.3])
def test_one_and_eight_devices_give_the_same_parameters(dropout_rate):
    task = TraceClassificationTask(MODEL.clone(dropout_rate=dropout_rate))
    batch = train_batch(16)
    one, h1 = run_steps(task, optax.sgd(0.5), batch, 1, 3)
    eight, h8 = run_steps(task, optax.sgd(0.5), batch, 8, 3)
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-6)
    assert np.isfinite(h1[-1]["loss"]).all() and np.unique(h8[-1]["loss"]).size == 1


def test_separable_traces_are_detected_with_a_threshold_from_normal_traces_only():
    normal, attack = data()
    task = TraceClassificationTask(MODEL, family_names=["normal", "attack"])
    train = train_batch(len(windows(normal, attack)["tokens"]) // 8 * 8)
    test_normal, test_attack = data(seed=1)
    groups = [HOLDOUT] * 3 + [TEST_NORMAL] * 3 + [ATTACK] * 4
    prepared = task.prepare(train, windows(test_normal, test_attack, groups), RunFacts(batch_size=8, epochs=1))
    state, history = run_steps(task, optax.adam(3e-2), train, 1, 80, context=prepared.context)
    assert history[-1]["accuracy"][0] > 0.9
    batch = eval_batch({k: v for k, v in prepared.eval.items() if k != "trace"})
    sums = jax.device_get(task.eval_step(state, batch, jax.random.key(0), context=prepared.context))
    metrics = task.summarize_eval(sums, prepared.context)
    assert metrics["auc"] == 1.0 and metrics["detection_at_threshold"] == 1.0
    assert 0.0 <= metrics["threshold"] <= 1.0  # a probability
    holdout_windows = (prepared.eval["group"] == HOLDOUT).sum()
    assert float(sums["count"]) == holdout_windows  # the loss sees held-out normal windows only
