"""Sweeps, reruns and several processes, through the real command on a real MNIST subset."""

import json
import socket
import subprocess
import sys

import pytest

from scripts.summarize import summarize
from tests.conftest import REPO
from tests.test_run import SMOKE, environment


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, **kwargs)


@pytest.mark.slow  # a sweep of four jobs through the real command
def test_a_failing_job_does_not_stop_the_sweep_and_is_summarized(tmp_path, mnist_data_dir, mnist_raw_dir):
    sweep = tmp_path / "sweep"
    done = run(["-m", *SMOKE, f"data.data_dir={mnist_data_dir}", "trainer.batch_size=32,300",
                "seed=0,1", f"hydra.sweep.dir={sweep}"], environment(mnist_raw_dir))
    assert done.returncode != 0  # the sweep reports the failure ...
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]  # ... after every job ran
    text = summarize(sweep)
    assert "4 jobs, 2 finished, 2 failed" in text
    assert "fewer than one batch of 300" in text
    assert (sweep / "summary.csv").read_text().count("\n") == 5
    by_setting = (sweep / "summary_by_setting.md").read_text()
    assert "| 32 | 2 |" in by_setting  # batch 32, two seeds, mean ± std
    assert (sweep / "summary_eval_nll.png").stat().st_size > 0


@pytest.mark.slow  # runs the real command several times
def test_rerun_from_the_saved_config_reproduces_the_metrics(tmp_path, mnist_data_dir, mnist_raw_dir):
    env = environment(mnist_raw_dir)
    first = tmp_path / "first"
    run([*SMOKE, f"data.data_dir={mnist_data_dir}", f"hydra.run.dir={first}"], env, check=True)
    again = tmp_path / "again"
    run(["--config-path", str(first / ".hydra"), "--config-name", "config", f"hydra.run.dir={again}"], env, check=True)
    a, b = (json.loads((d / "results.json").read_text()) for d in (first, again))
    assert a["metrics"] == b["metrics"]
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["git"]["commit"] and manifest["dataset"]["raw_files"][0]["sha256"]
    assert manifest["environment"]["packages"]["jax"] and manifest["settings"]["seed"] == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # runs the real command several times
def test_two_processes_train_like_one_process_with_two_devices(tmp_path, mnist_data_dir, mnist_raw_dir):
    env = environment(mnist_raw_dir)
    common = [*SMOKE, f"data.data_dir={mnist_data_dir}"]
    single = tmp_path / "single"
    run([*common, f"hydra.run.dir={single}"], {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
        check=True)
    shared = tmp_path / "shared"
    port = free_port()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.run", *common, f"hydra.run.dir={shared}", "distributed.enabled=true",
             f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
             f"distributed.process_id={i}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for p in processes:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            pytest.fail("two-process run hung")
        assert p.returncode == 0, err[-3000:]
    a = json.loads((single / "results.json").read_text())
    b = json.loads((shared / "results.json").read_text())
    assert b["environment"]["process_count"] == 2
    for key in ("eval/elbo", "eval/recon", "eval/kl"):
        assert b["metrics"][key] == pytest.approx(a["metrics"][key], rel=1e-5)
    written = [r for r in (shared / "metrics.jsonl").read_text().splitlines() if '"eval/elbo"' in r]
    assert len(written) == 2  # one record per evaluation: only process 0 writes
