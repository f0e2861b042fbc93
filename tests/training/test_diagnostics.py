"""Gradient diagnostics: per-layer and per-time-step norms, dead units, and the loop's opt-in setting."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data.pipeline import ArrayLoader
from jaxdl.metrics.writers import MetricWriter, read_metrics
from jaxdl.models.mlp import MLP
from jaxdl.tasks.base import Prepared
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.training import diagnostics, parallel
from jaxdl.training.loop import LoopConfig, fit
from tests.conftest import assert_close


def synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8), "label": rng.integers(0, 10, n)}


def batch_of(n: int, seed: int) -> dict[str, jnp.ndarray]:
    b = synthetic(n, seed)
    return {**{k: jnp.asarray(v) for k, v in b.items()}, "index": jnp.arange(n, dtype=jnp.int32)}


def test_layer_grad_norms_group_parameters_by_module():
    grads = {"Dense_0": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.ones(3)}, "output": {"kernel": -jnp.ones((3, 1))}}
    norms = diagnostics.layer_grad_norms(grads)
    assert list(norms) == ["Dense_0", "output"]
    np.testing.assert_allclose(norms["Dense_0"], np.sqrt(6 * 4 + 3), rtol=1e-6)
    np.testing.assert_allclose(norms["output"], np.sqrt(3), rtol=1e-6)


def test_dead_unit_fractions_count_units_zero_on_every_example():
    h0 = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])  # units 0 and 3 dead
    h1 = jnp.array([[0.5, 0.5], [0.5, 0.5]])  # none dead
    out = diagnostics.dead_unit_fractions({"activations": (h0, h1)})
    assert_close(out, {"activations_0": 0.5, "activations_1": 0.0, "all": 2 / 6})


@pytest.mark.parametrize("batch_norm", [False, True])
def test_classification_diagnostics_match_a_manual_computation(batch_norm):
    task = ClassificationTask(MLP(hidden_dims=(8, 6), num_outputs=10, batch_norm=batch_norm))
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), synthetic(1, 0))
    if not batch_norm:  # kill three units of the first layer: their pre-activation is negative for every input
        params = jax.tree.map(lambda x: x, state.params)
        params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[:3].set(-1e3)
        state = state.replace(params=params)
    batch, key = batch_of(16, 1), jax.random.key(7)
    out = jax.jit(task.diagnostics)(state, batch, key)

    step_key = jax.random.fold_in(key, state.step)
    grads, _ = jax.grad(task.loss_fn, has_aux=True)(state.params, state.batch_stats, batch, step_key)
    for module, tree in grads.items():
        expected = np.sqrt(sum(np.sum(np.square(np.asarray(g))) for g in jax.tree.leaves(tree)))
        np.testing.assert_allclose(out[f"diag/grad_norm/{module}"], expected, rtol=1e-5)
    expected_modules = {"Dense_0", "Dense_1", "output"} | ({"BatchNorm_0", "BatchNorm_1"} if batch_norm else set())
    assert {k.removeprefix("diag/grad_norm/") for k in out if k.startswith("diag/grad_norm/")} == expected_modules

    x = batch["image"].reshape(16, -1).astype(jnp.float32) / 255.0
    variables = {"params": state.params, **({"batch_stats": state.batch_stats} if batch_norm else {})}
    _, inter = task.model.apply(variables, x, train=True, mutable=["intermediates", "batch_stats"])
    acts = inter["intermediates"]["activations"]
    dead = [np.mean(np.all(np.asarray(h) == 0, axis=0)) for h in acts]
    np.testing.assert_allclose(out["diag/dead/activations_0"], dead[0])
    np.testing.assert_allclose(out["diag/dead/activations_1"], dead[1])
    if not batch_norm:
        assert float(out["diag/dead/activations_0"]) >= 3 / 8


def test_time_step_grad_norms_are_those_of_the_embedding_gradient():
    class WeightedSum(nn.Module):
        """loss = sum_t w_t * sum_e x[b, t, e] / B: d loss / d x_t = w_t / B on every unit."""

        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(5, 3)(tokens)  # [B, T, E]
            w = jnp.arange(1.0, tokens.shape[1] + 1)  # [T]
            return jnp.sum(x * w[None, :, None]) / tokens.shape[0]

    model = WeightedSum()
    tokens = jnp.array([[0, 1, 2, 3], [4, 3, 2, 1]])
    params = model.init(jax.random.key(0), tokens)

    def loss(delta):
        with diagnostics.perturb_embedding(delta):
            return model.apply(params, tokens)

    norms = diagnostics.time_step_grad_norms(loss, (2, 4, 3))
    np.testing.assert_allclose(norms, np.arange(1.0, 5.0) / 2 * np.sqrt(3), rtol=1e-6)
    summary = diagnostics.summarize({}, time_norms=norms, distances=(0, 3, 10))
    assert set(summary) == {"diag/time_grad_norm/d0", "diag/time_grad_norm/d3"}
    np.testing.assert_allclose(summary["diag/time_grad_norm/d3"], norms[0])


def train(run_dir, *, diagnostics_every_steps, task=None):
    task = task or ClassificationTask(MLP(hidden_dims=(8, 8), num_outputs=10))
    prepared = Prepared(synthetic(64, 0), synthetic(24, 1))
    train_loader = ArrayLoader(prepared.train, 16, shuffle=True, seed=0, drop_remainder=True)
    eval_loader = ArrayLoader(prepared.eval, 8, shuffle=False, drop_remainder=False)
    state = task.init_state(jax.random.key(0), optax.adam(1e-2), synthetic(1, 0))
    config = LoopConfig(
        epochs=2, log_every_steps=2, progress=False, artifacts=False, monitor="eval/loss",
        diagnostics_every_steps=diagnostics_every_steps,
    )
    writer = MetricWriter(run_dir, tensorboard=True)
    try:
        results = fit(
            task, state, prepared=prepared,
            config=config, train_loader=train_loader, eval_loader=eval_loader, run_dir=run_dir,
            seed=0, devices=parallel.select_devices(2), writer=writer,
        )
    finally:
        writer.close()
    return results, list(read_metrics(run_dir / "metrics.jsonl"))


def test_diagnostics_log_every_n_steps_and_leave_training_unchanged(tmp_path, monkeypatch):
    class NoDiagnostics(ClassificationTask):
        def diagnostics(self, *args, **kwargs):
            raise AssertionError("diagnostics ran although trainer.diagnostics_every_steps=0")

    off, off_records = train(tmp_path / "off", diagnostics_every_steps=0, task=NoDiagnostics(MLP(hidden_dims=(8, 8))))
    on, on_records = train(tmp_path / "on", diagnostics_every_steps=3)
    assert on["metrics"] == off["metrics"]  # the same updates: diagnostics read the state, never change it
    diag = [r for r in on_records if any(k.startswith("diag/") for k in r)]
    assert [r["step"] for r in diag] == [0, 3, 6]
    assert {"diag/grad_norm/Dense_0", "diag/grad_norm/output", "diag/dead/all"} <= set(diag[0])
    assert all(np.isfinite(v) and v >= 0 for r in diag for k, v in r.items() if k.startswith("diag/"))
    assert not any(k.startswith("diag/") for r in off_records for k in r)
    assert any(p.name.startswith("events.") for p in (tmp_path / "on" / "tensorboard").iterdir())


def test_a_task_without_diagnostics_fails_clearly(tmp_path):
    from tests.training.test_loop import train as train_vae

    with pytest.raises(ValueError, match="diagnostics_every_steps=0"):
        train_vae(tmp_path, epochs=1, diagnostics_every_steps=1)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_language_model_time_step_norms_match_the_embedding_table_gradient(cell):
    from jaxdl.models.rnn import RNNLM
    from jaxdl.tasks.language_model import LanguageModelTask

    T = 12
    task = LanguageModelTask(RNNLM(vocab_size=16, cell=cell, hidden_dim=8, embed_dim=4))
    tokens = jnp.arange(T, dtype=jnp.int32)[None]  # one sequence, every token once: row t of the table is x_t
    batch = {
        "tokens": tokens,
        "targets": (tokens + 1) % 16,
        "token_mask": jnp.ones((1, T), bool),
        "index": jnp.zeros(1, jnp.int32),
    }
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    out = jax.jit(task.diagnostics)(state, batch, jax.random.key(1))

    def last_loss(params):
        logits = task.model.apply({"params": params}, tokens, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], batch["targets"][:, -1]).sum()

    table_grad = jax.grad(last_loss)(state.params)["embed"]["embedding"]  # [V, E]
    expected = np.linalg.norm(np.asarray(table_grad[:T]), axis=-1)  # [T]
    for d in (0, 1, 2, 5, 10):
        np.testing.assert_allclose(out[f"diag/time_grad_norm/d{d}"], expected[T - 1 - d], rtol=1e-4, atol=1e-8)
    assert "diag/time_grad_norm/d20" not in out  # beyond the sequence
    assert {"diag/grad_norm/embed", "diag/grad_norm/logits"} <= set(out)


def test_language_model_diagnostics_refuse_a_classifier():
    from jaxdl.models.rnn import RNNLM
    from jaxdl.tasks.language_model import LanguageModelTask

    task = LanguageModelTask(RNNLM(vocab_size=16, hidden_dim=8, embed_dim=4, num_classes=2))
    tokens = jnp.zeros((2, 5), jnp.int32)
    batch = {"tokens": tokens, "targets": tokens, "token_mask": jnp.ones((2, 5), bool), "index": jnp.arange(2)}
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    with pytest.raises(ValueError, match=r"next-token logits \[B, T, V\]"):
        task.diagnostics(state, batch, jax.random.key(1))
