"""Label smoothing and airbench's test-time augmentation in the classification task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.models.cnn import CNN
from jaxdl.tasks.classification import ClassificationTask


def make(**options):
    model = CNN(channels=(4,), kernel_size=3, padding="SAME", dense_dims=())
    return ClassificationTask(model, **options)


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    task = make(num_classes=3, label_smoothing=0.3)
    log_probs = jax.nn.log_softmax(logits)[0]
    expected = -(0.7 + 0.1) * log_probs[0] - 0.1 * log_probs[1] - 0.1 * log_probs[2]
    np.testing.assert_allclose(task.train_loss(logits, labels), [expected], rtol=1e-6)
    np.testing.assert_allclose(make(num_classes=3).train_loss(logits, labels), [-log_probs[0]], rtol=1e-6)


def test_tta_levels_average_the_views():
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "label": rng.integers(0, 10, 4),
             "index": np.arange(4, dtype=np.int32), "mask": np.array([True, True, True, False])}
    task = make(tta_level=2)
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    x = task.inputs(batch)
    plain = task.logits(state, x)
    np.testing.assert_allclose(task.tta_logits(state, x, 0), plain)
    mirrored = 0.5 * plain + 0.5 * task.logits(state, x[:, :, ::-1])
    np.testing.assert_allclose(task.tta_logits(state, x, 1), mirrored, rtol=1e-5, atol=1e-6)
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [padded[:, :8, :8], padded[:, 2:, 2:]]
    level1 = [task.tta_logits(state, v, 1) for v in views]
    np.testing.assert_allclose(task.tta_logits(state, x, 2), 0.5 * mirrored + 0.25 * (level1[0] + level1[1]), rtol=1e-5, atol=1e-6)
    sums = task.tta_eval_step(state, batch, jax.random.key(0))
    assert float(sums["count"]) == 3.0 and 0.0 <= float(sums["correct_sum"]) <= 3.0


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="tta_level"):
        make(tta_level=3)
    with pytest.raises(ValueError, match="label_smoothing"):
        make(label_smoothing=1.0)
