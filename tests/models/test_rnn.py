"""Recurrent nets: shapes and dtypes per cell, parameter count, causality, classifier head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.rnn import RNNLM
from tests.conftest import assert_close

SMALL = dict(vocab_size=13, hidden_dim=8, embed_dim=4)


@pytest.mark.parametrize(("cell", "num_layers"), [("rnn", 1), ("gru", 2), ("lstm", 2)])
def test_output_shape_and_dtype(cell, num_layers):
    model = RNNLM(cell=cell, num_layers=num_layers, **SMALL)
    tokens = jax.random.randint(jax.random.key(0), (3, 7), 0, 13)
    variables = model.init(jax.random.key(1), tokens, train=False)
    logits = model.apply(variables, tokens, train=False)
    assert logits.shape == (3, 7, 13) and logits.dtype == jnp.float32


def test_default_lstm_parameter_count_is_kims_1x200():
    # embedding 341 x 64; LSTM gates 4 x (64 + 200 + 1) x 200; softmax 200 x 341 + 341.
    variables = RNNLM().init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32), train=False)
    count = sum(p.size for p in jax.tree.leaves(variables))
    assert count == 341 * 64 + 4 * (64 * 200 + 200 * 200 + 200) + 200 * 341 + 341 == 302_365


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_changing_a_future_token_leaves_earlier_logits_unchanged(cell):
    model = RNNLM(cell=cell, **SMALL)
    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 13)
    variables = model.init(jax.random.key(1), tokens, train=False)
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 13)
    a, b = model.apply(variables, tokens, train=False), model.apply(variables, changed, train=False)
    assert_close(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_classifier_reads_the_state_at_the_last_valid_position():
    model = RNNLM(cell="gru", num_classes=2, **SMALL)
    tokens = jax.random.randint(jax.random.key(3), (2, 10), 1, 13)
    mask = jnp.arange(10)[None, :] < jnp.array([[6], [10]])
    variables = model.init(jax.random.key(1), tokens, train=False, token_mask=mask)
    padded = model.apply(variables, tokens, train=False, token_mask=mask)
    assert padded.shape == (2, 2)
    alone = model.apply(variables, tokens[:1, :6], train=False)
    assert_close(padded[0], alone[0], rtol=1e-4, atol=1e-5)
    garbage = tokens.at[0, 6:].set(7)  # what follows the valid prefix does not matter
    assert_close(model.apply(variables, garbage, train=False, token_mask=mask), padded, rtol=1e-4, atol=1e-5)


def test_unknown_cell_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        RNNLM(cell="transformer", **SMALL).init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32), train=False)
