"""Test-session setup: 8 fake CPU devices, jaxdl's XLA CPU settings, tolerances, real-data location.

XLA_FLAGS must be set before JAX initialises its backends, so it is set here,
before any test module imports jax. Tests that want one device ask for it
(`select_devices(1)`).
"""

from __future__ import annotations

import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxdl import backend  # noqa: E402

backend.configure()  # the suite runs with the XLA CPU settings every run gets

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def assert_close(actual, expected, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """The one tolerance helper: compares pytrees of arrays leaf by leaf."""
    import jax

    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def _raw_dir(name: str) -> pathlib.Path | None:
    root = os.environ.get("JAXDL_MANUAL_DIR")
    if not root:
        return None
    folder = pathlib.Path(root).resolve() / name  # absolute: tests link to it from their own folders
    return folder if folder.is_dir() else None


@pytest.fixture(scope="session")
def mnist_raw_dir() -> pathlib.Path:
    """The folder of the original MNIST .gz files, or skip."""
    folder = _raw_dir("mnist")
    if folder is None:
        pytest.skip("real MNIST not available: set JAXDL_MANUAL_DIR to a folder with mnist/*-ubyte.gz")
    return folder


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory, mnist_raw_dir) -> pathlib.Path:
    """A TFDS data_dir with MNIST prepared from the real raw files (once per session)."""
    from jaxdl.data import sources

    data_dir = tmp_path_factory.mktemp("tfds")
    sources.prepare("mnist", data_dir=str(data_dir), manual_dir=str(mnist_raw_dir.parent))
    return data_dir
