"""airbench94's recipe: parameter groups, frozen whitening, lookahead, alternating flips, 1 vs 8 devices."""

import functools

import jax
import numpy as np
import pytest

from jaxdl.models.airbench import Airbench94, whitening_kernel
from jaxdl.tasks.airbench import AirbenchTask, param_groups
from jaxdl.tasks.base import RunFacts
from jaxdl.training import optim
from tests.conftest import assert_close
from tests.helpers import run_steps

WIDTHS = (8, 16, 16)


def data(n=32):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "label": rng.integers(0, 10, n)}


def make(total_steps=12, **options):
    """The task, its prepared run (batches of 16 from 32 images: 2 steps an epoch) and its optimizer."""
    task = AirbenchTask(Airbench94(widths=WIDTHS), whiten_bias_epochs=1, normalize_mean=[0.5] * 3,
                        normalize_std=[0.25] * 3, **options)
    arrays = data()
    prepared = task.prepare(arrays, arrays, RunFacts(batch_size=16, epochs=1, max_steps=total_steps))
    schedule = optim.make_schedule(
        "triangular", 1e-3, total_steps=total_steps, steps_per_epoch=2, warmup_steps=3, start_factor=0.2, end_factor=0.07
    )
    tx = optim.make_optimizer("sgd", schedule, momentum=0.85, nesterov=True)
    return task, prepared, tx


def init(task, prepared, tx):
    return task.init_state(jax.random.key(0), tx, prepared.train, prepared.context)


def batch(arrays, i):
    rows = slice(16 * (i % 2), 16 * (i % 2) + 16)
    return {"image": arrays["image"][rows], "label": arrays["label"][rows], "index": np.arange(32, dtype=np.int32)[rows]}


def jitted_step(task, prepared):
    return jax.jit(functools.partial(task.train_step, context=prepared.context))


def test_prepare_records_the_run_and_the_whitening_filters():
    task, prepared, _ = make(total_steps=7)
    context = prepared.context
    assert (context.batch_size, context.steps_per_epoch, context.total_steps) == (16, 2, 7)
    images = (data()["image"].astype(np.float32) / 255.0 - np.float32(0.5)) / np.float32(0.25)
    np.testing.assert_array_equal(context.whiten_kernel, whitening_kernel(images))
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        task.prepare(data(), data(), RunFacts(batch_size=64, epochs=1))
    with pytest.raises(ValueError, match="needs the context"):
        task.init_state(jax.random.key(0), make()[2], data())


def test_parameter_groups():
    task, prepared, tx = make()
    groups = param_groups(jax.eval_shape(lambda: init(task, prepared, tx)).params)  # the tree, not its values
    assert groups["whiten"] == {"kernel": "frozen", "bias": "whiten_bias"}
    assert groups["block2"]["norm1"]["bias"] == "norm_bias" and groups["head"]["kernel"] == "other"


def test_whitening_kernel_stays_and_its_bias_freezes_after_its_epochs():
    task, prepared, tx = make(lookahead=False)
    state, arrays = init(task, prepared, tx), prepared.train
    kernel0 = np.asarray(state.params["whiten"]["kernel"])
    np.testing.assert_array_equal(kernel0, prepared.context.whiten_kernel)
    step = jitted_step(task, prepared)
    biases = []
    for i in range(4):  # whiten_bias_epochs=1 = 2 steps
        state, metrics = step(state, batch(arrays, i), jax.random.key(1))
        biases.append(np.asarray(state.params["whiten"]["bias"]))
        assert np.isfinite(float(metrics["loss"]))
    np.testing.assert_array_equal(state.params["whiten"]["kernel"], kernel0)
    assert not np.allclose(biases[0], biases[1])
    np.testing.assert_array_equal(biases[1], biases[2])
    np.testing.assert_array_equal(biases[2], biases[3])


def test_lookahead_resets_the_network_every_fifth_step_and_at_the_end():
    task, prepared, tx = make(total_steps=7)
    state, arrays = init(task, prepared, tx), prepared.train
    step = jitted_step(task, prepared)
    for i in range(7):
        before = state.ema
        state, _ = step(state, batch(arrays, i), jax.random.key(1))
        same = np.allclose(state.params["head"]["kernel"], state.ema["params"]["head"]["kernel"])
        assert same == (i + 1 in (5, 7)), i + 1
        if i + 1 == 7:  # the last step only copies the average back
            assert_close(state.ema, before)


def test_alternating_flip_mirrors_every_image_in_odd_epochs():
    task, prepared, _ = make(translate=0)
    b = batch(prepared.train, 0)
    steps_per_epoch = prepared.context.steps_per_epoch
    even = task.train_inputs(b, jax.random.key(1), np.int32(0), steps_per_epoch)
    odd = task.train_inputs(b, jax.random.key(1), np.int32(steps_per_epoch), steps_per_epoch)
    np.testing.assert_allclose(odd, even[:, :, ::-1])
    plain = task.inputs(b)
    flipped = [not np.allclose(even[i], plain[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16


@pytest.mark.parametrize("n", [8])
def test_one_and_eight_devices_take_the_same_step(n):
    results = []
    for devices in (1, n):
        task, prepared, tx = make()
        state = init(task, prepared, tx)
        for i in range(2):
            state, _ = run_steps(task, tx, batch(prepared.train, i), devices, 1, context=prepared.context, state=state)
        results.append(state)
    assert_close(results[1].params, results[0].params, rtol=1e-4, atol=1e-5)
    assert_close(results[1].batch_stats, results[0].batch_stats, rtol=1e-4, atol=1e-5)
