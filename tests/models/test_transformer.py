"""Transformer LM: shapes, dtypes, parameter count, causality, key/value cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.transformer import Transformer
from tests.conftest import assert_close

SMALL = dict(vocab_size=11, max_len=16, num_layers=2, num_heads=2, embed_dim=16, dropout_rate=0.0)


def init(model, length=16, batch=2):
    return jax.jit(lambda key: model.init(key, jnp.zeros((batch, length), jnp.int32), train=False))(jax.random.key(0))


def apply(model, variables, tokens, *, train, mutable=False, **arrays):
    """`model.apply` as one compiled program: the tests run faster than op by op."""
    return jax.jit(lambda v, t, a: model.apply(v, t, train=train, mutable=mutable, **a))(variables, tokens, arrays)


def test_output_shape_and_dtype():
    model = Transformer(**SMALL)
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, 11)
    logits = apply(model, init(model), tokens, train=False)
    assert logits.shape == (3, 10, 11) and logits.dtype == jnp.float32


def test_default_parameter_count_is_nanogpt_shakespeare_char():
    # nanoGPT reports 10.65M without the 256 x 384 position table (98,304).
    variables = jax.eval_shape(lambda: init(Transformer(), length=256, batch=1))
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert count == 10_745_088
    assert count - 256 * 384 == 10_646_784


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = Transformer(**SMALL, dtype=jnp.bfloat16)
    variables = init(model)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
    assert apply(model, variables, jnp.ones((1, 8), jnp.int32), train=False).dtype == jnp.float32


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = Transformer(**SMALL)
    variables = init(model)
    tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, 11)
    changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 11)
    a, b = apply(model, variables, tokens, train=False), apply(model, variables, changed, train=False)
    assert_close(a[:, :7], b[:, :7])
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_output_embedding_is_tied_to_the_input_embedding():
    variables = init(Transformer(**SMALL))
    names = set(variables["params"])
    assert "wte" in names and not any("head" in n for n in names)


def test_cached_decoding_matches_the_full_forward_pass():
    model = Transformer(**SMALL)
    params = init(model)["params"]
    tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, 11)
    full = apply(model, {"params": params}, tokens, train=False)
    decoder = model.clone(decode=True)
    cache = init(decoder)["cache"]
    pieces = []
    for chunk in (tokens[:, :5], tokens[:, 5:6], tokens[:, 6:13], tokens[:, 13:]):  # a prompt, then steps
        logits, updated = apply(decoder, {"params": params, "cache": cache}, chunk, train=False, mutable=["cache"])
        cache = updated["cache"]
        pieces.append(logits)
    assert_close(jnp.concatenate(pieces, axis=1), full, rtol=1e-4, atol=1e-5)


def test_dropout_is_active_in_training_only():
    model = Transformer(**{**SMALL, "dropout_rate": 0.5})
    variables = init(model)
    tokens = jnp.ones((1, 8), jnp.int32)
    a = apply(model, variables, tokens, train=True, example_keys=jax.random.split(jax.random.key(0), 1))
    b = apply(model, variables, tokens, train=True, example_keys=jax.random.split(jax.random.key(1), 1))
    assert not np.allclose(a, b)
    assert_close(apply(model, variables, tokens, train=False), apply(model, variables, tokens, train=False))
    with pytest.raises(ValueError, match="example_keys"):
        apply(model, variables, tokens, train=True)


def test_dropout_masks_are_those_of_flax_dropout_applied_one_example_at_a_time():
    # The model contract's per-example streams reproduce the masks of the former convention (flax's
    # nn.Dropout, the model applied to each example with that example's key as its "dropout" rng).
    model = Transformer(**{**SMALL, "dropout_rate": 0.3})
    variables = init(model)
    tokens = jax.random.randint(jax.random.key(1), (3, 12), 0, 11)
    keys = jax.random.split(jax.random.key(2), 3)
    batched = apply(model, variables, tokens, train=True, example_keys=keys)
    for b in range(3):
        alone = apply(model, variables, tokens[b : b + 1], train=True, example_keys=keys[b : b + 1])
        assert_close(alone, batched[b : b + 1], rtol=1e-5, atol=1e-5)
    assert model.context_length == 16 and model.cached().decode


def test_too_long_input_is_refused():
    model = Transformer(**SMALL)
    with pytest.raises(ValueError, match="max_len=16"):
        model.init(jax.random.key(0), jnp.zeros((1, 17), jnp.int32), train=False)
