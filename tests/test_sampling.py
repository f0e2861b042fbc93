"""Autoregressive generation: the cached path equals recomputation, reproducible draws, long outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl import sampling
from jaxdl.models.rnn import RNNLM
from jaxdl.models.transformer import Transformer
from jaxdl.tasks.language_model import LanguageModelTask
from tests.helpers import run_steps
from tests.tasks.test_language_model import SMALL, make_batch


def trained_transformer(steps=60):
    model = Transformer(**SMALL)
    state, _ = run_steps(LanguageModelTask(model), optax.adam(3e-3), make_batch(8, seed=3), 1, steps)
    return model, state.params


def test_cached_greedy_decoding_equals_full_recomputation_token_for_token():
    model, params = trained_transformer()
    prompt = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    cached = sampling.generate(model, params, prompt, 13, key=jax.random.key(0), temperature=0.0, use_cache=True)
    recomputed = sampling.generate(model, params, prompt, 13, key=jax.random.key(0), temperature=0.0, use_cache=False)
    assert cached.shape == (2, 16)  # prompt + output fill max_len exactly
    np.testing.assert_array_equal(cached, recomputed)
    np.testing.assert_array_equal(cached[:, :3], prompt)
    assert len(np.unique(cached[:, 3:])) > 1  # not a degenerate constant output


def test_cached_sampling_equals_recomputation_and_is_reproducible():
    model, params = trained_transformer()
    prompt = np.array([[1], [7]], np.int32)
    settings = dict(key=jax.random.key(5), temperature=1.0, top_k=5)
    cached = sampling.generate(model, params, prompt, 15, use_cache=True, **settings)
    np.testing.assert_array_equal(cached, sampling.generate(model, params, prompt, 15, use_cache=False, **settings))
    np.testing.assert_array_equal(cached, sampling.generate(model, params, prompt, 15, **settings))  # cache by default
    other = sampling.generate(model, params, prompt, 15, use_cache=True, **{**settings, "key": jax.random.key(6)})
    assert not np.array_equal(cached, other)


def test_generation_beyond_the_context_keeps_going():
    model, params = trained_transformer(steps=1)
    out = sampling.generate(model, params, np.array([[1, 2]], np.int32), 40, key=jax.random.key(0), temperature=0.8)
    assert out.shape == (1, 42) and out.min() >= 0 and out.max() < 11


def test_any_length_beyond_the_context_compiles_two_programs_and_extends_the_shorter_outputs():
    model, params = trained_transformer(steps=2)
    prompt = np.array([[3, 1, 4]], np.int32)  # a prompt length no other test uses
    before = sampling._cached_segment._cache_size()
    outs = {n: sampling.generate(model, params, prompt, n, key=jax.random.key(1), temperature=0.7, top_k=3)
            for n in (30, 37, 41, 60)}  # context 16: every length restarts the cache, ending at other offsets;
    # (sampling settings no other test uses, so none of these programs is compiled already)
    assert sampling._cached_segment._cache_size() - before == 2  # the first segment and the restart
    for n, out in outs.items():
        assert out.shape == (1, 3 + n)
        np.testing.assert_array_equal(out, outs[60][:, : 3 + n])  # token j depends only on what comes before it


def test_a_model_without_a_cache_recomputes_and_refuses_the_cache():
    model = RNNLM(vocab_size=11, hidden_dim=8, embed_dim=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), train=False)["params"]
    out = sampling.generate(model, params, np.array([[1, 2]], np.int32), 6, key=jax.random.key(0), temperature=0.0)
    logits = model.apply({"params": params}, jnp.asarray(out[:, :-1]), train=False)
    np.testing.assert_array_equal(out[0, 2:], np.argmax(logits[0, 1:], -1))  # greedy: each token the argmax
    with pytest.raises(ValueError, match="no key/value cache"):
        sampling.generate(model, params, np.array([[1]], np.int32), 2, key=jax.random.key(0), use_cache=True)
    with pytest.raises(ValueError, match="prompt must be int"):
        sampling.generate(model, params, np.array([1, 2], np.int32), 2, key=jax.random.key(0))


def test_sample_logits_greedy_and_top_k():
    logits = jnp.array([[0.0, 3.0, 1.0, 2.0]])
    assert int(sampling.sample_logits(jax.random.key(0), logits, 0.0, None)[0]) == 1
    draws = {int(sampling.sample_logits(jax.random.key(i), logits, 1.0, 2)[0]) for i in range(50)}
    assert draws == {1, 3}  # only the two most likely tokens
