"""scripts/gpu_check.sh: every part under a timeout, the dry run on the CPU writes its table."""

import json
import os
import subprocess
import sys
import time

import pytest

from scripts import gpu_check
from tests.conftest import REPO


def test_a_command_past_its_limit_is_stopped_with_its_children(tmp_path):
    log = tmp_path / "log"
    # The child ignores SIGTERM (and so does the grandchild it starts, inheriting that): both must still go.
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
              "print(p.pid, flush=True); time.sleep(600)")
    t0 = time.monotonic()
    code, seconds = gpu_check.run([sys.executable, "-c", script], log, 2.0, dict(os.environ), grace_s=1.0)
    assert code is None and seconds < 20 and time.monotonic() - t0 < 20
    grandchild = int(next(line for line in log.read_text().splitlines() if line.strip().isdigit()))
    deadline = time.monotonic() + 5  # SIGKILL reached the whole group; the grandchild's exit may lag the child's
    while running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(grandchild)
    assert "stopped at its 2 s limit" in log.read_text()


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait a while for a container's init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_shares_follow_the_weights_of_the_parts_still_to_run():
    budget = gpu_check.Budget(1000.0 + gpu_check.RESERVE_S)
    shares = {p: budget.share(p, list(gpu_check.PARTS)) for p in gpu_check.PARTS}
    assert sum(shares.values()) == pytest.approx(1000.0, abs=1.0)
    assert shares["vae"] == pytest.approx(1000.0 * gpu_check.WEIGHTS["vae"], abs=1.0)
    assert budget.share("airbench", ["airbench"]) == pytest.approx(1000.0, abs=1.0)  # the last part gets what is left
    small = gpu_check.Budget(40.0 + gpu_check.RESERVE_S)
    assert small.share("tests", list(gpu_check.PARTS)) == pytest.approx(gpu_check.MIN_PART_S, abs=0.5)  # the floor


@pytest.mark.slow
def test_cpu_dry_run_runs_every_part_and_writes_its_table(tmp_path, mnist_raw_dir, mnist_data_dir):
    # --data holds raw files (tiny Shakespeare, MNIST) and MNIST as jaxdl prepared it, which the check links.
    data = tmp_path / "data"
    data.mkdir()
    for name in ("mnist", "tinyshakespeare"):
        if (mnist_raw_dir.parent / name).is_dir():
            (data / name).symlink_to(mnist_raw_dir.parent / name)
    (data / "mnist_idx").symlink_to(mnist_data_dir / "mnist_idx")
    out = tmp_path / "check"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    done = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--budget-s", "180", "--tiny", "--data", str(data)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    print(done.stdout[-6000:])
    table = (out / "summary.md").read_text()
    assert table in done.stdout
    record = json.loads((out / "summary.json").read_text())
    parts = {p["name"]: p for p in record["parts"]}
    assert list(parts) == list(gpu_check.PARTS)
    for part in parts.values():
        assert part["status"] == "ran" or (part["status"] == "skipped" and part["reason"]), part
        for log in part["logs"]:
            assert (out / log).is_file()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 skipped" in parts["tests"]["numbers"]["tests"]  # no GPU here: every GPU test skips, with its reason
    assert "eval/nll" in parts["vae"]["numbers"]
    assert (out / "tfds" / "mnist_idx").is_symlink()
