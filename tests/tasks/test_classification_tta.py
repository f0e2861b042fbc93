"""Label smoothing and the test-time-augmented evaluation step of the classification task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.evaluators import tta
from jaxdl.models.cnn import CNN
from jaxdl.tasks.base import Prepared
from jaxdl.tasks.classification import ClassificationTask
from tests.helpers import evaluator


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


def test_tta_step_counts_the_augmented_predictions_of_valid_examples():
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), "label": rng.integers(0, 10, 4),
             "index": np.arange(4, dtype=np.int32), "mask": np.array([True, True, True, False])}
    task = make(tta_level=2)
    state = task.init_state(jax.random.key(0), optax.sgd(0.1), batch)
    sums = task.tta_eval_step(state, batch, jax.random.key(0))
    logits = tta.tta_logits(lambda x: task.logits(state, x), task.inputs(batch), 2)
    correct = (np.argmax(logits, -1) == batch["label"])[:3].sum()
    assert float(sums["count"]) == 3.0 and float(sums["correct_sum"]) == correct
    metrics = task.final_evaluation(evaluator(task, state, batch), state, Prepared(batch, batch))
    assert metrics["eval/tta_accuracy"] == pytest.approx(correct / 3)


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="tta_level"):
        make(tta_level=3)
    with pytest.raises(ValueError, match="label_smoothing"):
        make(label_smoothing=1.0)
