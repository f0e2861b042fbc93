"""Supervised trace classifier: finite steps, device invariance, scores evaluated as anomalies."""

import jax
import numpy as np
import optax

from jaxdl.data.sequences import ATTACK, HOLDOUT, TEST_NORMAL, trace_windows
from jaxdl.models.rnn import RNNLM
from jaxdl.tasks.trace_classification import TraceClassificationTask
from jaxdl.training import parallel
from tests.conftest import assert_close

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


def run_steps(task, batch, devices, steps, tx):
    state = task.init_state(jax.random.key(0), tx, batch)
    replicated = parallel.replicate(state, devices)
    step = parallel.data_parallel(task.train_step, devices, donate_state=True)
    sharded = parallel.shard(batch, len(devices))
    history = []
    for _ in range(steps):
        replicated, metrics = step(replicated, sharded, jax.random.key(1))
        history.append(jax.device_get(metrics))
    return parallel.unreplicate(replicated), history


def train_batch(n=16):
    w = windows(*data())
    return {k: v[:n] for k, v in w.items() if k != "trace"}


def test_one_and_eight_devices_give_the_same_parameters():
    task = TraceClassificationTask(MODEL)
    batch = train_batch(16)
    one, h1 = run_steps(task, batch, parallel.select_devices(1), 3, optax.sgd(0.5))
    eight, h8 = run_steps(task, batch, parallel.select_devices(8), 3, optax.sgd(0.5))
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-6)
    assert np.isfinite(h1[-1]["loss"]).all() and np.unique(h8[-1]["loss"]).size == 1


def test_separable_traces_are_detected_with_a_threshold_from_normal_traces_only():
    normal, attack = data()
    task = TraceClassificationTask(MODEL, family_names=["normal", "attack"])
    state, history = run_steps(task, train_batch(len(windows(normal, attack)["tokens"]) // 8 * 8),
                               parallel.select_devices(1), 80, optax.adam(3e-2))
    assert history[-1]["accuracy"][0] > 0.9
    test_normal, test_attack = data(seed=1)
    groups = [HOLDOUT] * 3 + [TEST_NORMAL] * 3 + [ATTACK] * 4
    held = task.prepare_eval_split(windows(test_normal, test_attack, groups))
    batch = {**{k: v for k, v in held.items() if k != "trace"}, "mask": np.ones(len(held["tokens"]), bool)}
    metrics = task.summarize_eval(jax.device_get(task.eval_step(state, batch, jax.random.key(0))))
    assert metrics["auc"] == 1.0 and metrics["detection_at_threshold"] == 1.0
    assert 0.0 <= metrics["threshold"] <= 1.0  # a probability
