"""GAN objective: alternating discriminator and generator updates with a choice of losses.

Goodfellow et al. 2014, "Generative Adversarial Nets" (arXiv:1406.2661) for the
game; the DCGAN recipe (Radford et al. 2016, arXiv:1511.06434): Adam with
learning rate 2e-4 and beta1 0.5 for both networks, batch norm, noise
z ~ N(0, I) (the paper draws it uniformly; a Gaussian is the common choice).

Losses: `jaxdl.tasks.gan_losses.LOSSES` (non_saturating by default, minimax,
least_squares, hinge, wgan_gp with its gradient penalty, which needs a
discriminator without batch norm: `model.discriminator_norm=layer`).

One training step (`train_step`) makes `n_critic` discriminator updates and
then one generator update, on the same global batch of real images (each D
update draws fresh noise; Gulrajani et al. also draw fresh real images per
critic update, which a step of this loop cannot). The two networks have their
own train states (`GANState.g`, `GANState.d`: params, batch_stats, opt_state);
`GANState.step` counts generator updates and is what the loop calls a step.
Both are updated by the optimizer of the `optimizer` config group (DCGAN: Adam
2e-4, beta1 0.5), each with its own optimizer state; D's step size is
multiplied by `d_learning_rate_multiplier` (TTUR, Heusel et al. 2017, when != 1).

Generator averaging (`ema_decay` > 0; off by default): the state also keeps an
exponential moving average of the generator's parameters and batch statistics
(`GANState.g_ema`), updated after every generator update with decay
min(ema_decay, (1 + t) / (10 + t)) at update t (the warm-up of TensorFlow's
`ExponentialMovingAverage(num_updates=...)`). Sample pictures and FID come
from the averaged generator, as in Yazici et al. 2019, "The Unusual
Effectiveness of Averaging in GAN Training" (arXiv:1806.04498) and Karras et
al. 2018 (arXiv:1710.10196); the game itself (both updates, D's metrics) uses
the current generator. `sample(..., averaged=False)` gives the current one.
The average never feeds back into training, so one run scores both. For this
DCGAN on MNIST (20 epochs, decay 0.999) the average scored worse than the
current generator (FID 61.9 against 58.9; conf/model/gan.yaml), hence off.

Random streams, folded from the loop's key and the step: for D update i the
noise `fold(step, i)` and (WGAN-GP) the interpolation weight `fold(step, i) + 1`,
for the G update `fold(step, n_critic)`, each drawn per example from the
example's dataset index (`example_keys`), so a step is the same on 1 and on N
devices (batch statistics are those of the global batch).

Metrics (train, means over the global batch): `d_loss`, `g_loss`,
`d_real_accuracy` and `d_fake_accuracy` (fraction of real images scored above,
of fakes below, the loss's decision threshold), `real_score`, `fake_score`,
`d_grad_norm`, `g_grad_norm`, `gradient_penalty` (WGAN-GP) and `diversity`:
the mean L2 distance between neighbouring generated images of the batch
divided by the same distance between real images (about 1 for samples as
varied as the data, near 0 when the generator collapses to a few modes).
Evaluation (deterministic given the loop's key): the same quantities on the
test images and one generated image per test image, in evaluation mode
(running batch statistics).

Images: batches hold `image` uint8 [B, H, W, C] in 0..255, scaled to [-1, 1]
for both networks; generated images are returned to [0, 1] for pictures and
FID. `index` int32 [B]; for evaluation `mask` bool [B].
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.models.gan import DCGAN
from jaxdl.tasks.base import Batch, Metrics, Prepared, Task
from jaxdl.tasks.gan_losses import LOSSES, gradient_penalty, neighbour_distance
from jaxdl.tasks.gan_state import GANState, apply_network, sample_images
from jaxdl.training.parallel import example_keys, pmean, psum
from jaxdl.training.state import TrainState
from jaxdl.viz.images import save_image_grid


class GANTask(Task):
    """Trains a `DCGAN` by alternating discriminator and generator updates.

    Args:
      model: the DCGAN module.
      loss: a key of `LOSSES`.
      n_critic: discriminator updates per generator update.
      gp_weight: lambda of the WGAN-GP gradient penalty (paper: 10).
      d_learning_rate_multiplier: D's step size relative to G's (1: equal, as in DCGAN).
      ema_decay: decay of the averaged generator used for samples and FID, in [0, 1);
        0 keeps no average (samples come from the current generator).
      num_sample_images: images in `samples/epoch_NNN.png`, drawn from the same
        noise (seed `sample_seed`) every epoch.

    FID is an evaluator (`evaluator=fid`, `jaxdl.evaluators.fid`): it scores
    `sample` against the evaluation split for any generative task.
    """

    default_metric = "eval/diversity"
    default_mode = "max"
    progress_metric = "d_loss"
    progress_unit = "discriminator loss (mean over the batch)"

    def __init__(
        self,
        model: DCGAN,
        *,
        loss: str = "non_saturating",
        n_critic: int = 1,
        gp_weight: float = 10.0,
        d_learning_rate_multiplier: float = 1.0,
        ema_decay: float = 0.0,
        num_sample_images: int = 64,
        sample_seed: int = 0,
    ):
        if loss not in LOSSES:
            raise ValueError(f"task.loss={loss!r}; choose one of {sorted(LOSSES)}.")
        if n_critic < 1:
            raise ValueError(f"task.n_critic={n_critic} must be at least 1.")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"task.ema_decay={ema_decay} must be in [0, 1); 0 turns generator averaging off.")
        if loss == "wgan_gp" and model.discriminator_norm == "batch":
            raise ValueError(
                "task.loss=wgan_gp penalises each example's gradient, which batch norm in the discriminator mixes "
                "across the batch; set model.discriminator_norm=layer (Gulrajani et al. 2017) or none."
            )
        self.model = model
        self.loss = loss
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.d_learning_rate_multiplier = d_learning_rate_multiplier
        self.ema_decay = ema_decay
        self.num_sample_images = num_sample_images
        self.sample_seed = sample_seed

    #: Pictures the loop redraws after each evaluation: file -> metrics against steps.
    curves = {"losses.png": ("train/d_loss", "train/g_loss")}

    def required_features(self) -> tuple[str, ...]:
        return ("image",)

    def init_state(
        self, key: jax.Array, tx: optax.GradientTransformation, example_batch: Batch, context: Any = None
    ) -> GANState:
        """Initialises both networks for images shaped like `example_batch["image"]` [1, H, W, C]."""
        image_shape = tuple(example_batch["image"].shape[-3:])
        if image_shape != tuple(self.model.image_shape):
            raise ValueError(f"The data's images are {image_shape} but model.image_shape={tuple(self.model.image_shape)}.")
        z = jnp.zeros((1, self.model.latent_dim), jnp.float32)
        x = jnp.zeros((1, *image_shape), jnp.float32)
        variables = self.model.init({"params": key}, z, x, train=False)
        stats = variables.get("batch_stats", {})
        d_tx = tx if self.d_learning_rate_multiplier == 1.0 else optax.chain(tx, optax.scale(self.d_learning_rate_multiplier))
        g = TrainState.create(
            apply_fn=self.model.apply, params=variables["params"]["generator"], tx=tx, batch_stats=stats.get("generator")
        )
        d = TrainState.create(
            apply_fn=self.model.apply,
            params=variables["params"]["discriminator"],
            tx=d_tx,
            batch_stats=stats.get("discriminator"),
        )
        g_ema = {"params": g.params, "batch_stats": g.batch_stats} if self.ema_decay > 0 else None
        return GANState(step=jnp.zeros((), jnp.int32), g=g, d=d, g_ema=g_ema)

    def generate(self, params, batch_stats, z: jax.Array, *, train: bool, axis_name: str | None = None):
        """G(z): [B, Z] -> ([B, H, W, C] images in [-1, 1], batch_stats updated in training, else unchanged)."""
        return apply_network(self.model, "generator", params, batch_stats, z, train=train, axis_name=axis_name)

    def discriminate(self, params, batch_stats, x: jax.Array, *, train: bool, axis_name: str | None = None):
        """D(x): [B, H, W, C] in [-1, 1] -> ([B] scores, batch_stats updated in training, else unchanged)."""
        return apply_network(self.model, "discriminator", params, batch_stats, x, train=train, axis_name=axis_name)

    def noise(self, key: jax.Array, index: jax.Array) -> jax.Array:
        """z ~ N(0, I) [B, Z], one stream per example (its dataset index)."""
        return jax.vmap(lambda k: jax.random.normal(k, (self.model.latent_dim,)))(example_keys(key, index))

    def _d_update(self, state: GANState, real: jax.Array, index: jax.Array, key: jax.Array, axis_name):
        """One discriminator update; returns (new D TrainState, metrics of this update)."""
        gan = LOSSES[self.loss]
        z = self.noise(key, index)
        fake, _ = self.generate(state.g.params, state.g.batch_stats, z, train=True, axis_name=axis_name)
        fake = jax.lax.stop_gradient(fake)

        def loss_fn(params):
            real_scores, stats = self.discriminate(params, state.d.batch_stats, real, train=True, axis_name=axis_name)
            fake_scores, stats = self.discriminate(params, stats, fake, train=True, axis_name=axis_name)
            loss = gan.d_loss(real_scores, fake_scores)  # [B]
            aux = {"d_loss": loss.mean(), "real_score": real_scores.mean(), "fake_score": fake_scores.mean()}
            aux["d_real_accuracy"] = jnp.mean((real_scores > gan.threshold).astype(jnp.float32))
            aux["d_fake_accuracy"] = jnp.mean((fake_scores < gan.threshold).astype(jnp.float32))
            if self.loss == "wgan_gp":
                eps = jax.vmap(lambda k: jax.random.uniform(k, ()))(example_keys(jax.random.fold_in(key, 1), index))
                score_fn = lambda x: self.discriminate(params, None, x, train=True)[0]
                penalty = gradient_penalty(score_fn, real, fake, eps).mean()
                aux["gradient_penalty"] = penalty
                loss = loss + self.gp_weight * penalty
            return loss.mean(), (aux, stats, fake)

        (_, (aux, stats, fake)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d.params)
        grads = pmean(grads, axis_name)
        aux = pmean(aux, axis_name)
        aux["d_grad_norm"] = optax.tree.norm(grads)
        return state.d.apply_gradients(grads=grads, batch_stats=stats), aux

    def train_step(
        self, state: GANState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> tuple[GANState, Metrics]:
        """`n_critic` discriminator updates, then one generator update, on the global batch.

        Returns:
          (new state, metrics): D metrics of the last D update, G metrics of the G update.
        """
        step_key = jax.random.fold_in(key, state.step)
        real = batch["image"].astype(jnp.float32) / 127.5 - 1.0  # [B, H, W, C] in [-1, 1]
        index = batch["index"]
        metrics: dict[str, jax.Array] = {}
        for i in range(self.n_critic):
            d_state, metrics = self._d_update(state, real, index, jax.random.fold_in(step_key, 2 * i), axis_name)
            state = state.replace(d=d_state)

        gan = LOSSES[self.loss]
        z = self.noise(jax.random.fold_in(step_key, 2 * self.n_critic), index)

        def g_loss_fn(params):
            fake, g_stats = self.generate(params, state.g.batch_stats, z, train=True, axis_name=axis_name)
            scores, _ = self.discriminate(state.d.params, state.d.batch_stats, fake, train=True, axis_name=axis_name)
            return gan.g_loss(scores).mean(), (fake, g_stats)

        (g_loss, (fake, g_stats)), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g.params)
        grads = pmean(grads, axis_name)
        fake_dist, _ = neighbour_distance(fake)
        real_dist, _ = neighbour_distance(real)
        g_metrics = pmean({"g_loss": g_loss, "diversity": fake_dist / jnp.maximum(real_dist, 1e-12)}, axis_name)
        metrics = {**metrics, **g_metrics, "g_grad_norm": optax.tree.norm(grads)}
        new_g = state.g.apply_gradients(grads=grads, batch_stats=g_stats)
        g_ema = state.g_ema
        if g_ema is not None:
            t = state.step.astype(jnp.float32)
            decay = jnp.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
            current = {"params": new_g.params, "batch_stats": new_g.batch_stats}
            g_ema = optax.incremental_update(current, g_ema, step_size=1.0 - decay)
        return state.replace(step=state.step + 1, g=new_g, g_ema=g_ema), metrics

    def eval_step(
        self, state: GANState, batch: Batch, key: jax.Array, *, context: Any = None, axis_name: str | None = None
    ) -> Metrics:
        """Sums over valid examples of D's losses and accuracies on the test images and on one generated
        image per test image (noise from the example's index; deterministic given `key`), and of
        neighbour distances for `diversity`."""
        gan = LOSSES[self.loss]
        mask = batch["mask"].astype(jnp.float32)
        real = batch["image"].astype(jnp.float32) / 127.5 - 1.0
        fake, _ = self.generate(state.g.params, state.g.batch_stats, self.noise(key, batch["index"]), train=False)
        real_scores, _ = self.discriminate(state.d.params, state.d.batch_stats, real, train=False)
        fake_scores, _ = self.discriminate(state.d.params, state.d.batch_stats, fake, train=False)
        fake_dist, _ = neighbour_distance(fake, mask)
        real_dist, _ = neighbour_distance(real, mask)
        sums = {
            "count": mask.sum(),
            "d_loss_sum": jnp.sum(gan.d_loss(real_scores, fake_scores) * mask),
            "g_loss_sum": jnp.sum(gan.g_loss(fake_scores) * mask),
            "d_real_accuracy_sum": jnp.sum((real_scores > gan.threshold) * mask),
            "d_fake_accuracy_sum": jnp.sum((fake_scores < gan.threshold) * mask),
            "real_score_sum": jnp.sum(real_scores * mask),
            "fake_score_sum": jnp.sum(fake_scores * mask),
            "fake_distance": fake_dist,
            "real_distance": real_dist,
        }
        return psum(sums, axis_name)

    def summarize_eval(self, totals: Mapping[str, np.ndarray], context: Any = None) -> dict[str, float]:
        """Means of the `*_sum` totals, and `diversity` = generated / real neighbour distance."""
        metrics = super().summarize_eval(totals, context)
        metrics["diversity"] = float(totals["fake_distance"]) / max(float(totals["real_distance"]), 1e-12)
        return metrics

    def sample(
        self, state: GANState, num: int, *, seed: int = 0, batch_size: int = 1000, averaged: bool = True
    ) -> np.ndarray:
        """`num` generated images, float32 [num, H, W, C] in [0, 1] (`jaxdl.tasks.gan_state.sample_images`):
        from the averaged generator where the state keeps one and `averaged`, else from the current one."""
        return sample_images(self.model, state, num, seed=seed, batch_size=batch_size, averaged=averaged)

    def write_artifacts(
        self, state: GANState, epoch: int, run_dir: pathlib.Path, prepared: Prepared, totals: Mapping[str, np.ndarray]
    ) -> None:
        """Writes `samples/epoch_NNN.png` (the same noise every epoch) and `samples/progress.gif` (all epochs so
        far, one frame each)."""
        from jaxdl.viz.animation import save_animation

        images = self.sample(state, self.num_sample_images, seed=self.sample_seed)
        samples = pathlib.Path(run_dir) / "samples"
        save_image_grid(samples / f"epoch_{epoch:03d}.png", images)
        save_animation(samples / "progress.gif", sorted(samples.glob("epoch_*.png")))
