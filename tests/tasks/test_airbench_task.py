"""airbench94's recipe: parameter groups, frozen whitening, lookahead, alternating flips, 1 vs 8 devices."""

import jax
import numpy as np
import pytest

from jaxdl.models.airbench import Airbench94
from jaxdl.tasks.airbench import AirbenchTask, param_groups
from jaxdl.training import optim, parallel
from tests.conftest import assert_close

WIDTHS = (8, 16, 16)


def data(n=32):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "label": rng.integers(0, 10, n)}


def make(total_steps=12, **options):
    task = AirbenchTask(
        Airbench94(widths=WIDTHS), batch_size=16, total_steps=total_steps, whiten_bias_epochs=1,
        normalize_mean=[0.5] * 3, normalize_std=[0.25] * 3, **options,
    )
    arrays = data()
    task.prepare_train_split(arrays)
    schedule = optim.make_schedule(
        "triangular", 1e-3, total_steps=total_steps, steps_per_epoch=2, warmup_steps=3, start_factor=0.2, end_factor=0.07
    )
    tx = optim.make_optimizer("sgd", schedule, momentum=0.85, nesterov=True)
    return task, task.init_state(jax.random.key(0), tx, arrays), arrays


def batch(arrays, i):
    rows = slice(16 * (i % 2), 16 * (i % 2) + 16)
    return {"image": arrays["image"][rows], "label": arrays["label"][rows], "index": np.arange(32, dtype=np.int32)[rows]}


def test_parameter_groups():
    _, state, _ = make()
    groups = param_groups(state.params)
    assert groups["whiten"] == {"kernel": "frozen", "bias": "whiten_bias"}
    assert groups["block2"]["norm1"]["bias"] == "norm_bias" and groups["head"]["kernel"] == "other"


def test_whitening_kernel_stays_and_its_bias_freezes_after_its_epochs():
    task, state, arrays = make(lookahead=False)
    kernel0 = np.asarray(state.params["whiten"]["kernel"])
    step = jax.jit(task.train_step)
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
    task, state, arrays = make(total_steps=7)
    step = jax.jit(task.train_step)
    for i in range(7):
        before = state.ema
        state, _ = step(state, batch(arrays, i), jax.random.key(1))
        same = np.allclose(state.params["head"]["kernel"], state.ema["params"]["head"]["kernel"])
        assert same == (i + 1 in (5, 7)), i + 1
        if i + 1 == 7:  # the last step only copies the average back
            assert_close(state.ema, before)


def test_alternating_flip_mirrors_every_image_in_odd_epochs():
    task, state, arrays = make(translate=0)
    b = batch(arrays, 0)
    even = task.train_inputs(b, jax.random.key(1), np.int32(0))
    odd = task.train_inputs(b, jax.random.key(1), np.int32(task.steps_per_epoch))
    np.testing.assert_allclose(odd, even[:, :, ::-1])
    plain = task.inputs(b)
    flipped = [not np.allclose(even[i], plain[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16


@pytest.mark.parametrize("n", [8])
def test_one_and_eight_devices_take_the_same_step(n):
    results = []
    for devices in (1, n):
        task, state, arrays = make()
        devs = parallel.select_devices(devices)
        replicated = parallel.replicate(state, devs)
        step = parallel.data_parallel(task.train_step, devs, donate_state=True)
        for i in range(2):
            replicated, _ = step(replicated, parallel.shard(batch(arrays, i), devices), jax.random.key(1))
        results.append(parallel.unreplicate(replicated))
    assert_close(results[1].params, results[0].params, rtol=1e-4, atol=1e-5)
    assert_close(results[1].batch_stats, results[0].batch_stats, rtol=1e-4, atol=1e-5)
