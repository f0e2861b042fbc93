"""Classification with on-device augmentation: training sees augmented inputs, evaluation does not,
and the step is the same on 1 device and on 8."""

import jax
import numpy as np
import optax

from jaxdl.models.cnn import CNN
from jaxdl.tasks.classification import ClassificationTask
from tests.conftest import assert_close
from tests.helpers import run_steps

AUGMENT = {"crop_pad": 2, "crop_mode": "reflect", "flip": True, "cutout_size": 4}


def batch(n=16):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), "label": rng.integers(0, 10, n),
            "index": np.arange(n, dtype=np.int32)}


def task():
    model = CNN(channels=(4,), kernel_size=3, padding="SAME", dense_dims=(8,), dropout_rate=0.3, batch_norm=True)
    return ClassificationTask(model, augment=AUGMENT, normalize_mean=[0.5] * 3, normalize_std=[0.25] * 3)


def test_inputs_are_augmented_only_with_a_key():
    t, b = task(), batch()
    plain = t.inputs(b)
    np.testing.assert_allclose(plain, (b["image"] / 255.0 - 0.5) / 0.25, atol=1e-5)
    augmented = t.inputs(b, jax.random.key(0))
    assert augmented.shape == plain.shape and not np.allclose(augmented, plain)
    np.testing.assert_array_equal(augmented, t.inputs(b, jax.random.key(0)))


def test_augmented_step_is_the_same_on_one_and_eight_devices():
    one, h1 = run_steps(task(), optax.sgd(0.1), batch(), 1, steps=3)
    eight, h8 = run_steps(task(), optax.sgd(0.1), batch(), 8, steps=3)
    m1, m8 = h1[-1], h8[-1]
    assert_close(eight.params, one.params, rtol=1e-4, atol=1e-5)
    assert_close(eight.batch_stats, one.batch_stats, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m8["loss"][0], m1["loss"][0], rtol=1e-5)
