"""Moving step outputs off the devices: stacked fetches and summed eval outputs give what one-by-one ops give."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.training import parallel


def _steps(num_devices: int, count: int):
    devices = parallel.select_devices(num_devices)

    def step(state, batch, key, *, axis_name):
        del key
        loss = parallel.pmean(jnp.mean(batch["x"] * state), axis_name)
        return state, {"loss": loss, "count": parallel.psum(jnp.float32(batch["x"].shape[0]), axis_name)}

    mapped = parallel.data_parallel(step, devices)
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
