"""Checkpoints: exact round trip, which steps are kept, interrupted saves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.models.vae import VAE
from jaxdl.tasks.vae import VAETask
from jaxdl.training.checkpoint import Checkpointer
from tests.conftest import assert_close


def make_state(seed: int = 0):
    task = VAETask(VAE(latent_dim=3, hidden_dims=(8,)))
    batch = {"image": np.zeros((1, 28, 28, 1), np.uint8)}
    state = task.init_state(jax.random.key(seed), optax.adam(1e-3), batch)
    grads = jax.tree.map(jnp.ones_like, state.params)
    return state.apply_gradients(grads=grads)  # non-trivial opt_state and step


def test_round_trip_restores_every_leaf_exactly(tmp_path):
    state = make_state(0)
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    ckpt.save(7, state, meta={"progress": {"best": 1.5}}, metrics={"eval/loss": 1.5})
    ckpt.close()
    restored, meta = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss").restore(make_state(1))
    assert int(restored.step) == 1
    assert_close(restored.params, state.params, rtol=0, atol=0)
    assert_close(restored.opt_state, state.opt_state, rtol=0, atol=0)
    assert meta == {"progress": {"best": 1.5}}


def test_keeps_the_latest_and_the_best(tmp_path):
    state = make_state()
    ckpt = Checkpointer(tmp_path / "ckpt", keep_last=2, best_metric="eval/loss", mode="min")
    for step, loss in [(1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, 6.0)]:
        ckpt.save(step, state, meta={}, metrics={"eval/loss": loss})
        ckpt.wait()
    assert ckpt.all_steps() == [2, 4, 5]
    assert ckpt.latest_step() == 5
    ckpt.close()


def test_an_interrupted_save_is_ignored(tmp_path):
    state = make_state()
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    ckpt.save(3, state, meta={}, metrics={"eval/loss": 1.0})
    ckpt.close()
    # What a process killed mid-save leaves behind: an uncommitted temporary folder.
    (tmp_path / "ckpt" / "9.orbax-checkpoint-tmp").mkdir()
    assert Checkpointer(tmp_path / "ckpt", best_metric="eval/loss").latest_step() == 3


# Faults: a folder that cannot be written, a full disk, damaged checkpoints.

import errno  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from jaxdl import errors  # noqa: E402
from jaxdl.training.checkpoint import Restored  # noqa: E402
from tests import disk  # noqa: E402
from tests.conftest import REPO  # noqa: E402


def saved_steps(directory, steps=(1, 2)):
    """A checkpoint folder holding `steps`, each ranked by a falling loss; returns their states."""
    ckpt = Checkpointer(directory, best_metric="eval/loss")
    states = {}
    for step in steps:
        states[step] = make_state(step)
        ckpt.save(step, states[step], meta={"progress": {"step": step}}, metrics={"eval/loss": 10.0 - step})
    ckpt.close()
    return states


def test_an_unwritable_folder_fails_when_the_checkpointer_is_made(tmp_path):
    with disk.read_only(tmp_path):
        with pytest.raises(errors.NotWritableError, match=r"^Could not write .*ckpt while preparing the checkpoint folder") as info:
            Checkpointer(tmp_path / "ckpt")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ckpt").exists()


def test_a_folder_that_became_read_only_fails_the_save_and_keeps_the_last_checkpoint(tmp_path):
    saved_steps(tmp_path / "ckpt", steps=(1,))
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    with disk.read_only(tmp_path / "ckpt"):
        with pytest.raises(errors.NotWritableError, match="while saving checkpoint step 2"):
            ckpt.save(2, make_state(2), meta={}, metrics={"eval/loss": 1.0})
        ckpt.close()
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1"]
    assert Checkpointer(tmp_path / "ckpt").latest_step() == 1


@pytest.mark.parametrize("code, kind", [(errno.ENOSPC, errors.DiskFullError), (errno.EACCES, errors.NotWritableError)])
def test_a_step_folder_that_cannot_be_made_raises_from_save(tmp_path, monkeypatch, code, kind):
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    disk.failing_makedirs(monkeypatch, code, ".orbax-checkpoint-tmp")
    with pytest.raises(kind, match=f"saving checkpoint step 3: .*\\({errno.errorcode[code]}\\)"):
        ckpt.save(3, make_state(), meta={}, metrics={"eval/loss": 1.0})
    ckpt.close()
    assert ckpt.latest_step() is None and os.listdir(tmp_path / "ckpt") == []


_FAILING_SAVE = """
import errno, os, sys
from tests import disk
from tests.training.test_checkpoint import make_state
from jaxdl.training.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], best_metric="eval/loss")
class Patch:  # what pytest's monkeypatch does, outside pytest
    setattr = staticmethod(setattr)
disk.failing_makedirs(Patch, errno.EACCES, ".orbax-checkpoint-tmp")
try:
    ckpt.save(1, make_state(), meta={}, metrics={"eval/loss": 1.0})
finally:
    ckpt.close()
"""


def test_a_process_whose_save_failed_exits_with_one_line(tmp_path):
    # Orbax's background creation of the step folder left commit threads waiting 300 s for its signal,
    # and the interpreter waited for them at exit.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FAILING_SAVE), str(tmp_path / "ckpt")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxdl.errors.NotWritableError: Could not write") and "saving checkpoint step 1" in last
    assert "ERROR:absl" not in done.stderr  # orbax's own tracebacks of the same failure are not repeated


def test_a_full_disk_during_the_save_raises_and_leaves_no_partial_folder(tmp_path):
    with disk.small_disk(tmp_path / "disk", 512) as folder:
        saved_steps(folder / "ckpt", steps=(1,))
        ckpt = Checkpointer(folder / "ckpt", best_metric="eval/loss")
        disk.fill(folder)
        with pytest.raises(errors.DiskFullError, match=r"while saving checkpoint step 2: .*\(ENOSPC\)\. Free space"):
            ckpt.save(2, make_state(2), meta={}, metrics={"eval/loss": 1.0})
            ckpt.wait()
        ckpt.close()
        assert sorted(os.listdir(folder / "ckpt")) == ["1"]
        assert ckpt.latest_step() == 1
        os.remove(folder / "fill")
        restored, _ = Checkpointer(folder / "ckpt").restore(make_state(0))
        assert_close(restored.params, make_state(1).params, rtol=0, atol=0)


def truncate_largest_array_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)


def garble_metadata(step_dir):
    (step_dir / "state" / "_METADATA").write_text("{not json")


@pytest.mark.parametrize("damage", [truncate_largest_array_file, garble_metadata])
def test_resume_skips_a_damaged_latest_checkpoint_and_sets_it_aside(tmp_path, damage):
    states = saved_steps(tmp_path / "ckpt")
    damage(tmp_path / "ckpt" / "2")
    ckpt = Checkpointer(tmp_path / "ckpt", best_metric="eval/loss")
    state, meta, skipped = ckpt.restore_latest_good(make_state(0))
    assert_close(state.params, states[1].params, rtol=0, atol=0)
    assert meta == {"progress": {"step": 1}}
    [damaged] = skipped
    assert (damaged.step, damaged.path, damaged.moved_to) == (2, str(tmp_path / "ckpt" / "2"), str(tmp_path / "ckpt.damaged" / "2"))
    line = str(damaged)
    assert "\n" not in line and line.startswith(f"Checkpoint step 2 ({tmp_path / 'ckpt' / '2'}) does not restore (")
    assert (tmp_path / "ckpt.damaged" / "2" / "state").is_dir()  # moved, not deleted
    assert ckpt.all_steps() == [1]
    ckpt.save(2, states[2], meta={}, metrics={"eval/loss": 8.0})  # the step can be saved again
    ckpt.close()
    assert Checkpointer(tmp_path / "ckpt").restore_latest_good(make_state(0)).skipped == []


def test_when_no_checkpoint_restores_one_error_names_the_folder_and_nothing_moves(tmp_path):
    saved_steps(tmp_path / "ckpt")
    for step in ("1", "2"):
        garble_metadata(tmp_path / "ckpt" / step)
    ckpt = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(errors.CheckpointError) as info:
        ckpt.restore_latest_good(make_state(0))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"No checkpoint in {tmp_path / 'ckpt'} restores into this run (step 2: JSONDecodeError")
    assert "step 1: JSONDecodeError" in message and f"move {tmp_path / 'ckpt'} away" in message
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1", "2"] and not (tmp_path / "ckpt.damaged").exists()


def test_a_new_folder_restores_nothing(tmp_path):
    target = make_state(0)
    restored = Checkpointer(tmp_path / "ckpt").restore_latest_good(target)
    assert restored == Restored(target, None, [])


def test_check_reports_a_save_that_failed_in_the_background_without_waiting_for_the_next_save(tmp_path):
    with disk.small_disk(tmp_path / "disk", 512) as folder:
        ckpt = Checkpointer(folder / "ckpt", best_metric="eval/loss")
        disk.fill(folder)
        ckpt.save(1, make_state(1), meta={}, metrics={"eval/loss": 1.0})  # the folder is made; the arrays do not fit
        deadline = time.monotonic() + 60
        with pytest.raises(errors.DiskFullError, match="saving checkpoint step 1"):
            while time.monotonic() < deadline:
                ckpt.check()
                time.sleep(0.05)
        ckpt.close()
        assert os.listdir(folder / "ckpt") == []
