"""The loop: exact resume, early stopping, the NaN guard, files written."""

import json
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data.pipeline import ArrayLoader
from jaxdl.metrics.writers import MetricWriter, read_metrics
from jaxdl.models.vae import VAE
from jaxdl.tasks.base import Prepared, RunFacts
from jaxdl.tasks.vae import VAETask
from jaxdl.training import parallel
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.loop import LoopConfig, NonFiniteMetricError, _run_eval, fit
from tests.conftest import assert_close


def synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), "label": rng.integers(0, 10, n)}


def train(run_dir, *, epochs, task=None, devices=1, lr=1e-3, on_evaluation=None, train_examples=64, **loop):
    task = task or VAETask(VAE(latent_dim=4, hidden_dims=(16,)), iw_samples=20, iw_chunk=10)
    prepared = task.prepare(synthetic(train_examples, 0), synthetic(24, 1), RunFacts(batch_size=16, epochs=epochs))
    train_loader = ArrayLoader(prepared.train, 16, shuffle=True, seed=0, drop_remainder=True)
    eval_loader = ArrayLoader(prepared.eval, 8, shuffle=False, drop_remainder=False)
    state = task.init_state(jax.random.fold_in(jax.random.key(0), 0), optax.adam(lr), synthetic(1, 0))
    config = LoopConfig(**{"epochs": epochs, "log_every_steps": 2, "monitor": "eval/elbo", "progress": False, **loop})
    checkpointer = Checkpointer(run_dir / "checkpoints", best_metric=config.monitor)
    writer = MetricWriter(run_dir, tensorboard=False)
    try:
        return fit(
            task, state, prepared=prepared, config=config, train_loader=train_loader, eval_loader=eval_loader, run_dir=run_dir,
            seed=0, devices=parallel.select_devices(devices), checkpointer=checkpointer, writer=writer,
            on_evaluation=on_evaluation,
        ), checkpointer
    finally:
        checkpointer.close()
        writer.close()


def final_params(checkpointer):
    state = VAETask(VAE(latent_dim=4, hidden_dims=(16,))).init_state(jax.random.key(0), optax.adam(1e-3), synthetic(1, 0))
    return Checkpointer(checkpointer.directory).restore(state)[0].params


def test_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path):
    straight, ckpt_a = train(tmp_path / "a", epochs=3)
    train(tmp_path / "b", epochs=1)  # a run stopped after its first epoch ...
    resumed, ckpt_b = train(tmp_path / "b", epochs=3)  # ... and started again with the same output folder
    assert resumed["resumed_from"] == 4
    assert resumed["metrics"] == straight["metrics"]
    assert_close(final_params(ckpt_b), final_params(ckpt_a), rtol=0, atol=0)


def test_resume_from_a_mid_epoch_checkpoint_is_exact(tmp_path):
    straight, _ = train(tmp_path / "a", epochs=2)
    train(tmp_path / "b", epochs=1, checkpoint_every_steps=3)  # saves steps 3 (mid-epoch) and 4
    # Remove step 4, as if the process had been killed between the two saves.
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
    resumed, _ = train(tmp_path / "b", epochs=2, checkpoint_every_steps=3)
    assert resumed["resumed_from"] == 3
    assert resumed["metrics"] == straight["metrics"]


def test_writes_metrics_pictures_and_final_evaluation(tmp_path):
    results, _ = train(tmp_path, epochs=2)
    records = list(read_metrics(tmp_path / "metrics.jsonl"))
    assert any("train/elbo" in r for r in records) and any("eval/elbo" in r for r in records)
    assert {"eval/nll", "eval/active_units", "eval/elbo", "eval/kl", "eval/recon"} <= set(results["metrics"])
    for name in ("samples/epoch_001.png", "samples/epoch_002.png", "reconstructions/epoch_002.png", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    json.dumps(results, default=str)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    # A learning rate of 0 never improves the monitored metric.
    results, _ = train(tmp_path, epochs=10, lr=0.0, patience=1)
    assert results["stopped_early"]
    assert results["steps"] == 3 * 4  # best at epoch 1, two evaluations without improvement


def test_an_evaluation_callback_sees_every_evaluation_and_can_stop_the_run(tmp_path):
    seen = []

    def prune_after_two(step, metrics):
        seen.append((step, metrics["eval/elbo"]))
        return "pruned" if len(seen) == 2 else None

    results, checkpointer = train(tmp_path, epochs=5, on_evaluation=prune_after_two)
    assert [s for s, _ in seen] == [4, 8]
    assert results["steps"] == 8 and results["stopped_early"] and results["stop_reason"] == "pruned"
    assert results["metrics"]["eval/elbo"] == seen[-1][1]  # the last evaluation is recorded
    assert 8 in Checkpointer(checkpointer.directory).all_steps()
    again, _ = train(tmp_path, epochs=5, on_evaluation=prune_after_two)  # rerun: stays stopped, trains nothing
    assert again["steps"] == 8 and again["stop_reason"] == "pruned" and len(seen) == 2


class ExplodingTask(VAETask):
    """Reports a NaN loss from step 5 on."""

    def train_step(self, state, batch, key, *, context=None, axis_name=None):
        new_state, metrics = super().train_step(state, batch, key, context=context, axis_name=axis_name)
        metrics["elbo"] = jnp.where(state.step >= 5, jnp.nan, metrics["elbo"])
        return new_state, metrics


def test_nan_guard_names_metric_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    task = ExplodingTask(VAE(latent_dim=4, hidden_dims=(16,)), iw_samples=0)
    with pytest.raises(NonFiniteMetricError, match=r"train/elbo=nan at step 6; .*last good checkpoint is step 4"):
        train(tmp_path, epochs=3, task=task)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.all_steps() == [4]
    ckpt.close()


def test_unknown_monitor_is_reported(tmp_path):
    with pytest.raises(KeyError, match="trainer.monitor='eval/accuracy'"):
        task = VAETask(VAE(latent_dim=4, hidden_dims=(16,)), iw_samples=0)
        train_loader = ArrayLoader(synthetic(32, 0), 16, shuffle=True, seed=0, drop_remainder=True)
        eval_loader = ArrayLoader(synthetic(8, 1), 8, shuffle=False, drop_remainder=False)
        state = task.init_state(jax.random.key(0), optax.adam(1e-3), synthetic(1, 0))
        fit(task, state, prepared=Prepared(train_loader.arrays, eval_loader.arrays),
            config=LoopConfig(epochs=1, monitor="eval/accuracy", progress=False), train_loader=train_loader,
            eval_loader=eval_loader, run_dir=tmp_path, seed=0, devices=parallel.select_devices(1))


def test_max_steps_ends_mid_epoch_and_evaluates_every_n_steps(tmp_path):
    results, _ = train(tmp_path, epochs=1, max_steps=7, eval_every_steps=3)
    assert results["steps"] == 7
    evaluated_at = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/elbo" in r]
    assert evaluated_at == [3, 6, 7]


def test_eval_batches_estimates_during_training_and_measures_the_final_state_on_the_whole_split(tmp_path):
    exact, exact_ckpt = train(tmp_path / "exact", epochs=2)
    estimated, estimated_ckpt = train(tmp_path / "estimated", epochs=2, eval_batches=1)  # 1 of the 3 eval batches
    np.testing.assert_array_equal(  # the same training
        jax.tree.leaves(final_params(estimated_ckpt))[0], jax.tree.leaves(final_params(exact_ckpt))[0]
    )
    exact_records = [r for r in read_metrics(tmp_path / "exact" / "metrics.jsonl") if "eval/elbo" in r]
    records = [r for r in read_metrics(tmp_path / "estimated" / "metrics.jsonl") if "eval/elbo" in r]
    assert [r["step"] for r in exact_records] == [4, 8]
    assert [(r["step"], r.get("event")) for r in records] == [(4, None), (8, None), (8, "whole_split_evaluation")]
    for estimate, whole in zip(records[:2], exact_records):
        assert estimate["eval/elbo"] != whole["eval/elbo"]  # 8 of the 24 examples
    assert records[2]["eval/elbo"] == exact_records[1]["eval/elbo"]
    assert estimated["metrics"] == exact["metrics"]  # the final metrics are exact, the importance-weighted NLL too
    assert estimated["best"]["value"] == min(r["eval/elbo"] for r in records[:2])  # ranked by the estimates


def test_eval_batches_read_the_first_batches_and_no_more_than_the_split_has(tmp_path):
    task = VAETask(VAE(latent_dim=4, hidden_dims=(16,)), iw_samples=0)
    eval_arrays = synthetic(24, 1)
    state = task.init_state(jax.random.key(0), optax.adam(1e-3), synthetic(1, 0))
    dp = parallel.DataParallel(parallel.select_devices(1), "shard_map")
    step = dp.map(task.eval_step, context=None)

    def totals(arrays, max_batches=None):
        loader = ArrayLoader(arrays, 8, shuffle=False, drop_remainder=False)
        return jax.device_get(_run_eval(step, dp.replicate(state), loader, jax.random.key(2), dp, max_batches))

    first_batch = totals({k: v[:8] for k, v in eval_arrays.items()})
    jax.tree.map(np.testing.assert_array_equal, totals(eval_arrays, 1), first_batch)
    jax.tree.map(np.testing.assert_array_equal, totals(eval_arrays, 3), totals(eval_arrays))
    assert not np.array_equal(totals(eval_arrays)["count"], first_batch["count"])

    whole, _ = train(tmp_path / "whole", epochs=1)
    at_least_all, _ = train(tmp_path / "all", epochs=1, eval_batches=3)  # the split has 3: no estimate, no repeat
    assert at_least_all["metrics"] == whole["metrics"]
    assert not [r for r in read_metrics(tmp_path / "all" / "metrics.jsonl") if r.get("event") == "whole_split_evaluation"]
    with pytest.raises(ValueError, match=r"trainer.eval_batches=0 must be at least 1 \(or null\)"):
        LoopConfig(eval_batches=0)


class NaNFinalEvaluationTask(VAETask):
    """Trains normally; its final evaluation reports a NaN importance-weighted NLL."""

    def final_evaluation(self, evaluate, state, prepared):
        return {**super().final_evaluation(evaluate, state, prepared), "eval/nll": float("nan")}


def test_a_nan_in_the_final_evaluation_fails_the_run_and_keeps_its_checkpoints(tmp_path):
    from jaxdl.errors import UserError

    task = NaNFinalEvaluationTask(VAE(latent_dim=4, hidden_dims=(16,)), iw_samples=20, iw_chunk=10)
    with pytest.raises(NonFiniteMetricError) as info:
        train(tmp_path, epochs=2, task=task)
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert message.startswith("eval/nll=nan at step 8; the final evaluation failed and the last good checkpoint is step 8")
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.all_steps() == [4, 8]  # nothing deleted
    ckpt.close()
    final = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/active_units" in r]
    assert len(final) == 1  # the failing final evaluation is recorded


@pytest.mark.slow  # three fits; the damaged checkpoint set aside: tests/training/test_checkpoint.py
def test_resume_skips_a_damaged_latest_checkpoint_and_ends_like_an_uninterrupted_run(tmp_path, capsys):
    straight, _ = train(tmp_path / "a", epochs=2)
    train(tmp_path / "b", epochs=1, checkpoint_every_steps=3)  # saves steps 3 (mid-epoch) and 4
    (tmp_path / "b" / "checkpoints" / "4" / "state" / "_METADATA").write_text("{truncated")
    capsys.readouterr()
    resumed, _ = train(tmp_path / "b", epochs=2, checkpoint_every_steps=3)
    assert resumed["resumed_from"] == 3
    assert resumed["metrics"] == straight["metrics"]
    [skipped] = resumed["skipped_checkpoints"]
    assert (skipped["step"], skipped["moved_to"]) == (4, str(tmp_path / "b" / "checkpoints.damaged" / "4"))
    assert f"Checkpoint step 4 ({tmp_path / 'b' / 'checkpoints' / '4'}) does not restore" in capsys.readouterr().err
    assert (tmp_path / "b" / "checkpoints.damaged" / "4" / "state").is_dir()


def record_step_waits(monkeypatch) -> list:
    """The train-step metrics the host waits for with `jax.block_until_ready`, in order."""
    waited = []
    block_until_ready = jax.block_until_ready

    def recording(tree):
        if isinstance(tree, dict) and "grad_norm" in tree:  # a train step's metrics (eval outputs have none)
            waited.append(tree)
        return block_until_ready(tree)

    monkeypatch.setattr(jax, "block_until_ready", recording)
    return waited


@pytest.mark.parametrize("bound, waits", [(0, 1), (1, 8)])  # 2 epochs of 4 steps; the first step is always waited for
def test_max_steps_in_flight_makes_the_host_wait_for_each_step_and_changes_no_number(tmp_path, monkeypatch, bound, waits):
    reference, _ = train(tmp_path / "reference", epochs=2)
    waited = record_step_waits(monkeypatch)
    results, _ = train(tmp_path / "bounded", epochs=2, max_steps_in_flight=bound)
    assert len(waited) == waits
    assert results["metrics"] == reference["metrics"]  # the final evaluation
    logged = [[{k: v for k, v in r.items() if k.startswith(("train/", "eval/")) and not k.endswith("_per_s")}
               for r in read_metrics(run / "metrics.jsonl")] for run in (tmp_path / "bounded", tmp_path / "reference")]
    assert logged[0] == logged[1] and any(logged[0])  # every logged loss, not the throughput


@pytest.mark.parametrize("devices, bound, waits", [
    (1, 0, 1),  # 40 steps, metrics fetched once at step 40, no bound: the first step alone is waited for
    (2, 0, 1 + 24),  # two CPU devices: at most 16 in flight, so 24 of the 39 pending steps wait
    (2, 32, 1 + 24),  # a larger setting does not lift that
    (2, 4, 1 + 36),  # a smaller one is kept
])
def test_several_cpu_devices_keep_at_most_sixteen_steps_in_flight(tmp_path, monkeypatch, devices, bound, waits):
    waited = record_step_waits(monkeypatch)
    results, _ = train(tmp_path, epochs=1, devices=devices, train_examples=640, log_every_steps=40,
                       max_steps_in_flight=bound)
    assert results["steps"] == 40 and len(waited) == waits


def test_time_outside_training_steps_is_accounted_by_phase(tmp_path, monkeypatch, capsys):
    task = VAETask(VAE(latent_dim=4, hidden_dims=(16,)), iw_samples=20, iw_chunk=10)
    write_artifacts, save = task.write_artifacts, Checkpointer.save

    def slow_artifacts(*args, **kwargs):
        time.sleep(0.3)
        return write_artifacts(*args, **kwargs)

    def slow_save(self, *args, **kwargs):
        time.sleep(0.5)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(task, "write_artifacts", slow_artifacts)
    monkeypatch.setattr(Checkpointer, "save", slow_save)
    # 2 epochs of 4 steps: evaluations (pictures, a save) at steps 4 and 8, mid-epoch saves at steps 3 and 6.
    results, _ = train(tmp_path, epochs=2, task=task, checkpoint_every_steps=3)
    phase_s = results["phase_s"]
    assert set(phase_s) == {"evaluation", "artifacts", "checkpoints", "final_evaluation"}
    assert phase_s["artifacts"] >= 2 * 0.3 and phase_s["checkpoints"] >= 4 * 0.5
    assert phase_s["evaluation"] > 0 and phase_s["final_evaluation"] > 0
    assert "final_evaluation_s" not in results  # once, as phase_s["final_evaluation"]
    assert results["train_time_s"] < 0.5, "the mid-epoch saves (0.5 s each) were counted as training time"
    assert results["train_time_s"] + results["first_step_s"] + sum(phase_s.values()) <= results["wall_time_s"]
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith(f"wall time {results['wall_time_s']:.1f} s: training steps")
    assert f"artifacts {phase_s['artifacts']:.1f} s, checkpoints {phase_s['checkpoints']:.1f} s" in summary


@pytest.mark.parametrize("field", ["prefetch_to_device", "max_steps_in_flight", "diagnostics_every_steps"])
def test_a_negative_count_is_refused_with_the_setting_named(field):
    with pytest.raises(ValueError, match=f"trainer.{field}=-1 must be >= 0"):
        LoopConfig(**{field: -1})
    LoopConfig(**{field: 0})  # 0 is "off"
