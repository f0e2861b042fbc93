"""Mapping steps over devices: the state layout, stacked fetches and summed eval outputs."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.training import parallel
from tests.conftest import REPO


def _steps(num_devices: int, count: int):
    devices = parallel.select_devices(num_devices)

    def step(state, batch, key, *, axis_name):
        del key
        loss = parallel.pmean(jnp.mean(batch["x"] * state), axis_name)
        return state, {"loss": loss, "count": parallel.psum(jnp.float32(batch["x"].shape[0]), axis_name)}

    mapped = parallel.data_parallel(step, devices, returns_state=True)
    state = parallel.replicate(jnp.float32(1.5), devices)
    rng = np.random.default_rng(0)
    return [mapped(state, parallel.shard({"x": rng.standard_normal(8).astype(np.float32)}, len(devices)),
                   jax.random.key(0))[1] for _ in range(count)]


def test_fetch_steps_stacks_what_device_get_returns():
    for num_devices in (1, 4):
        pending = _steps(num_devices, 5)
        fetched = parallel.fetch_steps(pending)
        one_by_one = jax.device_get(pending)
        assert set(fetched) == {"loss", "count"}
        for k, v in fetched.items():
            assert v.shape == (5, num_devices)
            np.testing.assert_array_equal(v, np.stack([m[k] for m in one_by_one]))


def test_add_sums_trees_leaf_by_leaf_as_eager_addition():
    a, b = _steps(2, 2)
    summed = parallel.add(a, b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(summed[k]), np.asarray(a[k] + b[k]))


def test_the_shard_map_state_keeps_its_shape_and_a_donated_step_leaves_the_original_usable():
    devices = parallel.select_devices(4)

    def step(state, batch, key, *, axis_name):
        del key
        grad = parallel.pmean(jnp.mean(batch["x"]) * jnp.ones_like(state["w"]), axis_name)
        return {"w": state["w"] - grad}, {"loss": parallel.pmean(jnp.mean(batch["x"]), axis_name)}

    state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}
    mapped = parallel.data_parallel(step, devices, donate_state=True, returns_state=True)
    replicated = parallel.replicate(state, devices)
    assert replicated["w"].shape == (2, 3) and replicated["w"].sharding.is_fully_replicated
    x = np.arange(8, dtype=np.float32)
    new, metrics = mapped(replicated, parallel.shard({"x": x}, 4), jax.random.key(0))
    assert new["w"].shape == (2, 3) and metrics["loss"].shape == (4,)
    np.testing.assert_allclose(parallel.to_host(new)["w"], np.asarray(state["w"]) - x.mean())
    np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(6).reshape(2, 3))  # not donated away
    assert parallel.unreplicate(new)["w"].devices() == {devices[0]}


def test_a_train_step_compiled_without_returns_state_fails_with_the_fix():
    devices = parallel.select_devices(1)

    def step(state, batch, key, *, axis_name):
        return state, {"loss": jnp.mean(batch["x"])}

    mapped = parallel.data_parallel(step, devices)
    with pytest.raises(ValueError, match="returns_state=True"):
        mapped(parallel.replicate(jnp.float32(1.0), devices), parallel.shard({"x": np.ones(2, np.float32)}, 1),
               jax.random.key(0))


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_data_parallel_binds_devices_and_backend_once(backend):
    devices = parallel.select_devices(4)
    dp = parallel.DataParallel(devices, backend)

    def step(state, batch, key, *, axis_name):
        del key
        mean = parallel.pmean(jnp.mean(batch["x"]), axis_name)
        return {"w": state["w"] - mean}, {"loss": mean}

    state = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}
    replicated = dp.replicate(state)
    expected = parallel.replicate(state, devices, backend=backend)
    assert replicated["w"].shape == expected["w"].shape and replicated["w"].sharding == expected["w"].sharding
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(dp.shard({"x": x})["x"], parallel.shard({"x": x}, 4)["x"])  # [4, 2]
    new, metrics = dp.map(step, returns_state=True)(replicated, dp.shard({"x": x}), jax.random.key(0))
    assert metrics["loss"].shape == (4,)
    np.testing.assert_allclose(dp.to_host(new)["w"], np.asarray(state["w"]) - x.mean())
    np.testing.assert_allclose(np.asarray(dp.unreplicate(new)["w"]), dp.to_host(new)["w"])
    if backend == "shard_map":
        assert dp.unreplicate(new)["w"].devices() == {devices[0]}


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_one_device_runs_the_step_without_collectives_and_gives_the_same_numbers(backend):
    seen = []

    def step(state, batch, key, *, axis_name):
        seen.append(axis_name)
        grad = parallel.pmean(jnp.mean(batch["x"] ** 2) * state["w"], axis_name)
        return {"w": state["w"] - 0.1 * grad}, parallel.psum({"sum": jnp.sum(batch["x"])}, axis_name)

    state = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)}
    x = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    results = {}
    for n in (1, 2):
        devices = parallel.select_devices(n)
        mapped = parallel.data_parallel(step, devices, backend=backend, returns_state=True)
        args = (parallel.replicate(state, devices, backend=backend), parallel.shard({"x": x}, n), jax.random.key(0))
        if backend == "shard_map":  # XLA's CPU all-reduce copies its buffers even over one device
            assert ("all-reduce" in mapped.lower(*args).compile().as_text()) == (n > 1)
        new, sums = mapped(*args)
        results[n] = (parallel.to_host(new, backend=backend)["w"], np.asarray(sums["sum"]))  # [n], each the total
    assert seen == [None, "batch"]
    np.testing.assert_allclose(results[1][0], results[2][0], rtol=1e-6)  # the same maths, another summation order
    np.testing.assert_allclose(results[1][1], [x.sum()], rtol=1e-6)
    np.testing.assert_allclose(results[2][1], [x.sum()] * 2, rtol=1e-6)
    np.testing.assert_allclose(results[1][0], np.asarray(state["w"]) * (1 - 0.1 * np.mean(x**2)), rtol=1e-6)


def test_data_parallel_names_the_backends_when_given_an_unknown_one():
    with pytest.raises(ValueError, match="'shard_map', 'pmap'"):
        parallel.DataParallel(parallel.select_devices(1), "pjit")
    with pytest.raises(ValueError, match="'shard_map', 'pmap'"):
        parallel.data_parallel(lambda state, batch, key, *, axis_name: state, parallel.select_devices(1), backend="pjit")


def test_only_several_cpu_devices_bound_the_programs_in_flight():
    assert parallel.DataParallel(parallel.select_devices(1)).max_in_flight == 0
    assert parallel.DataParallel(parallel.select_devices(2)).max_in_flight == parallel.CPU_MAX_IN_FLIGHT == 16


# The loop's evaluation over 2 host devices, as a user's XLA_FLAGS makes them, with the host able to run far ahead
# (each step is slow next to its dispatch). Unbounded, XLA ended such a process after 40 s waiting in an all-reduce.
_LONG_EVALUATION = """
import sys
import jax, jax.numpy as jnp, numpy as np
from jaxdl.data.pipeline import ArrayLoader
from jaxdl.training import parallel
from jaxdl.training.loop import _run_eval

def step(state, batch, key, *, axis_name):
    h = jnp.tanh(batch["x"] @ state["w"]) @ state["w"].T
    return {"total": parallel.psum(jnp.sum(h ** 2), axis_name)}

dp = parallel.DataParallel(jax.devices(), sys.argv[1])
assert len(dp.devices) == 2
state = dp.replicate({"w": jnp.full((512, 512), 0.01)})
loader = ArrayLoader({"x": np.ones((16 * 2000, 512), np.float32)}, 16, shuffle=False, drop_remainder=False)
mapped = dp.map(step)
for _ in range(4):  # unbounded, 3 of 4 such processes stopped
    print(float(jax.device_get(_run_eval(mapped, state, loader, jax.random.key(0), dp))["total"]))
"""


@pytest.mark.parametrize(  # a process each: the loop's default backend in the default suite, pmap with -m slow
    "backend", ["shard_map", pytest.param("pmap", marks=pytest.mark.slow)]
)
def test_a_long_evaluation_over_two_cpu_devices_finishes(backend):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_LONG_EVALUATION), backend],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    h = np.tanh(np.full(512, 512 * 0.01, np.float32)) @ np.full((512, 512), 0.01, np.float32).T  # one row's output
    expected = 16 * 2000 * float(np.sum(h.astype(np.float64) ** 2))
    totals = [float(line) for line in done.stdout.split()]
    assert len(totals) == 4 and totals == pytest.approx([expected] * 4, rel=1e-4)
