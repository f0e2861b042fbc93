"""Windows of text and traces: every target scored once, views, holdout split."""

import numpy as np
import pytest

from jaxdl.data import sequences
from jaxdl.data.sequences import ATTACK, BOS, HOLDOUT, TEST_NORMAL


def test_sliding_windows_are_views_of_next_token_pairs():
    ids = np.arange(10, dtype=np.int32)
    w = sequences.sliding_windows(ids, seq_len=4, stride=1)
    assert w["tokens"].shape == (6, 4) and not w["tokens"].flags.owndata
    np.testing.assert_array_equal(w["tokens"][2], [2, 3, 4, 5])
    np.testing.assert_array_equal(w["targets"][2], [3, 4, 5, 6])
    assert w["token_mask"].all()
    assert sequences.sliding_windows(ids, seq_len=4, stride=3)["tokens"].shape == (2, 4)
    with pytest.raises(ValueError, match="shorter than one window"):
        sequences.sliding_windows(ids[:4], seq_len=4)


@pytest.mark.parametrize(("length", "context"), [(1, 0), (7, 0), (8, 0), (23, 0), (23, 3), (40, 7)])
def test_tiling_scores_every_position_exactly_once(length, context):
    inputs = np.arange(length, dtype=np.int32) + 1
    w = sequences.tile(inputs, inputs + 100, seq_len=8, context=context)
    scored = w["targets"][w["token_mask"]]
    np.testing.assert_array_equal(np.sort(scored), inputs + 100)
    later = w["token_mask"][1:, :context]
    assert not later.any()  # context positions of later windows are read, not scored
    last = w["tokens"][-1]
    assert (last[last != BOS] == inputs[-len(last[last != BOS]) :]).all()  # the last window ends with the sequence


def test_trace_windows_start_with_bos_and_predict_every_call():
    traces = [np.array([5, 6, 7]), np.arange(1, 12)]
    w = sequences.trace_windows(traces, seq_len=4, context=1)
    np.testing.assert_array_equal(w["tokens"][0], [BOS, 5, 6, BOS])
    np.testing.assert_array_equal(w["targets"][0][:3], [5, 6, 7])
    for k, trace in enumerate(traces):
        mine = w["trace"] == k
        np.testing.assert_array_equal(np.sort(w["targets"][mine][w["token_mask"][mine]]), np.sort(trace))


def raw_traces(normal=10, attack=4, seed=0):
    rng = np.random.default_rng(seed)
    traces = [rng.integers(1, 20, rng.integers(3, 30)).astype(np.int32) for _ in range(normal + attack)]
    column = np.empty(len(traces), object)
    column[:] = traces
    label = np.r_[np.zeros(normal), np.ones(attack)].astype(np.int64)
    return {"syscalls": column, "label": label, "family": label * 2, "name": np.array([f"t{i}".encode() for i in range(len(traces))])}


def test_trace_examples_hold_out_a_seeded_share_of_normal_traces():
    train, held = sequences.trace_examples(raw_traces(), raw_traces(seed=1), seq_len=8, vocab_size=20,
                                           eval_context=2, holdout_fraction=0.3, holdout_seed=4)
    assert set(train) == {"tokens", "targets", "token_mask", "trace"}
    per_trace = {int(t): int(g) for t, g in zip(held["trace"], held["group"])}
    groups = np.array([per_trace[k] for k in range(14)])
    assert (groups == HOLDOUT).sum() == 3 and (groups[10:] == ATTACK).all()
    assert ((groups[:10] == HOLDOUT) | (groups[:10] == TEST_NORMAL)).all()
    _, again = sequences.trace_examples(raw_traces(), raw_traces(seed=1), seq_len=8, vocab_size=20,
                                        eval_context=2, holdout_fraction=0.3, holdout_seed=4)
    np.testing.assert_array_equal(again["group"], held["group"])
    assert held["name"][0] == "t0"


def test_trace_examples_refuse_calls_outside_the_vocabulary():
    with pytest.raises(ValueError, match="vocab_size=10"):
        sequences.trace_examples(raw_traces(), raw_traces(), seq_len=8, vocab_size=10)


def test_text_examples_tile_the_eval_split_and_slide_over_train():
    vocabulary = "ab"
    train = {"text": np.frombuffer(b"abbaabab" * 4, np.uint8)[None]}
    held = {"text": np.frombuffer(b"abba" * 5, np.uint8)[None]}
    tr, ev = sequences.text_examples(train, held, seq_len=6, vocabulary=vocabulary)
    assert tr["tokens"].shape == (32 - 6, 6)
    assert ev["token_mask"].sum() == 19  # each of the 19 next characters once
    tr2, _ = sequences.text_examples(train, held, seq_len=6, vocabulary=vocabulary, train_limit=5)
    assert len(tr2["tokens"]) == 5


def test_make_examples_leaves_other_datasets_alone():
    arrays = {"image": np.zeros((2, 3))}
    assert sequences.make_examples({"name": "mnist"}, arrays, arrays) == (arrays, arrays)


def test_supervised_split_moves_a_seeded_half_of_the_attacks_into_training():
    train, held = sequences.trace_examples(raw_traces(), raw_traces(seed=1), seq_len=8, vocab_size=20,
                                           holdout_fraction=0.3, holdout_seed=4, supervised_attack_fraction=0.5)
    _, unsupervised = sequences.trace_examples(raw_traces(), raw_traces(seed=1), seq_len=8, vocab_size=20,
                                               holdout_fraction=0.3, holdout_seed=4)
    assert set(np.unique(train["label"])) == {0, 1} and train["trace"].max() == 14 + 2 - 1  # 14 training + 2 attacks
    assert (held["group"] == ATTACK).any() and sorted(set(held["name"]) - set(unsupervised["name"])) == []
    assert len(set(unsupervised["name"]) - set(held["name"])) == 2  # the two attacks used for training
    kept = np.isin(unsupervised["name"], held["name"])
    np.testing.assert_array_equal(unsupervised["group"][kept], held["group"])  # same held-out normal traces
