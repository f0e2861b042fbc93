"""The Transformer trains as nanoGPT does: initialisation, weight-decay set, schedule, and a side-by-side run.

nanoGPT (karpathy/nanoGPT `model.py`, `train.py`): Linear and Embedding weights
~ N(0, 0.02), every `c_proj.weight` ~ N(0, 0.02 / sqrt(2 n_layer)), LayerNorm
weight 1 (bias=False: no biases anywhere); AdamW decays exactly the parameters
with dim >= 2; `get_lr` warms up as lr * (it + 1) / (warmup_iters + 1) and then
decays by a cosine to min_lr at lr_decay_iters; gradients are clipped to a
global norm. The last test trains nanoGPT's own model and optimizer (written
out in PyTorch here, from `model.py` and `train.py`) next to ours from the same
weights on the same batches; it needs torch and skips without it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.models.transformer import Transformer
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.training import optim

CPU = dict(vocab_size=65, max_len=64, num_layers=4, num_heads=4, embed_dim=128, dropout_rate=0.0)  # shakespeare_char_cpu


def nanogpt_lr(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """nanoGPT train.py `get_lr`."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def cpu_params():
    model = Transformer(**CPU)
    return model.init(jax.random.key(0), jnp.zeros((1, 64), jnp.int32), train=False)["params"]


def test_initial_weights_have_nanogpt_standard_deviations():
    params = cpu_params()
    flat = {"/".join(k.key for k in path): np.asarray(v) for path, v in jax.tree_util.tree_leaves_with_path(params)}
    residual = 0.02 / math.sqrt(2 * CPU["num_layers"])
    expected = {"wte/embedding": 0.02, "wpe/embedding": 0.02}
    for i in range(CPU["num_layers"]):
        expected |= {f"block_{i}/attn/qkv/kernel": 0.02, f"block_{i}/attn/out/kernel": residual,
                     f"block_{i}/mlp/fc/kernel": 0.02, f"block_{i}/mlp/proj/kernel": residual}
    scales = {name for name in flat if name.endswith("/scale")}
    assert set(flat) == set(expected) | scales  # no biases, no separate output head (tied)
    assert len(scales) == 2 * CPU["num_layers"] + 1
    for name in scales:
        np.testing.assert_array_equal(flat[name], 1.0)
    for name, std in expected.items():
        value = flat[name]
        assert abs(value.std() / std - 1.0) < 0.05, (name, value.std(), std)  # >= 8,192 draws: 1-sigma ~0.8 %
        assert abs(value.mean()) < 4 * std / math.sqrt(value.size), name
        assert np.abs(value).max() > 3 * std, name  # a plain normal, not one truncated at 2 sigma


def test_weight_decay_reaches_embeddings_and_matrices_but_not_layernorm():
    params = cpu_params()
    tx = optim.make_optimizer("adamw", optim.make_schedule("constant", 0.1, total_steps=1, steps_per_epoch=1),
                              weight_decay=0.5, decay_min_ndim=2)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    decayed = {"/".join(k.key for k in path) for path, u in jax.tree_util.tree_leaves_with_path(updates)
               if np.any(np.asarray(u) != 0)}
    names = {"/".join(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert decayed == {n for n in names if not n.endswith("/scale")}
    assert {"wte/embedding", "wpe/embedding"} <= decayed


def test_schedule_is_nanogpt_get_lr():
    schedule = optim.make_schedule("cosine", 1e-3, total_steps=2000, steps_per_epoch=1, warmup_steps=100,
                                   warmup_offset=1, end_factor=0.1)
    ours = np.array([float(schedule(it)) for it in range(2001)])
    theirs = np.array([nanogpt_lr(it, 1e-3, 1e-4, 100, 2000) for it in range(2001)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-10)
    assert ours[0] == pytest.approx(1e-3 / 101, rel=1e-5)  # the first step moves the weights (float32)
    zero_start = optim.make_schedule("cosine", 1e-3, total_steps=2000, steps_per_epoch=1, warmup_steps=100)
    assert float(zero_start(0)) == 0.0 and float(zero_start(50)) == pytest.approx(5e-4)  # warmup_offset=0


def _torch_nanogpt(params, **sizes):
    """nanoGPT's GPT (bias=False, dropout 0; `benchmarks.peers.torch_gpt`), its weights copied from ours."""
    import torch

    from benchmarks.peers.torch_gpt import torch_gpt

    D = sizes["embed_dim"]

    def t(a, shape=None):
        a = np.asarray(a, np.float32)
        return torch.from_numpy(np.array(a.reshape(shape) if shape else a))  # a writable copy

    model = torch_gpt(**sizes)
    with torch.no_grad():
        model.wte.weight.copy_(t(params["wte"]["embedding"]))
        model.wpe.weight.copy_(t(params["wpe"]["embedding"]))
        model.ln_f.weight.copy_(t(params["ln_f"]["scale"]))
        for i, block in enumerate(model.h):
            p = params[f"block_{i}"]
            block.ln_1.weight.copy_(t(p["ln_1"]["scale"]))
            block.ln_2.weight.copy_(t(p["ln_2"]["scale"]))
            block.c_attn.weight.copy_(t(p["attn"]["qkv"]["kernel"], (D, 3 * D)).T)  # [D, 3, N, H] -> [3D, D]
            block.attn_proj.weight.copy_(t(p["attn"]["out"]["kernel"], (D, D)).T)  # [N, H, D] -> [D, D]
            block.c_fc.weight.copy_(t(p["mlp"]["fc"]["kernel"]).T)
            block.mlp_proj.weight.copy_(t(p["mlp"]["proj"]["kernel"]).T)
    return model


def _torch_loss(model, tokens: np.ndarray, targets: np.ndarray):
    """nanoGPT's training loss: mean next-token cross-entropy over all positions, nats."""
    import torch
    from torch.nn import functional as F

    logits = model(torch.from_numpy(tokens).long())
    return F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(targets).long().flatten())


@pytest.mark.slow  # about 30 s on the 2-core CPU
def test_training_matches_nanogpt_step_for_step():
    torch = pytest.importorskip("torch", reason="the nanoGPT side-by-side run needs PyTorch (an optional extra)")
    torch.manual_seed(0)
    sizes = dict(vocab_size=65, max_len=16, num_layers=2, num_heads=2, embed_dim=32)
    lr, min_lr, warmup, total, wd, clip = 1e-2, 1e-3, 3, 12, 0.5, 0.5  # large enough that decay and clipping show
    model = Transformer(**sizes, dropout_rate=0.0)
    task = LanguageModelTask(model)
    schedule = optim.make_schedule("cosine", lr, total_steps=total, steps_per_epoch=1, warmup_steps=warmup,
                                   warmup_offset=1, end_factor=min_lr / lr)
    tx = optim.make_optimizer("adamw", schedule, b1=0.9, b2=0.99, eps=1e-8, weight_decay=wd, decay_min_ndim=2,
                              grad_clip_norm=clip)
    rng = np.random.default_rng(0)
    text = rng.integers(0, 65, 5000).astype(np.int32)
    batches = []
    for _ in range(total):
        ix = rng.integers(0, len(text) - 16, 6)  # nanoGPT get_batch: random offsets, with replacement
        x = np.stack([text[i : i + 16] for i in ix])
        y = np.stack([text[i + 1 : i + 17] for i in ix])
        batches.append({"tokens": x, "targets": y, "token_mask": np.ones_like(x, bool),
                        "index": np.arange(6, dtype=np.int32)})
    state = task.init_state(jax.random.key(3), tx, batches[0])
    ref = _torch_nanogpt(jax.device_get(state.params), **sizes)

    params = list(ref.parameters())  # the tied wte appears once, as in nanoGPT's configure_optimizers
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": wd},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99), eps=1e-8)
    step = jax.jit(task.train_step)
    norms = []
    for it, batch in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = nanogpt_lr(it, lr, min_lr, warmup, total)
        loss = _torch_loss(ref, batch["tokens"], batch["targets"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)))
        opt.step()
        state, metrics = step(state, batch, jax.random.key(0))
        np.testing.assert_allclose(float(metrics["loss"]), loss.item(), rtol=2e-5)  # loss before the update
        np.testing.assert_allclose(float(metrics["grad_norm"]), norms[-1], rtol=1e-4)
    assert max(norms) > clip  # clipping acted
    back = _torch_nanogpt(jax.device_get(state.params), **sizes)
    for (name, theirs), ours in zip(ref.named_parameters(), back.parameters(), strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
