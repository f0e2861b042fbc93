"""Trace anomaly scores and their report: per-trace scores, window totals, the written files, raw traces."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.data.sequences import ATTACK, HOLDOUT, TEST_NORMAL, trace_windows
from jaxdl.evaluators import traces
from jaxdl.models.rnn import RNNLM


def test_trace_scores_average_calls_and_take_the_worst_window():
    scores = traces.trace_scores(np.array([2.0, 6.0, 3.0]), np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]))
    np.testing.assert_allclose(scores["mean"], [8.0 / 3.0, 1.0])
    np.testing.assert_allclose(scores["max_window"], [3.0, 1.0])


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="task.score='median'"):
        traces.TraceEvaluator(score="median")
    with pytest.raises(ValueError, match="task.false_alarm_rate=1.0"):
        traces.TraceEvaluator(false_alarm_rate=1.0)


def split():
    """Windows of 3 held-out normal, 3 test normal and 3 attack traces (two windows each), names kept."""
    w = {"trace": np.repeat(np.arange(9), 2), "index": np.arange(18, dtype=np.int32)}
    groups = np.array([HOLDOUT] * 3 + [TEST_NORMAL] * 3 + [ATTACK] * 3)
    w["group"], w["family"] = groups[w["trace"]], (groups[w["trace"]] == ATTACK).astype(np.int32)
    w["name"] = np.array([f"t{t}" for t in w["trace"]], object)
    return w


def test_prepare_keeps_the_names_out_of_the_batches():
    train = {"tokens": np.zeros((2, 3), np.int32)}
    same, eval_split, table = traces.prepare(train, split())
    assert same is train and "name" not in eval_split and list(table.names) == [f"t{k}" for k in range(9)]
    np.testing.assert_array_equal(table.group, [HOLDOUT] * 3 + [TEST_NORMAL] * 3 + [ATTACK] * 3)
    assert traces.prepare(train, train) == (train, train, None)


def test_window_sums_drop_loader_padding():
    table = traces.prepare({}, split())[2]
    batch = {"index": jnp.array([0, 5, 0]), "mask": jnp.array([True, True, False])}
    sums = traces.window_sums(table, batch, jnp.array([1.0, 2.0, 100.0]), jnp.array([3.0, 4.0, 100.0]))
    expected = np.zeros(18)
    expected[[0, 5]] = [1.0, 2.0]
    np.testing.assert_array_equal(sums["window_nll_sum"], expected)
    assert float(sums["window_count"].sum()) == 7.0


def test_report_metrics_and_files(tmp_path):
    table = traces.prepare({}, split())[2]
    per_trace = np.array([1.0, 1.1, 0.9, 0.8, 0.7, 0.6, 3.0, 2.5, 4.0])  # attacks score higher
    totals = {"window_nll_sum": np.repeat(per_trace, 2) * 5.0, "window_count": np.full(18, 5.0)}
    evaluator = traces.TraceEvaluator(family_names=["normal", "attack"])
    metrics = evaluator.summarize(totals, table)
    assert metrics["auc"] == 1.0 and metrics["auc_max_window"] == 1.0 and metrics["family_detection/attack"] == 1.0
    assert evaluator.summarize(totals, None) == {} and evaluator.summarize({}, table) == {}
    evaluator.write_report(tmp_path, 7, totals, table)
    summary = json.loads((tmp_path / "anomaly.json").read_text())
    assert summary["step"] == 7 and summary["score"] == "mean" and 1.1 <= summary["threshold"] < 2.5
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["flagged"] for r in rows[3:]] == ["0"] * 3 + ["1"] * 3 and rows[6]["family"] == "attack"
    assert [r["group"] for r in rows[2:4]] == ["holdout_normal", "test_normal"] and rows[0]["name"] == "t0"
    assert (tmp_path / "roc.png").is_file()


def test_score_traces_of_raw_traces_match_the_windows_nll():
    model = RNNLM(vocab_size=11, hidden_dim=8, embed_dim=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32), train=False)["params"]
    raw = [np.array([1, 2, 3, 4, 5, 6, 7, 8, 9]), np.array([3, 3, 3])]
    scores = traces.score_traces(model, params, raw, seq_len=6, context=2, batch_size=2)
    windows = trace_windows(raw, 6, 2)
    logits = model.apply({"params": params}, jnp.asarray(windows["tokens"]), train=False)
    nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), windows["targets"][..., None], -1)[..., 0]
    weights = windows["token_mask"]
    for k, trace in enumerate(raw):
        rows = windows["trace"] == k
        np.testing.assert_allclose(scores["mean"][k], nll[rows][weights[rows]].mean(), rtol=1e-5)
        assert weights[rows].sum() == len(trace)  # every call scored once
