"""RBM objective: the CD update against exact gradients, PCD chains, devices, metrics, AIS evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.evaluators.ais import base_rate_bias, neg_free_energy_sums
from jaxdl.models.rbm import RBM, free_energy, gibbs_chain, log_partition_exact
from jaxdl.tasks.base import RunFacts
from jaxdl.tasks.rbm import RBMTask, cd_gradient
from jaxdl.training.parallel import example_keys
from tests.conftest import assert_close
from tests.helpers import eval_batch, evaluate, run_steps

PATTERNS = np.array([[1, 1, 0, 0] * 4, [0, 0, 1, 1] * 4, [1, 0] * 8, [0, 1] * 8], np.uint8)  # 4 patterns of 16 pixels


def pattern_data(n: int) -> dict[str, np.ndarray]:
    label = np.arange(n) % 4
    image = (PATTERNS[label] * 255).reshape(n, 4, 4, 1).astype(np.uint8)
    return {"image": image, "label": label, "index": np.arange(n, dtype=np.int32)}


def random_params(v=6, h=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"W": jnp.asarray(rng.normal(0, 0.5, (v, h)), jnp.float32),
            "b": jnp.asarray(rng.normal(0, 0.5, v), jnp.float32),
            "c": jnp.asarray(rng.normal(0, 0.5, h), jnp.float32)}


def exact_log_likelihood(params, v):
    return -free_energy(params, v) - log_partition_exact(params)


def prepare(task, train, test):
    return task.prepare(train, test, RunFacts(batch_size=len(train["index"]), epochs=1))


def test_cd_gradient_is_the_gradient_of_the_free_energy_difference():
    params = random_params()
    rng = np.random.default_rng(1)
    v0 = jnp.asarray(rng.integers(0, 2, (8, 6)), jnp.float32)
    vk = jnp.asarray(rng.integers(0, 2, (5, 6)), jnp.float32)
    surrogate = lambda p: free_energy(p, v0).mean() - free_energy(p, vk).mean() + 0.5 * 0.01 * jnp.sum(p["W"] ** 2)
    assert_close(cd_gradient(params, v0, vk, weight_cost=0.01), jax.grad(surrogate)(params), rtol=1e-5, atol=1e-6)


def test_long_run_cd_matches_the_exact_log_likelihood_gradient():
    # With chains run long enough to forget the data, the negative phase samples
    # the model, and the CD update becomes the exact gradient of the negative
    # log-likelihood (computed here by enumerating all 2^6 visible states).
    params = {k: 2.0 * v for k, v in random_params().items()}  # strong weights: CD-1 is visibly biased
    data = jnp.asarray(np.random.default_rng(2).integers(0, 2, (8, 6)), jnp.float32)
    exact = jax.grad(lambda p: -exact_log_likelihood(p, data).mean())(params)
    starts = jnp.tile(data, (4000, 1))  # 32,000 chains, 4,000 from each data vector
    keys = example_keys(jax.random.key(0), jnp.arange(len(starts)))

    def cd_error(k):
        vk, _ = gibbs_chain(params, starts, keys, k)
        grads = cd_gradient(params, data, vk)
        return max(float(jnp.abs(grads[n] - exact[n]).max()) for n in grads)

    assert cd_error(50) < 0.02
    assert cd_error(1) > 0.05  # CD-1's bias shows at this size: the comparison above is not vacuous


@pytest.mark.parametrize("persistent", [False, True])
def test_one_step_gives_finite_metrics(persistent):
    task = RBMTask(RBM(num_hidden=8), cd_steps=2, persistent=persistent, num_chains=8)
    state, history = run_steps(task, optax.sgd(0.1), pattern_data(8), 1, 1)
    assert set(history[0]) == {"recon_error", "free_energy", "grad_norm"}
    assert all(np.isfinite(v).all() for v in history[0].values())
    assert (state.chains is not None) == persistent


@pytest.mark.parametrize("persistent, learning_rate, steps", [(False, 0.1, 300), (True, 0.02, 800)])
def test_training_raises_the_exact_log_likelihood_of_the_data(persistent, learning_rate, steps):
    # PCD needs the smaller rate: its chains must keep up with the weights (Tieleman 2008).
    task = RBMTask(RBM(num_hidden=8, init_scale=0.1), persistent=persistent, num_chains=128, weight_cost=0.0)
    data = pattern_data(32)
    context = prepare(task, data, data).context
    v = jnp.asarray(PATTERNS, jnp.float32)
    before = float(exact_log_likelihood(task.init_state(jax.random.key(0), optax.sgd(0.1), data).params, v).mean())
    state, _ = run_steps(task, optax.sgd(learning_rate, momentum=0.5), data, 1, steps, context=context)
    np.testing.assert_allclose(context.base_bias, base_rate_bias(np.full(16, 0.5), 32), rtol=1e-6)
    after = float(exact_log_likelihood(state.params, v).mean())
    # Four equally likely patterns: the best possible mean log-likelihood is log(1/4) = -1.39.
    assert before < -9.0 and after > -4.5, (before, after)


@pytest.mark.parametrize("persistent", [False, True])
def test_one_and_eight_devices_give_the_same_parameters_and_chains(persistent):
    task = RBMTask(RBM(num_hidden=8), cd_steps=3, persistent=persistent, num_chains=16)
    data = pattern_data(16)
    data["image"][::3] //= 2  # grey pixels: binarization draws matter
    one, h1 = run_steps(task, optax.sgd(0.1), data, 1, 3)
    eight, h8 = run_steps(task, optax.sgd(0.1), data, 8, 3)
    assert_close(eight.params, one.params, rtol=1e-5, atol=1e-6)
    if persistent:
        np.testing.assert_array_equal(eight.chains, one.chains)
    np.testing.assert_allclose(h8[-1]["recon_error"][0], h1[-1]["recon_error"][0], rtol=1e-5)


def test_persistent_chains_must_split_over_devices():
    task = RBMTask(RBM(num_hidden=4), persistent=True, num_chains=12)
    with pytest.raises(ValueError, match="num_chains=12"):
        run_steps(task, optax.sgd(0.1), pattern_data(8), 8, 1)


def test_eval_reports_the_free_energy_gap_on_appended_training_rows():
    task = RBMTask(RBM(num_hidden=8), free_energy_train_examples=5)
    prepared = prepare(task, pattern_data(12), pattern_data(8))
    evaluation = prepared.eval
    assert len(evaluation["image"]) == 13 and evaluation["held_out"].sum() == 8
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), prepared.train, prepared.context)
    np.testing.assert_allclose(state.params["b"], prepared.context.base_bias)  # visible biases from the data
    batch = eval_batch({**evaluation, "index": np.arange(13, dtype=np.int32)})
    metrics = task.summarize_eval(jax.device_get(task.eval_step(state, batch, jax.random.key(0))))
    v_held = jnp.asarray(evaluation["image"][:8].reshape(8, -1) / 255, jnp.float32)
    v_train = jnp.asarray(evaluation["image"][8:].reshape(5, -1) / 255, jnp.float32)
    np.testing.assert_allclose(metrics["free_energy"], free_energy(state.params, v_held).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["free_energy_gap"],
                               free_energy(state.params, v_held).mean() - free_energy(state.params, v_train).mean(),
                               rtol=1e-4, atol=1e-4)
    assert set(metrics) == {"recon_error", "pll", "free_energy", "free_energy_train", "free_energy_gap"}


def test_final_evaluation_ais_log_probability_and_feature_classifier(tmp_path):
    task = RBMTask(RBM(num_hidden=8, init_scale=0.1), weight_cost=0.0, ais_betas=3000, ais_runs=100,
                   free_energy_train_examples=4, num_sample_chains=4, sample_gibbs_steps=10, num_filters=8)
    prepared = prepare(task, pattern_data(32), pattern_data(16))
    evaluation = prepared.eval
    state, _ = run_steps(task, optax.sgd(0.1, momentum=0.5), prepared.train, 1, 200, context=prepared.context)
    batch = {**evaluation, "index": np.arange(20, dtype=np.int32)}

    def evaluator(fn):
        assert fn is neg_free_energy_sums
        return evaluate(task, state, batch, step_fn=fn, context=prepared.context)

    metrics = task.final_evaluation(evaluator, state, prepared)
    v = jnp.asarray(evaluation["image"][:16].reshape(16, -1) / 255, jnp.float32)
    exact = float(exact_log_likelihood(state.params, v).mean())
    assert abs(metrics["eval/test_log_prob"] - exact) < 0.05, (metrics, exact)
    assert metrics["eval/test_log_prob_low"] <= exact <= metrics["eval/test_log_prob_high"]
    assert metrics["eval/feature_classifier_accuracy"] == 1.0 and "eval/pixel_classifier_accuracy" in metrics
    task.write_artifacts(state, 3, tmp_path, prepared, {})
    assert (tmp_path / "samples" / "epoch_003.png").is_file() and (tmp_path / "filters" / "epoch_003.png").is_file()


def test_persistent_chains_survive_a_checkpoint_round_trip(tmp_path):
    from jaxdl.training.checkpoint import Checkpointer

    task = RBMTask(RBM(num_hidden=8), persistent=True, num_chains=8)
    state, _ = run_steps(task, optax.sgd(0.1, momentum=0.9), pattern_data(8), 1, 2)
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(2, state, meta={}, metrics={})
    checkpointer.close()
    fresh = task.init_state(jax.random.key(5), optax.sgd(0.1, momentum=0.9), pattern_data(8))
    restored, _ = Checkpointer(tmp_path).restore(fresh)
    np.testing.assert_array_equal(restored.chains, state.chains)
    assert_close(restored.params, state.params, rtol=0, atol=0)
    assert int(restored.step) == 2
