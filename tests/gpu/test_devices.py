"""Checkpoints move between GPU and CPU; pmap and shard_map over all local GPUs give the one-device result."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest

from jaxdl.models.transformer import Transformer
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.training import parallel
from jaxdl.training.checkpoint import Checkpointer
from tests.conftest import assert_close
from tests.gpu.test_precision import text_batch

pytestmark = pytest.mark.gpu

SMALL = dict(vocab_size=65, max_len=32, num_layers=2, num_heads=2, embed_dim=32)


def trained_state(device, steps: int = 2):
    """A Transformer language-model state after `steps` Adam steps on `device` (moments and step count non-trivial)."""
    task = LanguageModelTask(Transformer(**SMALL, dropout_rate=0.0))
    batch = text_batch(8, 32)
    with jax.default_device(device):
        state = task.init_state(jax.random.key(0), optax.adam(1e-3), batch)
        step = jax.jit(task.train_step)
        for _ in range(steps):
            state, _ = step(state, batch, jax.random.key(1))
    return state


def platforms(tree) -> set[str]:
    return {device.platform for leaf in jax.tree.leaves(tree) for device in leaf.devices()}


@pytest.mark.parametrize("direction", ["gpu_to_cpu", "cpu_to_gpu"])
def test_checkpoint_restores_on_the_other_device(tmp_path, gpus, cpu, direction):
    source, destination = (gpus[0], cpu) if direction == "gpu_to_cpu" else (cpu, gpus[0])
    state = trained_state(source)
    assert platforms(state) == {source.platform}
    saver = Checkpointer(tmp_path / "checkpoints")
    saver.save(2, state, meta={"saved_on": source.platform}, metrics={})
    saver.close()

    target = jax.device_put(trained_state(destination, steps=0), destination)  # same structure, other values
    restored, meta = Checkpointer(tmp_path / "checkpoints").restore(target)
    assert meta == {"saved_on": source.platform}
    assert platforms(restored) == {destination.platform}
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # bit for bit


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_all_local_gpus_give_the_one_device_result(gpus, backend):
    # SGD, not Adam (which would hide a wrongly scaled gradient); dropout drawn per example; float32 products
    # at full precision so that 1 and N devices differ only by summation order.
    n = len(gpus)
    task = LanguageModelTask(Transformer(**SMALL, dropout_rate=0.1))
    batch = text_batch(4 * n, 32)
    with jax.default_matmul_precision("highest"), jax.default_device(gpus[0]):
        state = task.init_state(jax.random.key(0), optax.sgd(0.5), batch)
        one = state
        single = jax.jit(functools.partial(task.train_step, axis_name=None))
        for _ in range(3):
            one, one_metrics = single(one, batch, jax.random.key(1))
        mapped = parallel.data_parallel(task.train_step, gpus, backend=backend, returns_state=True)
        many, sharded = parallel.replicate(state, gpus, backend=backend), parallel.shard(batch, n)
        for _ in range(3):
            many, many_metrics = mapped(many, sharded, jax.random.key(1))
    assert_close(parallel.unreplicate(many, backend=backend).params, one.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(many_metrics["loss"]), float(one_metrics["loss"]), rtol=1e-5)
