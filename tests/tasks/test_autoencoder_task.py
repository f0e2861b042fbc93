"""Autoencoder objective: noise, PSNR, learning, devices, k-NN/PCA and anomaly evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models.autoencoder import Autoencoder
from jaxdl.tasks.autoencoder import AutoencoderTask, corrupt, psnr
from jaxdl.tasks.base import RunFacts
from jaxdl.training.parallel import example_keys
from tests.conftest import assert_close
from tests.helpers import evaluate, run_steps

FACTS = RunFacts(batch_size=16, epochs=1)

SMALL = dict(code_dim=2, hidden_dims=(32,))


def blobs(n: int, seed: int = 0, classes: int = 3) -> dict[str, np.ndarray]:
    """Images of a bright square whose position is the class, plus pixel noise."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, n)
    image = rng.integers(0, 40, (n, 28, 28, 1))
    for i, c in enumerate(label):
        image[i, 4 + 7 * c : 11 + 7 * c, 4 + 7 * c : 11 + 7 * c] = 230
    return {"image": image.astype(np.uint8), "label": label, "index": np.arange(n, dtype=np.int32)}


def summary(task, state, arrays, devices=1):
    return task.summarize_eval(evaluate(task, state, arrays, devices))


def test_noise_levels_and_per_example_streams():
    x = jnp.full((4, 28, 28, 1), 0.5)
    keys = example_keys(jax.random.key(0), jnp.arange(4))
    masked = corrupt(keys, x, "masking", 0.25)
    np.testing.assert_allclose(float((masked == 0).mean()), 0.25, atol=0.02)
    noisy = corrupt(keys, x, "gaussian", 0.1)
    np.testing.assert_allclose(float((noisy - x).std()), 0.1, rtol=0.05)
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    np.testing.assert_array_equal(corrupt(keys[2:], x[2:], "gaussian", 0.1), noisy[2:])
    np.testing.assert_array_equal(corrupt(keys, x, "none", 0.0), x)


def test_psnr_in_decibels():
    np.testing.assert_allclose(psnr(jnp.array([1e-2, 1e-3])), [20.0, 30.0], rtol=1e-6)


def test_bad_settings_fail_with_the_fix():
    with pytest.raises(ValueError, match="task.noise_level > 0"):
        AutoencoderTask(Autoencoder(**SMALL), noise="gaussian")
    with pytest.raises(ValueError, match="choose one of"):
        AutoencoderTask(Autoencoder(**SMALL), noise="salt")


def test_fixed_batch_is_overfit_and_denoising_beats_the_noisy_input():
    task = AutoencoderTask(Autoencoder(code_dim=8, hidden_dims=(64,)), loss="mse", noise="gaussian", noise_level=0.3)
    data = blobs(32)
    before = summary(task, task.init_state(jax.random.key(0), optax.adam(3e-3), data), data)
    state, _ = run_steps(task, optax.adam(3e-3), data, 1, steps=300)
    after = summary(task, state, data)
    assert after["loss"] < 0.2 * before["loss"], (before, after)
    assert after["psnr"] > after["psnr_noisy"] + 3.0, after  # dB


def test_one_and_eight_devices_give_the_same_parameters():
    task = AutoencoderTask(Autoencoder(**SMALL), noise="masking", noise_level=0.3)
    data = blobs(16)
    one, h1 = run_steps(task, optax.sgd(0.05), data, 1, steps=3)
    eight, h8 = run_steps(task, optax.sgd(0.05), data, 8, steps=3)
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h8[-1]["loss"][0], h1[-1]["loss"][0], rtol=1e-5)


def test_final_evaluation_compares_codes_with_pca_and_writes_pictures(tmp_path):
    task = AutoencoderTask(Autoencoder(**SMALL), knn_neighbors=3)
    prepared = task.prepare(blobs(96, 0), blobs(48, 1), FACTS)
    assert prepared.context.pca.n_components == 2  # fitted once, on the training images
    state, _ = run_steps(task, optax.adam(3e-3), prepared.train, 1, steps=200, context=prepared.context)
    metrics = task.final_evaluation(None, state, prepared)
    assert set(metrics) == {"eval/knn_accuracy", "eval/pca_knn_accuracy", "eval/pca_mse"}
    assert metrics["eval/pca_knn_accuracy"] > 0.9 and metrics["eval/knn_accuracy"] > 0.9, metrics  # separable blobs
    task.write_artifacts(state, 1, tmp_path, prepared, {})
    assert (tmp_path / "codes" / "epoch_001.png").is_file()
    assert (tmp_path / "reconstructions" / "epoch_001.png").is_file()


def test_anomaly_detection_trains_on_normal_classes_only_and_reports_auc(tmp_path):
    task = AutoencoderTask(Autoencoder(code_dim=4, hidden_dims=(64,)), anomaly_class=2, knn_neighbors=0)
    prepared = task.prepare(blobs(120, 0), blobs(60, 1), FACTS)
    train = prepared.train
    assert 2 not in set(train["label"]) and len(train["label"]) < 120
    assert 2 in set(prepared.eval["label"])  # the anomalies stay in the evaluation split
    state, _ = run_steps(task, optax.adam(3e-3), {k: v[:64] for k, v in train.items()}, 1, 300)
    metrics = task.final_evaluation(None, state, prepared)
    # Squares in an unseen position reconstruct badly: the error separates them.
    assert metrics["eval/anomaly_auc"] > 0.9, metrics
    assert 0.0 <= metrics["eval/pca_anomaly_auc"] <= 1.0 and 0.0 <= metrics["eval/anomaly_detection_at_5pct"] <= 1.0
    task.write_artifacts(state, 2, tmp_path, prepared, {})
    assert (tmp_path / "roc" / "epoch_002.png").is_file()
