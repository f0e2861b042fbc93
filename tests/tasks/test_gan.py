"""DCGAN model and GAN task: losses by hand, the transposed convolution, steps on 8 devices, resume, config."""

from __future__ import annotations

import math
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.data.pipeline import ArrayLoader
from jaxdl.models.gan import DCGAN, ConvTranspose2x
from jaxdl.tasks import gan_losses as gan_lib
from jaxdl.tasks.base import Prepared
from jaxdl.tasks.gan import GANTask
from jaxdl.tasks.gan_state import GANState, apply_network, to_unit_range
from jaxdl.training import parallel
from jaxdl.training.checkpoint import Checkpointer
from jaxdl.training.loop import LoopConfig, fit
from tests.conftest import assert_close
from tests.helpers import build_model_and_task, compose_with, run_settings

TINY = dict(latent_dim=8, image_shape=(8, 8, 1), channels=(8, 4))
LN2 = math.log(2.0)


def _batch(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), "index": np.arange(n, dtype=np.int32)}


def _state(task: GANTask, seed: int = 0) -> GANState:
    return task.init_state(jax.random.key(seed), optax.adam(2e-4, b1=0.5), {"image": np.zeros((1, 8, 8, 1), np.uint8)})


def test_losses_against_hand_computed_values():
    real, fake = jnp.array([0.0, 2.0]), jnp.array([0.0, -1.0])
    sp = lambda x: math.log1p(math.exp(x))  # softplus
    assert_close(gan_lib.ns_d_loss(real, fake), np.array([2 * LN2, sp(-2.0) + sp(-1.0)]))
    assert_close(gan_lib.ns_g_loss(fake), np.array([LN2, sp(1.0)]))
    assert_close(gan_lib.minimax_g_loss(fake), np.array([-LN2, -sp(-1.0)]))
    assert_close(gan_lib.ls_d_loss(real, fake), np.array([0.5, 1.0]))  # 1/2 (D(x)-1)^2 + 1/2 D(G(z))^2
    assert_close(gan_lib.ls_g_loss(fake), np.array([0.5, 2.0]))
    assert_close(gan_lib.hinge_d_loss(real, fake), np.array([2.0, 0.0]))
    assert_close(gan_lib.wasserstein_d_loss(real, fake), np.array([0.0, -3.0]))
    assert_close(gan_lib.wasserstein_g_loss(fake), np.array([0.0, 1.0]))


def test_gradient_penalty_of_a_linear_critic():
    # score(x) = c * sum(x): gradient c everywhere, norm c * sqrt(P) whatever the interpolate.
    real, fake = jnp.ones((3, 2, 2, 1)), jnp.zeros((3, 2, 2, 1))
    for c, expected in [(1.0, 1.0), (0.5, 0.0), (2.0, 9.0)]:
        penalty = gan_lib.gradient_penalty(lambda x: c * x.reshape(3, -1).sum(-1), real, fake, jnp.array([0.0, 0.3, 1.0]))
        assert_close(penalty, np.full(3, expected), atol=1e-5)


def test_diversity_falls_to_zero_on_a_collapsed_batch():
    varied = jax.random.uniform(jax.random.key(0), (6, 4, 4, 1))
    collapsed = jnp.broadcast_to(varied[:1], varied.shape)
    distance, pairs = gan_lib.neighbour_distance(varied)
    assert float(pairs) == 6.0 and float(distance) > 1.0
    assert float(gan_lib.neighbour_distance(collapsed)[0]) < 1e-4
    # Padding rows count in no pair: rows 4, 5 invalid leave pairs (1,0), (2,1), (3,2).
    assert float(gan_lib.neighbour_distance(varied, jnp.array([1.0, 1, 1, 1, 0, 0]))[1]) == 3.0


def test_conv_transpose_2x_is_flax_conv_transpose():
    x = jax.random.normal(jax.random.key(0), (2, 7, 5, 3))
    module = ConvTranspose2x(4)
    variables = module.init(jax.random.key(1), x)
    reference = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding="SAME").apply(variables, x)
    out = module.apply(variables, x)
    assert out.shape == (2, 14, 10, 4)
    assert_close(out, reference, atol=1e-5)


def test_dcgan_shapes_ranges_and_default_size():
    model = DCGAN(**TINY)
    z, x = jnp.ones((3, 8)), jnp.zeros((3, 8, 8, 1))
    variables = model.init(jax.random.key(0), z, x, train=False)
    out = model.apply(variables, z, x, train=False)
    assert out.fake.shape == (3, 8, 8, 1) and out.fake.dtype == jnp.float32
    assert float(jnp.abs(out.fake).max()) <= 1.0
    assert out.real_logits.shape == out.fake_logits.shape == (3,)
    default = jax.eval_shape(lambda: DCGAN().init(jax.random.key(0), jnp.ones((1, 100)), jnp.zeros((1, 28, 28, 1)), train=False))
    counts = {k: sum(p.size for p in jax.tree.leaves(v)) for k, v in default["params"].items()}
    # G: 100*3136 + BN 128 + 4*4*64*32 + BN 64 + 4*4*32*1 + 1;  D: 4*4*1*32 + 32 + 4*4*32*64 + BN 128 + 3136 + 1
    assert counts == {"generator": 313600 + 128 + 32768 + 64 + 512 + 1, "discriminator": 544 + 32768 + 128 + 3137}


def test_one_step_on_8_devices_changes_both_networks_and_keeps_them_replicated():
    devices = parallel.select_devices(8)
    task = GANTask(DCGAN(**TINY))
    state = _state(task)
    batch = _batch(16)
    step = parallel.data_parallel(task.train_step, devices, returns_state=True)
    new, metrics = step(parallel.replicate(state, devices), parallel.shard(batch, 8), jax.random.key(3))
    for leaf in jax.tree.leaves(new):  # every device holds the same copy
        copies = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert len(copies) == 8 and all(np.array_equal(c, copies[0]) for c in copies)
    host = parallel.to_host(new)
    for name in ("g", "d"):
        before, after = getattr(state, name), getattr(host, name)
        assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)) if a.size > 1)
        assert int(after.step) == 1
    assert int(host.step) == 1
    m = jax.device_get(jax.tree.map(lambda x: x[0], metrics))
    for key in ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "d_grad_norm", "g_grad_norm", "diversity"):
        assert np.isfinite(m[key]), key
    assert 0.0 <= m["d_real_accuracy"] <= 1.0 and m["diversity"] > 0.0

    # The same global batch on one device gives the same update (batch statistics of the global batch).
    single, _ = jax.jit(task.train_step)(state, batch, jax.random.key(3))
    assert_close(host.params, single.params, rtol=1e-4, atol=1e-5)
    assert_close(host.g.batch_stats, single.g.batch_stats, rtol=1e-4, atol=1e-5)


def test_n_critic_and_wgan_gp():
    with pytest.raises(ValueError, match="discriminator_norm=layer"):
        GANTask(DCGAN(**TINY), loss="wgan_gp")
    task = GANTask(DCGAN(**TINY, discriminator_norm="layer"), loss="wgan_gp", n_critic=3)
    state = _state(task)
    new, metrics = jax.jit(task.train_step)(state, _batch(), jax.random.key(0))
    assert int(new.d.step) == 3 and int(new.g.step) == 1 and int(new.step) == 1
    assert np.isfinite(float(metrics["gradient_penalty"])) and float(metrics["gradient_penalty"]) > 0.0
    with pytest.raises(ValueError, match="task.loss"):
        GANTask(DCGAN(**TINY), loss="nope")


@pytest.mark.parametrize("loss", sorted(gan_lib.LOSSES))
def test_every_loss_trains_one_step(loss):
    norm = "layer" if loss == "wgan_gp" else "batch"
    task = GANTask(DCGAN(**TINY, discriminator_norm=norm), loss=loss)
    _, metrics = jax.jit(task.train_step)(_state(task), _batch(), jax.random.key(0))
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_eval_step_sums_and_samples():
    task = GANTask(DCGAN(**TINY))
    state = _state(task)
    batch = {**_batch(8), "mask": np.array([True] * 6 + [False] * 2)}
    sums = jax.device_get(jax.jit(task.eval_step)(state, batch, jax.random.key(0)))
    assert float(sums["count"]) == 6.0
    metrics = task.summarize_eval(sums)
    assert 0.0 <= metrics["d_real_accuracy"] <= 1.0 and metrics["diversity"] > 0.0
    images = task.sample(state, 5, seed=1)
    assert images.shape == (5, 8, 8, 1) and images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, task.sample(state, 5, seed=1))


def test_averaged_generator_follows_the_warmed_up_decay():
    with pytest.raises(ValueError, match="task.ema_decay"):
        GANTask(DCGAN(**TINY), ema_decay=1.0)
    assert _state(GANTask(DCGAN(**TINY))).g_ema is None  # off by default in the class
    task = GANTask(DCGAN(**TINY), ema_decay=0.9)
    state = _state(task)
    step = jax.jit(task.train_step)
    expected = {"params": state.g.params, "batch_stats": state.g.batch_stats}
    for t in range(3):  # decay min(0.9, (1 + t) / (10 + t)): 0.1, 0.1818..., 0.25
        state, _ = step(state, _batch(seed=t), jax.random.key(0))
        decay = min(0.9, (1 + t) / (10 + t))
        current = {"params": state.g.params, "batch_stats": state.g.batch_stats}
        expected = jax.tree.map(lambda e, c: decay * e + (1 - decay) * c, expected, current)
        assert_close(state.g_ema, expected, rtol=1e-5, atol=1e-6)
    averaged, current = task.sample(state, 4, seed=0), task.sample(state, 4, seed=0, averaged=False)
    assert not np.allclose(averaged, current)
    np.testing.assert_array_equal(current, _generate_current(task, state, 4))


def _generate_current(task: GANTask, state: GANState, num: int) -> np.ndarray:
    z = jax.random.normal(jax.random.key(0), (num, task.model.latent_dim))
    fake, _ = apply_network(task.model, "generator", state.g.params, state.g.batch_stats, z, train=False)
    return np.asarray(to_unit_range(fake))


def _fit(task: GANTask, run_dir: pathlib.Path, epochs: int):
    arrays = {"image": _batch(32, seed=1)["image"]}
    devices = parallel.select_devices(2)
    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        fit(
            task,
            _state(task),
            prepared=Prepared(arrays, arrays),
            config=LoopConfig(epochs=epochs, progress=False, artifacts=False, monitor="eval/diversity", mode="max"),
            train_loader=ArrayLoader(arrays, 8, shuffle=True, seed=0, drop_remainder=True),
            eval_loader=ArrayLoader(arrays, 16, shuffle=False, drop_remainder=False),
            run_dir=run_dir,
            seed=0,
            devices=devices,
            checkpointer=checkpointer,
        )
        return checkpointer.restore(_state(task))[0]
    finally:
        checkpointer.close()


@pytest.mark.slow  # three fits; resuming any task's state: tests/training/test_loop.py
def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path):
    task = GANTask(DCGAN(**TINY), ema_decay=0.999)
    straight = _fit(task, tmp_path / "straight", epochs=2)
    _fit(task, tmp_path / "resumed", epochs=1)
    resumed = _fit(task, tmp_path / "resumed", epochs=2)  # same folder: continues from step 4
    assert int(resumed.step) == int(straight.step) == 8
    assert resumed.g_ema is not None
    assert_close(resumed, straight)


def test_write_artifacts(tmp_path):
    task = GANTask(DCGAN(**TINY), num_sample_images=4)
    state = _state(task)
    for epoch in (1, 2):
        task.write_artifacts(state, epoch, tmp_path, Prepared({}, {}), {})
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png", "progress.gif"]


def test_model_gan_config_composes_and_builds():
    from jaxdl.build import DataSpec

    mnist = DataSpec("mnist", image_shape=(28, 28, 1), num_classes=10, num_outputs=10)
    cfg = compose_with("model=gan")
    assert (cfg.task.name, cfg.data.name, cfg.model.name) == ("gan", "mnist", "gan")
    assert cfg.optimizer.learning_rate == pytest.approx(2e-4) and cfg.optimizer.b1 == pytest.approx(0.5)
    model, task = build_model_and_task(run_settings(cfg), mnist)
    assert isinstance(task, GANTask) and task.ema_decay == 0.0 and tuple(model.image_shape) == (28, 28, 1)
    cfg = compose_with("model=gan", "data=fashion_mnist", "task.loss=wgan_gp", "model.discriminator_norm=layer", "task.n_critic=5")
    assert cfg.data.name == "fashion_mnist" and cfg.task.n_critic == 5
    _, task = build_model_and_task(run_settings(cfg), DataSpec("fashion_mnist", image_shape=(28, 28, 1)))
    assert (task.loss, task.n_critic) == ("wgan_gp", 5)


@pytest.mark.slow
def test_real_command_and_fid_script(tmp_path, mnist_data_dir, mnist_raw_dir):
    """model=gan and model=mlp smoke runs on real MNIST, then scripts.fid on the GAN and on train-vs-test."""
    import json
    import subprocess

    from tests.conftest import REPO
    from tests.test_run import command, environment

    env = environment(mnist_raw_dir)
    gan_dir, cls_dir = tmp_path / "gan", tmp_path / "cls"
    for run_dir, base in [(cls_dir, ["model=mlp", "debug=smoke", "trainer.progress=false"]),
                          (gan_dir, ["model=gan", "debug=smoke", "trainer.progress=false",
                                     "evaluator=fid", f"evaluator.classifier={cls_dir}", "evaluator.samples=300"])]:
        done = subprocess.run(command(run_dir, mnist_data_dir, base=base), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("samples/epoch_001.png", "samples/epoch_002.png", "samples/progress.gif", "losses.png", "results.json"):
        assert (gan_dir / name).is_file(), name
    metrics = json.loads((gan_dir / "results.json").read_text())["metrics"]
    assert metrics["eval/fid"] > 0 and 0 <= metrics["eval/fid_classifier_accuracy"] <= 1
    out = tmp_path / "fid.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.fid", "--classifier", str(cls_dir), "--run", str(gan_dir), "--train-vs-test",
         "--num-samples", "300", "--out", str(out)],
        cwd=REPO, env={**env, "JAXDL_DATA_DIR": str(mnist_data_dir)}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["what"] for r in records] == [str(gan_dir), "train-vs-test"]
    assert all(r["fid"] > 0 and r["classifier_checkpoint"] for r in records)
    assert records[1]["fid"] < records[0]["fid"]  # real training images beat a two-epoch smoke GAN
