"""The real commands on real data for a few steps: model=transformer (tiny Shakespeare) and model=lstm (ADFA-LD)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, _raw_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manual_dir():
    if _raw_dir("tinyshakespeare") is None or _raw_dir("adfa-ld") is None:
        pytest.skip("set JAXDL_MANUAL_DIR to a folder with tinyshakespeare/input.txt and adfa-ld/ADFA-LD.tar.gz")
    return _raw_dir("adfa-ld").parent


def run(args, run_dir, data_dir, manual_dir):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAXDL_MANUAL_DIR=str(manual_dir), JAXDL_CACHE_DIR="", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "experiments.run", *args, "debug=smoke", "trainer.progress=false",
               f"hydra.run.dir={run_dir}", f"data.data_dir={data_dir}"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def test_transformer_on_tiny_shakespeare_writes_samples(tmp_path, manual_dir):
    results = run(["model=transformer", "model.num_layers=1", "model.embed_dim=32", "model.num_heads=2",
                   "data.seq_len=32"], tmp_path / "run", tmp_path / "tfds", manual_dir)
    assert {"eval/loss", "eval/bpc"} <= set(results["metrics"])
    assert results["metrics"]["eval/loss"] < 4.2  # below the uniform 65-character loss after a few steps
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())


def test_lstm_on_adfa_ld_scores_traces(tmp_path, manual_dir):
    results = run(["model=lstm", "model.hidden_dim=16", "data.eval_limit=null"], tmp_path / "run", tmp_path / "tfds",
                  manual_dir)
    assert {"eval/loss", "eval/auc", "eval/threshold", "eval/family_detection/Adduser"} <= set(results["metrics"])
    for name in ("roc.png", "scores.csv", "anomaly.json"):
        assert (tmp_path / "run" / name).is_file()
