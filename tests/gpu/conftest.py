"""GPU tests (marker `gpu`): deselected by default, skipped without a GPU.

    JAX_PLATFORMS=cuda,cpu python -m pytest -m gpu tests/gpu

tests/conftest.py pins JAX to the CPU unless JAX_PLATFORMS is already set,
so name the GPU platform (and the CPU, which the checkpoint test restores
onto). `bash scripts/gpu_check.sh` runs these first.
"""

from __future__ import annotations

import os

import pytest

# Allocate GPU memory as needed rather than 75 % of it up front, so that the child processes some tests start
# find memory too. Read when JAX starts its GPU backend, which no test has done at collection.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@pytest.fixture(scope="session")
def gpus() -> list:
    """Every GPU JAX sees, or skip with the reason."""
    import jax

    try:
        return jax.devices("gpu")
    except RuntimeError:
        pytest.skip(f"no GPU visible to JAX (JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}); "
                    "on a GPU machine run with JAX_PLATFORMS=cuda,cpu")


@pytest.fixture(scope="session")
def cpu():
    """The CPU device beside the GPUs, or skip."""
    import jax

    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        pytest.skip("no CPU platform beside the GPU: run with JAX_PLATFORMS=cuda,cpu")
