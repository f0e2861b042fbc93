"""The benchmark's PyTorch peers run as PyTorch's users run it: no thread or wait-policy override anywhere.

Starts the real peer process `scripts.benchmark` uses (`benchmarks.peers.process.RemotePeers`),
has it report its environment and torch's thread counts, and compares them with what a fresh
`python -c "import torch"` process has by default. Needs torch; skipped without it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[bench]'")

from benchmarks.peers.process import THREAD_ENV_PREFIXES, RemotePeers  # noqa: E402
from jaxdl import backend  # noqa: E402
from jaxdl.backend import without_additions  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
FRESH = (
    "import json, os, torch; print(json.dumps({'threads': torch.get_num_threads(), "
    "'interop': torch.get_num_interop_threads(), "
    f"'env': {{k: v for k, v in os.environ.items() if k.startswith({THREAD_ENV_PREFIXES!r})}}}}))"
)
OVERRIDES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def test_torch_peer_process_keeps_torchs_default_threads_and_environment(monkeypatch):
    # As under `python -m scripts.benchmark`, which starts again with glibc's huge-page tunable (jaxdl.backend).
    monkeypatch.setenv("GLIBC_TUNABLES", backend.HUGE_PAGES_TUNABLE)
    monkeypatch.setenv(backend.ADDED_TUNABLES_VARIABLE, backend.HUGE_PAGES_TUNABLE)
    settings = {"model": {"hidden_dims": [8], "dropout_rate": 0.0, "num_outputs": 3},
                "optimizer": {"name": "adam", "learning_rate": 1e-3}}
    batch = {"image": np.zeros((4, 2, 2, 1), np.uint8), "label": np.arange(4) % 3}
    parent_environment = without_additions(os.environ)  # the user's: without the settings jaxdl made for itself
    remote = RemotePeers(["torch"], "mlp", settings, batch)
    try:
        assert remote.ready == ["torch"]
        remote.runner("torch")(2)
        threads, environment = remote.threads, remote.environment
    finally:
        remote.close()
    fresh = json.loads(subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True,
                                      env=parent_environment).stdout)

    assert parent_environment.items() <= environment.items()  # the parent's environment, nothing taken away
    added = set(environment) - set(parent_environment)  # C-level additions (e.g. COLUMNS by a terminal library)
    assert not [k for k in added if k.startswith(THREAD_ENV_PREFIXES)]  # and nothing that sets threads
    assert threads["env"] == fresh["env"] == {k: v for k, v in parent_environment.items() if k.startswith(THREAD_ENV_PREFIXES)}
    assert not any(flag in environment.get("XLA_FLAGS", "") for flag in backend.CPU_XLA_FLAGS)  # Keras: jaxlib's own
    assert "GLIBC_TUNABLES" not in environment and "GLIBC_TUNABLES" not in threads["env"]  # glibc's defaults
    for name in OVERRIDES:
        assert (name in threads["env"]) == (name in os.environ), name  # only if whoever started the tests set it
    assert threads["torch_threads"] == fresh["threads"]
    assert threads["torch_interop_threads"] == fresh["interop"]


def test_no_peer_code_sets_threads_or_wait_policies():
    calls = re.compile(r"set_num(_interop)?_threads\s*\(|environ(\.setdefault\s*\(|\[|\.update\s*\()\s*[\"']?"
                       r"(OMP|GOMP|KMP|MKL|OPENBLAS)_")
    sources = [*sorted((REPO / "benchmarks" / "peers").glob("*.py")), REPO / "scripts" / "benchmark.py"]
    offending = [f"{path.relative_to(REPO)}: {m.group(0)}" for path in sources for m in calls.finditer(path.read_text())]
    assert not offending
