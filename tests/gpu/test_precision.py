"""bfloat16 on the GPU: the Transformer's training step and cuDNN attention agree with float32 / XLA.

Tolerances, and why: bfloat16 keeps 8 significant bits (relative rounding
2^-9, about 0.2 %), while matrix products and softmax statistics accumulate
in float32. One step of the language model from the same float32 parameters
(SGD, so the update is the gradient) must give a loss within 0.02 nats of
float32 (loss about ln 65 = 4.2 nats there: 0.5 %), a gradient norm within
5 % and an update pointing the same way (cosine >= 0.99); 20 Adam steps on a
fixed batch must end within 5 % of float32's loss. cuDNN's fused attention
on bfloat16 inputs must stay within 0.02 (absolute; outputs are averages of
N(0, 1) values) of float32 XLA attention on the same rounded inputs, like
XLA's own bfloat16 attention, and its gradients within 2 % (relative norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models.transformer import Transformer
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.training import parallel

pytestmark = pytest.mark.gpu

SHAPES = dict(vocab_size=65, max_len=128, num_layers=2, num_heads=4, embed_dim=128, dropout_rate=0.0)
LOSS_ATOL = 0.02  # nats, one step
GRAD_NORM_RTOL = 0.05
UPDATE_COSINE = 0.99
TRAJECTORY_RTOL = 0.05  # after 20 Adam steps
ATTENTION_ATOL = 0.02
ATTENTION_GRAD_RTOL = 0.02


def text_batch(n: int = 16, length: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SHAPES["vocab_size"], (n, length + 1)).astype(np.int32)
    return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "token_mask": np.ones((n, length), bool),
            "index": np.arange(n, dtype=np.int32)}


def train(dtype, tx, devices, steps: int):
    """`steps` language-model steps of the Transformer computing in `dtype` from the float32 init; (params, losses)."""
    batch = text_batch()
    init_task = LanguageModelTask(Transformer(**SHAPES))
    task = LanguageModelTask(Transformer(**SHAPES, dtype=dtype))  # parameters stay float32 (param_dtype)
    with jax.default_device(devices[0]):
        state = init_task.init_state(jax.random.key(0), tx, batch)
    step = parallel.data_parallel(task.train_step, devices[:1], returns_state=True)
    replicated, sharded = parallel.replicate(state, devices[:1]), parallel.shard(batch, 1)
    history = []
    # The float32 reference at full precision: by default XLA computes float32 products in TF32 on these GPUs.
    with jax.default_matmul_precision("highest" if dtype == jnp.float32 else None):
        for _ in range(steps):
            replicated, metrics = step(replicated, sharded, jax.random.key(1))
            history.append({k: float(v[0]) for k, v in jax.device_get(metrics).items()})
    return state.params, parallel.to_host(replicated).params, history


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_bf16_transformer_step_agrees_with_float32(gpus):
    start, f32, f32_history = train(jnp.float32, optax.sgd(0.1), gpus, 1)
    _, bf16, bf16_history = train(jnp.bfloat16, optax.sgd(0.1), gpus, 1)
    assert abs(bf16_history[0]["loss"] - f32_history[0]["loss"]) <= LOSS_ATOL, (bf16_history, f32_history)
    np.testing.assert_allclose(bf16_history[0]["grad_norm"], f32_history[0]["grad_norm"], rtol=GRAD_NORM_RTOL)
    u32, u16 = flat(f32) - flat(start), flat(bf16) - flat(start)
    cosine = u16 @ u32 / (np.linalg.norm(u16) * np.linalg.norm(u32))
    assert cosine >= UPDATE_COSINE, cosine


def test_bf16_transformer_training_follows_float32(gpus):
    _, _, f32_history = train(jnp.float32, optax.adam(3e-3), gpus, 20)
    _, _, bf16_history = train(jnp.bfloat16, optax.adam(3e-3), gpus, 20)
    first, last = f32_history[0]["loss"], f32_history[-1]["loss"]
    assert last < first - 0.5, (first, last)  # it learns, so the comparison means something
    np.testing.assert_allclose(bf16_history[-1]["loss"], last, rtol=TRAJECTORY_RTOL)


def attention_inputs(seed: int = 0):
    """q, k, v bfloat16 [B, T, N, H] = [4, 256, 6, 64] (the shakespeare_char Transformer's heads) and a cotangent."""
    keys = jax.random.split(jax.random.key(seed), 4)
    shape = (4, 256, 6, 64)
    q, k, v, cotangent = (jax.random.normal(key, shape, jnp.float32).astype(jnp.bfloat16) for key in keys)
    return q, k, v, cotangent


def attention(implementation):
    def fn(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)

    return fn


def test_cudnn_attention_agrees_with_xla(gpus):
    with jax.default_device(gpus[0]):
        q, k, v, cotangent = attention_inputs()
        cudnn = jax.jit(attention("cudnn"))
        assert "cudnn" in cudnn.lower(q, k, v).compile().as_text().lower()  # the fused cuDNN kernel, not a fallback
        with jax.default_matmul_precision("highest"):
            reference = jax.jit(attention("xla"))(*(x.astype(jnp.float32) for x in (q, k, v)))
        out_cudnn = cudnn(q, k, v)
        out_xla = jax.jit(attention("xla"))(q, k, v)
        assert out_cudnn.dtype == jnp.bfloat16
        for out in (out_cudnn, out_xla):
            np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(reference), atol=ATTENTION_ATOL)

        def grads(fn, dtype):
            def loss(q, k, v):
                return jnp.sum(fn(q, k, v).astype(jnp.float32) * cotangent.astype(jnp.float32))

            with jax.default_matmul_precision("highest" if dtype == jnp.float32 else None):
                return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*(x.astype(dtype) for x in (q, k, v)))

        pairs = zip(grads(attention("cudnn"), jnp.bfloat16), grads(attention("xla"), jnp.float32), strict=True)
        for got, want in pairs:
            got, want = np.asarray(got, np.float32), np.asarray(want)
            assert np.linalg.norm(got - want) <= ATTENTION_GRAD_RTOL * np.linalg.norm(want)
