"""Peers in processes of their own, one framework per process, driven over a pipe by `scripts.benchmark`.

Each framework's peers run in a child process started with multiprocessing's
`spawn` method, which passes the benchmark's environment on unchanged but for
the XLA CPU flags jaxdl added for its own columns (`jaxdl.backend`), which the
child takes out again, so that Keras gets jaxlib's defaults; the
child changes nothing that decides how its framework uses threads (no
OpenMP, MKL or XLA setting, no `torch.set_num_threads`), so PyTorch and Keras
run with their own defaults, as their users run them. The child blocks on its
pipe between timed windows, so only one framework computes at a time, and
reports its thread settings (`thread_settings`) once its models are built,
for the results to record. PyTorch's OpenMP threads and XLA's threads never
share a process.

Measure on an idle machine: with OpenMP's default spin-waiting, a PyTorch
step suffers badly when another process takes a core (`scripts.benchmark`
records the load average of every row and marks loaded rows).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

#: Environment variables that set threads or wait policies of OpenMP (GNU, Intel), MKL, OpenBLAS, XLA, JAX or Keras,
#: or how glibc's allocator gets memory (GLIBC_TUNABLES, MALLOC_*).
THREAD_ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "XLA_", "JAX_", "KERAS_", "GLIBC_TUNABLES",
                       "MALLOC_")


def thread_environment() -> dict[str, str]:
    """The variables of this process's environment that can change how a framework threads (see THREAD_ENV_PREFIXES)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_ENV_PREFIXES)}


def thread_settings() -> dict[str, Any]:
    """How this process's frameworks thread: the environment above, and each imported framework's own counts.

    Returns:
      {"cpu_count", "env", and "torch_threads", "torch_interop_threads",
      "torch_parallel" when torch is imported; "jax_devices", "xla_flags" when
      jax is; "keras_backend" when keras is}.
    """
    out: dict[str, Any] = {"cpu_count": os.cpu_count(), "env": thread_environment()}
    if "torch" in sys.modules:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
        out["torch_parallel"] = next(
            (line.strip() for line in torch.__config__.parallel_info().splitlines() if "parallel backend" in line), ""
        )
    if "jax" in sys.modules:
        import jax

        out["jax_devices"] = jax.local_device_count()
        out["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    if "keras" in sys.modules:
        import keras

        out["keras_backend"] = keras.backend.backend()
    return out


def _on_device(make: Callable[..., Any], device: str, dtype: str) -> Callable[..., Any]:
    """`make` with every tensor on `device` and each timed call under autocast to `dtype`, ending in a sync.

    The peers build their tensors with `torch.from_numpy` and factory
    functions: with the default device set and `from_numpy` moving its result
    there, the same builders place model, batch and noise on the device. float32
    matrix products use TF32 (`set_float32_matmul_precision("high")`), as XLA's
    default precision does on these GPUs.

    Raises:
      NotAvailable (from the returned function): no CUDA device for PyTorch here.
    """
    import torch

    from benchmarks.peers import NotAvailable
    from benchmarks.peers.torch_device import autocast, synchronize, use_device

    if device == "cuda" and torch.cuda.is_available():
        use_device(device)
        from_numpy = torch.from_numpy
        torch.from_numpy = lambda array: from_numpy(array).to(device)

    def make_on_device(peer, arch, settings, batch):
        if device == "cuda" and not torch.cuda.is_available():
            raise NotAvailable("PyTorch has no CUDA device here")
        run = make(peer, arch, settings, batch)

        def timed(k: int) -> None:
            with autocast(device, dtype):
                run(k)
            synchronize(device)

        return timed

    return make_on_device


def serve(conn, peers, arch, settings, batch, device: str = "cpu", dtype: str = "float32") -> None:
    """Builds `peers` of `arch`, reports, then answers ("run", peer, k) with the seconds k steps took.

    `device` ("cpu" or "cuda") and `dtype` ("float32" or "bfloat16", autocast) place PyTorch peers; the
    defaults leave every framework exactly as its users run it.
    """
    from jaxdl.backend import without_additions

    inherited = without_additions(os.environ)  # the user's environment: not the XLA flags jaxdl chose for itself
    os.environ.clear()
    os.environ.update(inherited)
    environment = dict(os.environ)  # as inherited, before any framework is imported
    from benchmarks.peers import NotAvailable, make

    if device != "cpu" or dtype != "float32":
        make = _on_device(make, device, dtype)

    runners, skipped = {}, {}
    for peer in peers:
        try:
            runners[peer] = make(peer, arch, settings, batch)
        except NotAvailable as why:
            skipped[peer] = str(why)
    conn.send({"ready": list(runners), "skipped": skipped, "threads": thread_settings(), "environment": environment})
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        _, peer, k = message
        t0 = time.perf_counter()
        try:
            runners[peer](k)
        except Exception as error:  # reported to the parent, which drops this column; the others go on
            conn.send(("error", f"{type(error).__name__}: {error}"))
            continue
        conn.send(time.perf_counter() - t0)


class RemotePeers:
    """One framework's peers of one model in a child process (see the module docstring).

    Attributes:
      ready: peers built and ready to run.
      skipped: peer -> why it is not available.
      threads: the child's `thread_settings()`.
      environment: the child's whole environment as it started (before importing its framework).
      process: the child process.
    """

    def __init__(self, peers, arch, settings, batch, *, device: str = "cpu", dtype: str = "float32"):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        args = (child, list(peers), arch, dict(settings), dict(batch), device, dtype)
        self.process = ctx.Process(target=serve, args=args, daemon=True)
        self.process.start()
        child.close()
        try:
            hello = self.conn.recv()
        except EOFError as error:
            raise RuntimeError(f"the peer process for {list(peers)} exited with code {self.process.exitcode}") from error
        self.ready, self.skipped, self.threads = hello["ready"], hello["skipped"], hello["threads"]
        self.environment = hello["environment"]

    def runner(self, peer) -> Callable[[int], None]:
        """`run(k)`: k steps of `peer` in the child; returns when they are done."""

        def run(k: int) -> None:
            self.conn.send(("run", peer, k))
            reply = self.conn.recv()
            if isinstance(reply, tuple):
                raise RuntimeError(f"{peer} failed in the child process: {reply[1]}")

        return run

    def close(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
