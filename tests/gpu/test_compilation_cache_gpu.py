"""The persistent compilation cache on the GPU: a second process finds the first one's programs.

Two processes in turn compile and run the same Transformer training step
with one fresh cache folder; JAX's monitoring events count each program
written to the cache (a miss) and each program read back (a hit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.gpu


def compile_and_step(cache_dir: str) -> dict:
    """In a fresh process: one jitted language-model step on the default device; cache events and timings."""
    import jax

    events: list[str] = []
    jax.monitoring.register_event_listener(lambda event, **kwargs: events.append(event))
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # as experiments.run sets it
    import optax

    from jaxdl.models.transformer import Transformer
    from jaxdl.tasks.language_model import LanguageModelTask
    from tests.gpu.test_precision import SHAPES, text_batch

    task = LanguageModelTask(Transformer(**SHAPES))
    batch = text_batch()
    state = task.init_state(jax.random.key(0), optax.adam(1e-3), batch)
    t0 = time.perf_counter()
    state, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(1))
    jax.block_until_ready(metrics)
    return {"platform": jax.default_backend(), "first_step_s": time.perf_counter() - t0,
            "hits": events.count("/jax/compilation_cache/cache_hits"),
            "misses": events.count("/jax/compilation_cache/cache_misses")}


def run_child(cache_dir) -> dict:
    code = (f"import json; from {__name__} import compile_and_step; "
            f"print(json.dumps(compile_and_step({str(cache_dir)!r})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_hits_the_persistent_cache(tmp_path, gpus):
    cache = tmp_path / "xla"
    first = run_child(cache)
    written = sorted(p.name for p in cache.iterdir())
    second = run_child(cache)
    print(f"first process: {first}\nsecond process: {second}")
    assert first["platform"] == second["platform"] == "gpu"
    assert first["misses"] >= 1 and first["hits"] == 0 and written, first
    assert second["hits"] >= 1 and second["misses"] == 0, second  # every program came from the cache
    assert sorted(p.name for p in cache.iterdir()) == written
