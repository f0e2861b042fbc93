"""The real command on a real MNIST subset: files written, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxdl import backend
from tests.conftest import REPO

SMOKE = ["model=vae", "debug=smoke", "trainer.progress=false", "task.iw_samples=50"]
# The CNN with every random stream a resumed run must repeat: augmentation and dropout.
CNN_SMOKE = ["model=cnn", "data=mnist", "debug=smoke", "trainer.progress=false", "model.dropout_rate=0.3",
             "task.augment.crop_pad=2", "task.augment.flip=true", "task.augment.cutout_size=4"]


def command(run_dir, data_dir, *extra, base=SMOKE):
    return [sys.executable, "-m", "experiments.run", *base, f"hydra.run.dir={run_dir}", f"data.data_dir={data_dir}", *extra]


def environment(raw_dir):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAXDL_MANUAL_DIR=str(raw_dir.parent), JAXDL_CACHE_DIR="", PYTHONUNBUFFERED="1")
    return env


def test_main_command_writes_every_artifact(tmp_path, mnist_data_dir, mnist_raw_dir):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        command(run_dir, mnist_data_dir), cwd=REPO, env=environment(mnist_raw_dir), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in (".hydra/config.yaml", "metrics.jsonl", "curves.png", "results.json",
                 "samples/epoch_001.png", "samples/epoch_002.png", "reconstructions/epoch_002.png"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert {"eval/elbo", "eval/nll", "eval/kl", "eval/recon", "eval/active_units"} <= set(results["metrics"])
    assert results["environment"]["packages"]["jax"]
    assert results["wall_time_s"] > 0 and results["first_step_s"] > 0
    # The command started again with glibc's huge-page tunable where that helps, and says so (jaxdl.backend).
    plan, reason = backend.huge_pages(environment(mnist_raw_dir), backend._thp_mode(), backend._glibc_version())
    built = json.loads((run_dir / "manifest.json").read_text())["built"]["backend"]
    assert built["huge_pages"] == reason and reason.startswith("on" if plan else "off")


@pytest.mark.parametrize(
    "base",
    # three runs of the real command each (~35 s for the VAE, ~60 s for the CNN): -m slow; the loop's resume is
    # exact in the default suite too (tests/training/test_loop.py, in process)
    [pytest.param(SMOKE, marks=pytest.mark.slow), pytest.param(CNN_SMOKE, marks=pytest.mark.slow)],
    ids=["vae", "cnn"],
)
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, mnist_data_dir, mnist_raw_dir, base):
    env = environment(mnist_raw_dir)
    extra = ["trainer.checkpoint_every_steps=3", "trainer.epochs=3"]
    straight = tmp_path / "straight"
    subprocess.run(command(straight, mnist_data_dir, *extra, base=base), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(command(resumed, mnist_data_dir, *extra, base=base), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        committed = [p for p in (resumed / "checkpoints").glob("*") if p.name.isdigit()] if (resumed / "checkpoints").exists() else []
        if any(int(p.name) >= 6 for p in committed):
            break
        time.sleep(0.05)
    if process.poll() is not None:
        pytest.fail("the run finished before it could be killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (resumed / "results.json").exists()

    subprocess.run(command(resumed, mnist_data_dir, *extra, base=base), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((resumed / "results.json").read_text())
    assert b["resumed_from"] is not None and b["resumed_from"] >= 6
    assert b["metrics"] == a["metrics"]
