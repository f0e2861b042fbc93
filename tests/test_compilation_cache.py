"""experiments.run keeps every compiled program in the persistent cache, not only those over JAX's 1 s default."""

import subprocess

import pytest

from tests.conftest import REPO
from tests.test_run import command, environment


@pytest.mark.slow  # the real command in a subprocess
def test_a_run_caches_its_small_programs_too(tmp_path, mnist_data_dir, mnist_raw_dir):
    cache = tmp_path / "xla"
    env = environment(mnist_raw_dir)
    env["JAXDL_CACHE_DIR"] = str(cache)
    done = subprocess.run(command(tmp_path / "run", mnist_data_dir, "trainer.epochs=1"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # init, optimizer init, train and eval steps, the final evaluation and many small eager programs;
    # with JAX's default threshold of 1 s of compile time only the slowest one or two would be stored.
    assert len(list(cache.iterdir())) >= 10
