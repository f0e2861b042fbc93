"""Checkpoints: exact round trip, which steps are kept, interrupted saves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.models.vae import VAE
from jaxdl.tasks.vae import VAETask
from jaxdl.training.checkpoint import Checkpointer
from tests.conftest import assert_close


def make_state(seed: int = 0):
    task = VAETask(VAE(latent_dim=3, hidden_dims=(8,)))
    batch = {"image": np.zeros((1, 28, 28, 1), np.uint8)}
    state = task.init_state(jax.random.key(seed), optax.adam(1e-3), batch)
    grads = jax.tree.map(jnp.ones_like, state.params)
    return state.apply_gradients(grads=grads)  # non-trivial opt_state and step


def test_round_trip_restores_every_leaf_exactly(tmp_path):
    state = make_state(0)
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    ckpt.save(7, state, meta={"progress": {"best": 1.5}}, metrics={"eval/loss": 1.5})
    ckpt.close()
    restored, meta = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss").restore(make_state(1))
    assert int(restored.step) == 1
    assert_close(restored.params, state.params, rtol=0, atol=0)
    assert_close(restored.opt_state, state.opt_state, rtol=0, atol=0)
    assert meta == {"progress": {"best": 1.5}}


def test_keeps_the_latest_and_the_best(tmp_path):
    state = make_state()
    ckpt = Checkpointer(tmp_path / "ckpt", keep_last=2, best_metric="eval/loss", mode="min")
    for step, loss in [(1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, 6.0)]:
        ckpt.save(step, state, meta={}, metrics={"eval/loss": loss})
        ckpt.wait()
    assert ckpt.all_steps() == [2, 4, 5]
    assert ckpt.latest_step() == 5
    ckpt.close()


def test_an_interrupted_save_is_ignored(tmp_path):
    state = make_state()
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    ckpt.save(3, state, meta={}, metrics={"eval/loss": 1.0})
    ckpt.close()
    # What a process killed mid-save leaves behind: an uncommitted temporary folder.
    (tmp_path / "ckpt" / "9.orbax-checkpoint-tmp").mkdir()
    assert Checkpointer(tmp_path / "ckpt", best_metric="eval/loss").latest_step() == 3
