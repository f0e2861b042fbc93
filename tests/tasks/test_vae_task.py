"""VAE objective and its steps: finiteness, learning, compilation, device invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models.vae import VAE
from jaxdl.tasks.vae import VAETask, bernoulli_nll
from jaxdl.tasks.base import Prepared, RunFacts
from jaxdl.training import parallel
from tests.conftest import assert_close
from tests.helpers import evaluate, evaluator, run_steps

SMALL = dict(latent_dim=4, hidden_dims=(32,))


def make_batch(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = (rng.random((n, 28, 28, 1)) < 0.3).astype(np.uint8) * 255
    return {"image": image, "index": np.arange(n, dtype=np.int32), "mask": np.ones(n, bool)}


def test_bernoulli_nll_is_summed_over_pixels_in_nats():
    logits = jnp.zeros((2, 28, 28, 1))  # p = 0.5 for every pixel
    np.testing.assert_allclose(bernoulli_nll(logits, jnp.ones_like(logits)), 784 * np.log(2.0), rtol=1e-6)


def test_one_step_gives_finite_metrics():
    task = VAETask(VAE(**SMALL))
    _, history = run_steps(task, optax.adam(1e-3), make_batch(), 1, steps=1)
    metrics = history[0]
    assert set(metrics) == {"elbo", "recon", "kl", "grad_norm"}
    assert all(np.isfinite(v).all() for v in metrics.values())
    np.testing.assert_allclose(metrics["elbo"], metrics["recon"] + metrics["kl"], rtol=1e-5)


def test_fixed_batch_is_overfit():
    task = VAETask(VAE(**SMALL), binarize_train=False)
    _, history = run_steps(task, optax.adam(3e-3), make_batch(8), 1, steps=300)
    first, last = float(history[0]["elbo"][0]), float(history[-1]["elbo"][0])
    # Random binary images at 30% density carry 784 * H(0.3) = 479 nats of entropy;
    # memorising 8 of them must push the bound far below that.
    assert first > 500 and last < 200, (first, last)


def test_step_compiles_once_over_several_calls():
    traces = []

    class CountingTask(VAETask):
        def loss_fn(self, params, x, keys):
            traces.append(1)
            return super().loss_fn(params, x, keys)

    task = CountingTask(VAE(**SMALL))
    devices = parallel.select_devices(1)
    state = parallel.replicate(task.init_state(jax.random.key(0), optax.adam(1e-3), make_batch()), devices)
    step = parallel.data_parallel(task.train_step, devices, donate_state=True, returns_state=True)
    for seed in range(4):
        batch = make_batch(seed=seed)
        del batch["mask"]
        state, _ = step(state, parallel.shard(batch, 1), jax.random.key(seed))
    assert len(traces) == 1


@pytest.mark.parametrize("backend", ["shard_map", "pmap"])
def test_one_and_eight_devices_give_the_same_parameters(backend):
    # Plain SGD: an optimizer that normalises the update (Adam) would hide a
    # gradient that is N times too large.
    task = VAETask(VAE(**SMALL))
    batch = make_batch(16)
    one, h1 = run_steps(task, optax.sgd(0.05), batch, 1, steps=3, backend=backend)
    eight, h8 = run_steps(task, optax.sgd(0.05), batch, 8, steps=3, backend=backend)
    assert len(parallel.select_devices(8)) == 8
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h8[-1]["elbo"][0], h1[-1]["elbo"][0], rtol=1e-5)
    # every device holds the same metric after the pmean
    assert np.unique(h8[-1]["elbo"]).size == 1


def test_importance_weighted_nll_is_below_the_negative_elbo():
    task = VAETask(VAE(**SMALL), iw_samples=200, iw_chunk=50)
    batch = make_batch(16)
    state, _ = run_steps(task, optax.adam(1e-3), batch, 1, steps=20)
    x = jnp.asarray(batch["image"], jnp.float32) / 255.0
    keys = parallel.example_keys(jax.random.key(5), jnp.asarray(batch["index"]))
    nll = -task.iw_log_likelihood(state.params, x, keys)
    _, aux = task.loss_fn(state.params, x, keys)
    # log p(x) >= IWAE_K >= ELBO in expectation (Burda et al. 2016, Theorem 1).
    assert float(nll.mean()) < float(aux["elbo"].mean())
    assert float(nll.mean()) > float(aux["elbo"].mean()) - 50.0


def test_iw_samples_must_be_a_multiple_of_the_chunk():
    with pytest.raises(ValueError, match="multiple of task.iw_chunk"):
        VAETask(VAE(**SMALL), iw_samples=150, iw_chunk=100)


def test_eval_split_binarization_is_fixed_by_its_seed():
    arrays = {"image": np.full((4, 28, 28, 1), 128, np.uint8)}
    a = VAETask(VAE(**SMALL), eval_binarize_seed=0).prepare(arrays, arrays, RunFacts(batch_size=4, epochs=1))
    b = VAETask(VAE(**SMALL), eval_binarize_seed=0).binarize_eval(arrays)["image"]
    np.testing.assert_array_equal(a.eval["image"], b)
    assert a.train is arrays  # training images are binarized afresh at every step
    assert set(np.unique(b)) == {0, 255}
    c = VAETask(VAE(**SMALL), eval_binarize_seed=1).binarize_eval(arrays)["image"]
    assert not np.array_equal(b, c)
    assert VAETask(VAE(**SMALL), eval_binarize_seed=None).binarize_eval(arrays) is arrays


def test_final_evaluation_reports_the_nll_and_active_units():
    task = VAETask(VAE(**SMALL), iw_samples=100, iw_chunk=50)
    batch = make_batch(8)
    state, _ = run_steps(task, optax.adam(1e-3), batch, 1, steps=5)
    metrics = task.final_evaluation(evaluator(task, state, batch), state, Prepared(batch, batch))
    assert set(metrics) == {"eval/nll", "eval/active_units"} and 0 <= metrics["eval/active_units"] <= 4
    elbo = task.summarize_eval(evaluate(task, state, batch))["elbo"]
    assert 0.0 < metrics["eval/nll"] < elbo  # the importance-weighted bound is the tighter one
