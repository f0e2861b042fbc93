"""Data parallelism over local devices: one program per device, axis "batch".

A task's step is written for one shard of the global batch and never knows
how many devices there are: it receives `axis_name` and reduces gradients and
metrics with `pmean`/`psum` over it (or does nothing when `axis_name` is None,
so the same function also runs unmapped in tests). This module binds the
step's static settings, maps it over devices and moves arrays on and off them.

Layout: a global batch [B, ...] is fed as [N, B / N, ...] for N devices,
and every output of a step other than the train state carries a leading [N]
device axis. The train state is replicated (identical copies kept in step by
the `pmean`ed gradients): under "shard_map" it is one global array of its own
shape on every device (sharding `P()`); under "pmap" it is stacked as
[N, ...]. `replicate`, `unreplicate` and `to_host` take the backend and hide
the difference.

Two backends give the same per-device program and the same numbers:

* "pmap": `jax.pmap(step, axis_name="batch")`.
* "shard_map" (default): `jax.jit(jax.shard_map(step))` over a one-axis
  device mesh named "batch", the mechanism `jax.pmap` itself is built on in
  current JAX. It skips pmap's per-call Python dispatch, which on CPU costs
  about 7 ms a step (an MLP-VAE step at batch 100: 11 ms under pmap, 4 ms
  here; scripts/benchmark measures it). The state enters and leaves the
  program with its own shape: a stacked [N, ...] state made XLA copy every
  donated parameter and optimizer moment once per step (34 copies, 0.3 ms
  of a 3.7 ms MLP-VAE step; benchmarks/vae_overhead measures the loop).

Programs in flight on several CPU devices: XLA's CPU client admits a
bounded number of programs per device ahead of the host (its
`max_inflight_computations_per_device`, which jaxlib does not expose). With
more than one device and more programs than that in flight, a mapped
program's all-reduce can wait forever for its other half, and XLA ends the
process after 40 s ("Termination timeout for `all reduce ...`"). jaxlib
0.10.2 did so on 2 host devices of a 2-core machine, for both backends: a
script keeping 33 or 40 all-reducing programs in flight stopped every time,
one keeping 32 or fewer never; the loop's unbounded evaluation stopped in 3
of 4 processes of four passes over 2,000 batches each
(tests/training/test_parallel.py), and in `experiment=shakespeare_char_cpu`'s
whole-split evaluation. `DataParallel.max_in_flight` gives the bound the loop
keeps there; one device, or a GPU or TPU, gets none.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS_NAME = "batch"
BACKENDS = ("shard_map", "pmap")
#: Mapped programs the host may run ahead on several CPU devices: half of the
#: 32 that never stopped (see the module docstring).
CPU_MAX_IN_FLIGHT = 16

T = TypeVar("T")


def select_devices(num_devices: int | None = None) -> list[jax.Device]:
    """Returns the first `num_devices` local devices (all of them for None or 0).

    Raises:
      ValueError: more devices are asked for than this process has.
    """
    devices = jax.local_devices()
    if not num_devices:
        return devices
    if num_devices > len(devices):
        raise ValueError(
            f"trainer.num_devices={num_devices} but this process has {len(devices)} "
            f"{devices[0].platform} device(s). Lower it, or on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before starting Python."
        )
    return devices[:num_devices]


def _check_backend(backend: str) -> None:
    """Raises ValueError, naming the choices, unless `backend` is one of `BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown parallel backend {backend!r}; choose one of {BACKENDS}.")


def _mesh(devices: Sequence[jax.Device]) -> Mesh:
    return Mesh(np.asarray(devices), (AXIS_NAME,))


def data_parallel(
    step_fn: Callable[..., Any],
    devices: Sequence[jax.Device],
    *,
    backend: str = "shard_map",
    donate_state: bool = False,
    returns_state: bool = False,
    **static: Any,
) -> Callable[..., Any]:
    """Compiles `step_fn(state, batch, key, *, axis_name, **static)` over devices.

    Args:
      step_fn: a task step; it sees one device's shard (no leading device axis),
        and `axis_name="batch"`, or None on a single device of a single
        process (nothing to reduce over: the same numbers without collectives).
      devices: the devices to map over, N of them.
      backend: "shard_map" or "pmap" (see the module docstring).
      donate_state: reuse the input state's buffers for the output state; the
        caller must not touch the old state afterwards.
      returns_state: the step returns `(new_state, outputs)` (a train step);
        the new state keeps the replicated state's layout.
      **static: keyword settings bound into the step (they become constants
        of the compiled program).

    Returns:
      `mapped(state, batch, key) -> outputs`: `state` as `replicate(...,
      backend=backend)` lays it out, `batch` with a leading [N] axis (see
      `shard`), `key` one typed key shared by all devices; every output leaf
      other than the new state gains a leading [N] axis.

    Raises:
      ValueError: unknown backend; or (when the step is traced) a step that
        returns `(new_state, outputs)` compiled without `returns_state=True`.
    """
    _check_backend(backend)
    # One device in one process: the step runs unmapped (axis_name=None), so it issues no collectives. A
    # mean or sum over one device is the value itself, but XLA's CPU all-reduce still copies every buffer
    # (0.25 ms of a 5 ms MLP-VAE step: its gradients and metrics).
    alone = len(devices) == 1 and jax.process_count() == 1
    fn = functools.partial(step_fn, axis_name=None if alone else AXIS_NAME, **static)
    donate = (0,) if donate_state else ()
    if backend == "pmap":
        # Across processes pmap maps over every process's devices and takes each process's local shards.
        mapped_devices = None if jax.process_count() > 1 else devices
        return jax.pmap(fn, axis_name=AXIS_NAME, in_axes=(0, 0, None), devices=mapped_devices, donate_argnums=donate)

    expand = lambda tree: jax.tree.map(lambda x: x[None], tree)

    def per_device(state, batch, key):
        out = fn(state, jax.tree.map(lambda x: x[0], batch), key)
        if returns_state:
            new_state, outputs = out
            return new_state, expand(outputs)
        if isinstance(out, tuple) and len(out) == 2 and jax.tree.structure(out[0]) == jax.tree.structure(state):
            raise ValueError(
                f"{getattr(step_fn, '__qualname__', step_fn)} returns (new_state, outputs); "
                "compile it with data_parallel(..., returns_state=True)."
            )
        return expand(out)

    mesh = _mesh(devices)
    # check_vma=False gives pmap's semantics: the batch is per-device, the state
    # is taken as replicated, and collectives are exactly the ones the step writes.
    state_spec, out_specs = P(), ((P(), P(AXIS_NAME)) if returns_state else P(AXIS_NAME))
    mapped = jax.shard_map(
        per_device, mesh=mesh, in_specs=(state_spec, P(AXIS_NAME), P()), out_specs=out_specs, check_vma=False
    )
    sharded, whole = NamedSharding(mesh, P(AXIS_NAME)), NamedSharding(mesh, P())
    out_shardings = (whole, sharded) if returns_state else sharded
    return jax.jit(mapped, in_shardings=(whole, sharded, whole), out_shardings=out_shardings, donate_argnums=donate)


def replicate(tree: T, devices: Sequence[jax.Device], *, backend: str = "shard_map") -> T:
    """Copies every leaf to each device, laid out as `backend`'s steps take the state.

    "shard_map": each leaf keeps its shape and is replicated (sharding `P()`);
    "pmap": a leaf [...] becomes [N, ...], sharded over the devices. Either
    way the copies are new buffers, so a step that donates them leaves `tree`
    usable.
    """
    mesh = _mesh(devices)
    if backend != "pmap":
        # jnp.copy: device_put alone may reuse a device-0 leaf's buffer for device 0's copy
        return jax.device_put(jax.tree.map(jnp.copy, tree), NamedSharding(mesh, P()))
    n = len(devices)
    sharding = NamedSharding(mesh, P(AXIS_NAME))
    return jax.tree.map(lambda x: jax.device_put(jnp.broadcast_to(x, (n, *jnp.shape(x))), sharding), tree)


def unreplicate(tree: T, *, backend: str = "shard_map") -> T:
    """Device 0's copy of a tree laid out by `replicate(..., backend=backend)` (under "shard_map" on device 0 alone)."""
    if backend == "pmap":
        return jax.tree.map(lambda x: x[0], tree)
    return jax.tree.map(lambda x: x.addressable_shards[0].data if isinstance(x, jax.Array) else x, tree)


def to_host(tree: T, *, backend: str = "shard_map") -> T:
    """Device 0's copy of a replicated tree as numpy arrays: what checkpoints store.

    Host arrays are the same on every process, so a multi-process checkpoint
    writes them once, and they restore onto any number of devices.
    """
    return jax.device_get(unreplicate(tree, backend=backend))


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """One run's devices and backend, bound once: `data_parallel`, `replicate`,
    `unreplicate`, `to_host`, `shard` and `prefetch_to_device` (as `prefetch`)
    without repeating them at every call.

    Attributes:
      devices: the local devices to map over (N of them).
      backend: "shard_map" or "pmap" (see the module docstring).

    Raises:
      ValueError: an unknown backend, when constructed (before anything compiles).
    """

    devices: tuple[jax.Device, ...]
    backend: str = "shard_map"

    def __post_init__(self) -> None:
        _check_backend(self.backend)
        object.__setattr__(self, "devices", tuple(self.devices))

    def map(self, step_fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
        """`data_parallel(step_fn, devices, backend=backend, **kwargs)`."""
        return data_parallel(step_fn, self.devices, backend=self.backend, **kwargs)

    def replicate(self, tree: T) -> T:
        """`replicate(tree, devices, backend=backend)`."""
        return replicate(tree, self.devices, backend=self.backend)

    def unreplicate(self, tree: T) -> T:
        """`unreplicate(tree, backend=backend)`: device 0's copy."""
        return unreplicate(tree, backend=self.backend)

    def to_host(self, tree: T) -> T:
        """`to_host(tree, backend=backend)`: device 0's copy as numpy arrays."""
        return to_host(tree, backend=self.backend)

    @property
    def max_in_flight(self) -> int:
        """Mapped programs that may be dispatched and unfinished at once (0: no bound).

        `CPU_MAX_IN_FLIGHT` on more than one CPU device, where more can stop
        the process (see the module docstring); 0 otherwise.
        """
        return CPU_MAX_IN_FLIGHT if len(self.devices) > 1 and self.devices[0].platform == "cpu" else 0

    def shard(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`shard(batch, N)`: each [B, ...] array as [N, B / N, ...] (ValueError where N does not divide B)."""
        return shard(batch, len(self.devices))

    def prefetch(self, batches: Iterable[T], size: int) -> Iterator[T]:
        """`prefetch_to_device(batches, size, devices)`: sharded batches copied `size` ahead of their use."""
        return prefetch_to_device(batches, size, self.devices)


def shard(batch: dict[str, np.ndarray], num_shards: int) -> dict[str, np.ndarray]:
    """Reshapes each [B, ...] array of `batch` to [num_shards, B / num_shards, ...].

    Raises:
      ValueError: B is not divisible by `num_shards`.
    """

    def split(x: np.ndarray) -> np.ndarray:
        if x.shape[0] % num_shards:
            raise ValueError(
                f"Batch of {x.shape[0]} examples does not split evenly over {num_shards} devices; "
                f"choose trainer.batch_size divisible by {num_shards}."
            )
        return x.reshape(num_shards, x.shape[0] // num_shards, *x.shape[1:])

    return {k: split(v) for k, v in batch.items()}


def prefetch_to_device(batches: Iterable[T], size: int, devices: Sequence[jax.Device]) -> Iterator[T]:
    """Copies sharded batches ([N, B / N, ...] leaves) to the devices `size` batches ahead of their use.

    `jax.device_put` is asynchronous, so the copy of the next batches overlaps
    the running step. Each leaf is placed with its leading axis split over
    `devices` (the layout the mapped steps take). With `size` 0, or across
    several processes (each holds only its own slice of the global batch),
    the batches pass through unchanged and are copied when their step starts.
    """
    if size <= 0 or jax.process_count() > 1:
        yield from batches
        return
    sharding = NamedSharding(_mesh(devices), P(AXIS_NAME))
    queue: collections.deque = collections.deque()
    for batch in batches:
        queue.append(jax.device_put(batch, sharding))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


@jax.jit
def _stack_steps(pending: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    return jax.tree.map(lambda *steps: jnp.stack(steps), *pending)


def fetch_steps(pending: Sequence[dict[str, jax.Array]]) -> dict[str, np.ndarray]:
    """Copies the outputs of S steps to the host as one array per name: {name: [S, N, ...]}.

    `pending` holds what each step returned, dicts of arrays with a leading [N]
    device axis. Copying S x K small arrays one by one costs about 10 us each
    on a CPU (3-4 ms for 100 steps of 4 metrics); stacked on the devices first,
    one program and K copies take about 0.5 ms. The values are those of
    `jax.device_get(pending)`, stacked. Across processes (each holds only its
    own devices' shards) they are fetched one by one.
    """
    if jax.process_count() > 1:
        fetched = jax.device_get(list(pending))
        return {k: np.stack([m[k] for m in fetched]) for k in fetched[0]}
    return jax.device_get(_stack_steps(list(pending)))


@jax.jit
def add(a: T, b: T) -> T:
    """a + b leaf by leaf, as one program (summing eval outputs over batches costs one dispatch, not one per leaf)."""
    return jax.tree.map(jnp.add, a, b)


def pmean(tree: T, axis_name: str | None) -> T:
    """Averages every leaf over the mapped axis (identity when unmapped)."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def psum(tree: T, axis_name: str | None) -> T:
    """Sums every leaf over the mapped axis (identity when unmapped)."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def example_keys(key: jax.Array, index: jax.Array) -> jax.Array:
    """One PRNG stream per example, folded from the example's dataset index.

    Because the stream depends on the example and not on its position in a
    device shard, the randomness a step draws (dropout, noise, latent
    samples) is the same on 1 device and on N.

    Args:
      key: typed scalar PRNG key (already folded with the step).
      index: int32 [B] dataset index of each example (-1 for padding).

    Returns:
      typed key array [B].
    """
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, index.astype(jnp.uint32))
