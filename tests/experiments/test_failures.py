"""Every fault of the real command ends in one line, a truthful record, and nothing lost.

Every case runs the real command, most of them twice, so the module is marked slow:
`python -m pytest -m slow tests/experiments/test_failures.py`.

Each case runs `python -m experiments.run` on a small real MNIST subset and checks the exit code, the one
line on stderr (no traceback), and the files left in the run folder. The library-level cases (orbax saves
that fail, damaged checkpoints, full disks) are in tests/training/test_checkpoint.py.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests import disk
from tests.conftest import REPO
from tests.test_run import SMOKE, command, environment

pytestmark = pytest.mark.slow


def run(args, env, *, timeout=300):
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    done.seconds = time.perf_counter() - started
    return done


def error_lines(done) -> list[str]:
    """stderr lines that report an error (progress output and warnings aside)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return [line for line in lines if line.startswith(("Error", "Traceback", "  File")) or "Error:" in line]


def assert_one_line(done, *fragments: str) -> str:
    assert done.returncode != 0, done.stderr[-2000:]
    reported = error_lines(done)
    assert len(reported) == 1 and reported[0].startswith("Error: "), done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in reported[0], reported[0]
    return reported[0]


def snapshot(run_dir) -> dict[str, bytes]:
    """Every record file of a run folder (not checkpoints or logs), by relative path."""
    names = ["manifest.json", "results.json", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.jsonl"]
    return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()}


@pytest.fixture
def env(mnist_raw_dir):
    return environment(mnist_raw_dir)


@pytest.fixture
def finished(tmp_path, mnist_data_dir, env):
    """A finished smoke run of the main job."""
    run_dir = tmp_path / "run"
    done = run(command(run_dir, mnist_data_dir), env)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_a_different_command_into_a_finished_run_is_refused_and_rewrites_nothing(finished, mnist_data_dir, env):
    before = snapshot(finished)
    done = run(command(finished, mnist_data_dir, "model.latent_dim=10"), env)
    assert_one_line(done, "holds a run with different settings", "model.latent_dim: 50 -> 10", "hydra.run.dir",
                    "allow_changed=[model.latent_dim]")
    assert snapshot(finished) == before
    assert not (finished / "failure.json").exists()  # the folder belongs to the other run


def test_a_changed_learning_rate_is_refused_too(finished, mnist_data_dir, env):
    before = snapshot(finished)
    done = run(command(finished, mnist_data_dir, "optimizer.learning_rate=0.01"), env)
    assert_one_line(done, "optimizer.learning_rate: 0.001 -> 0.01")
    assert snapshot(finished) == before


def test_the_same_command_again_keeps_the_recorded_results_and_timings(finished, mnist_data_dir, env):
    before = json.loads((finished / "results.json").read_text())
    done = run(command(finished, mnist_data_dir, "trainer.progress=true"), env)  # a neutral setting may differ
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads((finished / "results.json").read_text())
    assert after["metrics"] == before["metrics"]
    for key in ("train_examples_per_s", "first_step_s", "train_time_s", "wall_time_s"):
        assert after[key] == before[key] and after[key] is not None, key


def test_allow_changed_continues_a_finished_run_longer_and_keeps_its_history(finished, mnist_data_dir, env):
    done = run(command(finished, mnist_data_dir, "trainer.epochs=3", "allow_changed=[trainer.epochs]"), env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((finished / "results.json").read_text())
    manifest = json.loads((finished / "manifest.json").read_text())
    assert results["resumed_from"] == 16 and results["steps"] == 24
    assert manifest["settings"]["trainer"]["epochs"] == 3
    assert manifest["history"][0]["changed"] == {"trainer.epochs": [2, 3]}


def test_a_folder_recorded_before_a_setting_existed_needs_allow_changed(finished, mnist_data_dir, env):
    """A run folder written by an older jaxdl lacks settings added since (here trainer.eval_batches)."""
    manifest_path = finished / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["settings"]["trainer"]["eval_batches"]
    manifest_path.write_text(json.dumps(manifest))
    before = snapshot(finished)

    done = run(command(finished, mnist_data_dir), env)
    assert_one_line(done, "trainer.eval_batches: (absent) -> null", "allow_changed=[trainer.eval_batches]")
    assert snapshot(finished) == before

    done = run(command(finished, mnist_data_dir, "allow_changed=[trainer.eval_batches]"), env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((finished / "results.json").read_bytes()) == json.loads(before["results.json"])
    history = json.loads(manifest_path.read_text())["history"]
    assert history[-1]["changed"] == {"trainer.eval_batches": ["(absent)", None]}


def test_a_nan_in_the_final_evaluation_fails_the_run_and_keeps_its_checkpoints(tmp_path, mnist_data_dir, env):
    run_dir = tmp_path / "run"
    done = run(command(run_dir, mnist_data_dir, "trainer.epochs=6", "optimizer.learning_rate=0.3",
                       "task.iw_samples=50"), env)
    assert_one_line(done, "eval/nll=nan", "final evaluation")
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["error"] == "NonFiniteMetricError" and "Traceback" in failure["traceback"]
    assert not (run_dir / "results.json").exists()  # a failed run is not a finished one: rerunning resumes it
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]


def test_a_damaged_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(finished, mnist_data_dir,
                                                                                           env):
    (finished / "results.json").unlink()  # as if the run had been killed after its last checkpoint
    steps = sorted(int(p.name) for p in (finished / "checkpoints").iterdir() if p.name.isdigit())
    latest = finished / "checkpoints" / str(steps[-1])
    victim = max((p for p in latest.rglob("*") if p.is_file() and p.stat().st_size > 64), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    done = run(command(finished, mnist_data_dir), env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Checkpoint step {steps[-1]}" in done.stderr and "does not restore" in done.stderr
    results = json.loads((finished / "results.json").read_text())
    assert results["resumed_from"] == steps[-2] and results["steps"] == 16
    assert (finished / "checkpoints.damaged" / str(steps[-1])).is_dir()  # set aside, never deleted


def test_an_unwritable_checkpoint_folder_stops_the_run_at_once(tmp_path, mnist_data_dir, env):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with disk.read_only(run_dir / "checkpoints"):
        done = run(command(run_dir, mnist_data_dir), env, timeout=240)
    assert_one_line(done, "Could not write", "checkpoints")
    assert done.seconds < 120  # the process exits; it does not wait on orbax's threads
    json.loads((run_dir / "failure.json").read_text())


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.eval_limit=0", "data.eval_limit"),
        ("data.train_limit=0", "data.train_limit"),
        ("data.eval_split='test[:0]'", "data.eval_split"),
        ("model.latent_dim=0", "model.latent_dim=0"),
        ("model.hidden_dims=[200,0]", "model.hidden_dims"),
    ],
)
def test_degenerate_sizes_fail_in_one_line_naming_the_setting(tmp_path, mnist_data_dir, env, override, fragment):
    done = run(command(tmp_path / "run", mnist_data_dir, override), env)
    assert_one_line(done, fragment)
    assert json.loads((tmp_path / "run" / "failure.json").read_text())["message"]


def test_a_manual_folder_without_the_files_fails_at_once_naming_them(tmp_path, mnist_raw_dir):
    empty = tmp_path / "raw"
    empty.mkdir()
    env = {**environment(mnist_raw_dir), "JAXDL_MANUAL_DIR": str(empty)}
    done = run(command(tmp_path / "run", tmp_path / "fresh_tfds"), env, timeout=120)
    assert_one_line(done, "train-images-idx3-ubyte.gz")
    assert done.seconds < 60  # no download attempts


def test_a_sweep_with_one_unwritable_job_finishes_the_others_and_lists_the_failure(tmp_path, mnist_data_dir, env):
    from scripts.summarize import summarize

    sweep = tmp_path / "sweep"
    (sweep / "1" / "checkpoints").mkdir(parents=True)
    with disk.read_only(sweep / "1" / "checkpoints"):
        done = run([sys.executable, "-m", "experiments.run", "-m", *SMOKE, f"data.data_dir={mnist_data_dir}",
                    "seed=0,1,2", f"hydra.sweep.dir={sweep}"], env, timeout=600)
    assert done.returncode != 0  # the sweep reports its failed job ...
    assert (sweep / "0" / "results.json").is_file() and (sweep / "2" / "results.json").is_file()  # ... after the rest
    text = summarize(sweep)
    assert "3 jobs, 2 finished, 1 failed" in text and "Could not write" in text


def test_the_main_command_leaves_no_stale_failure_record(tmp_path, mnist_data_dir, env):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "failure.json").write_text('{"error": "KeyboardInterrupt"}')  # an earlier attempt stopped by hand
    done = run(command(run_dir, mnist_data_dir), env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (run_dir / "failure.json").exists()
    shutil.rmtree(run_dir)
    assert not os.path.exists(run_dir)
